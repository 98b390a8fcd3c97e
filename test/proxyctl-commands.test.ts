// The proxyctl commands operators reach for (issue 14), against the real
// daemon in standalone mode with the embedded store: each command's effect as
// a registry user sees it (skopeo, or the registry API as podman calls it),
// its --json, and its exit codes (0 done, 1 refused or not found, 2 daemon
// unreachable, 64 usage). Also `logs --follow` and the completion scripts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { startKatelloDouble } from './helpers/katello-double.ts';
import { buildImage, pushImage, runCommand, skopeo } from './helpers/images.ts';
import { childEnv, freePort, PROXYCTL, ROOT, run, spawnNode, startProxyd } from './helpers/proxyd.ts';

const work = mkdtempSync(join(tmpdir(), 'proxyd-ctl-commands-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

// INFO: the admin routes' audit lines reach the log buffer `proxyctl logs` reads.
const p = await startProxyd({
  fixtures: false,
  settings: { log_level: 'INFO' },
  plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'gw.db'), storage_path: join(work, 'storage'), gc_grace_period: 0 } },
});
t.teardown(() => p.stop());
const host = new URL(p.httpUrl).host;
const ctl = (args: string[], input?: string) => run([PROXYCTL, '--settings', p.settingsFile, ...args], {}, undefined, input);
const get = (path: string, headers: Record<string, string> = {}): Promise<Reply> => request(`${p.httpUrl}${path}`, { headers });
const basic = (user: string, password: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

async function tokenOf(user: string, password: string, scope: string): Promise<Reply> {
  return get(`/v2/token?${new URLSearchParams({ service: host, scope })}`, basic(user, password));
}

/** skopeo inspect as a user: the exit code and stderr say whether the pull is allowed. */
const inspectAs = (creds: string, ref: string) => skopeo(['inspect', '--tls-verify=false', '--creds', creds, `docker://${host}/${ref}`]);

const image = await buildImage(join(work, 'images'), { name: 'ctl', files: { '/etc/ctl.txt': 'proxyctl commands\n' } });

t.test('users add, then users passwd: the old password stops logging in, the new one does', async (t) => {
  for (const user of ['alice', 'bob']) {
    const added = await ctl(['users', 'add', user, '--password-stdin'], `${user}-pw\n`);
    t.equal(added.code, 0, added.stderr);
  }
  const changed = await ctl(['users', 'passwd', 'alice', '--password-stdin', '--json'], 'alice-new\n');
  t.same([changed.code, JSON.parse(changed.stdout)], [0, { user: 'alice', password_changed: true }], changed.stderr);
  t.equal((await tokenOf('alice', 'alice-pw', 'repository:alice/app:pull')).status, 401, 'the old password is refused');
  t.equal((await tokenOf('alice', 'alice-new', 'repository:alice/app:pull')).status, 200, 'the new one logs in');

  const unknown = await ctl(['users', 'passwd', 'nobody', '--password-stdin'], 'x\n');
  t.same([unknown.code, unknown.stderr], [1, "proxyctl: user 'nobody' not found\n"], 'unknown user: exit 1');
  const empty = await ctl(['users', 'passwd', 'alice', '--password-stdin'], '\n');
  t.same([empty.code, empty.stderr], [64, 'proxyctl: the password must not be empty\n'], 'empty password: exit 64');
  t.equal((await tokenOf('alice', 'alice-new', 'repository:alice/app:pull')).status, 200, 'a refused passwd changed nothing');
});

t.test('repos grant / revoke: a granted user pulls a private repository with skopeo, then no longer', async (t) => {
  await pushImage(image.ref, `${host}/alice/app:v1`, { creds: 'alice:alice-new' });
  const before = await inspectAs('bob:bob-pw', 'alice/app:v1');
  t.not(before.code, 0, 'bob cannot pull alice/app (private, not granted)');
  t.match(before.stderr, /name unknown|unauthorized|denied/i, 'as a repository it may not see');

  const granted = await ctl(['repos', 'grant', 'bob', 'alice/app']);
  t.same([granted.code, granted.stdout], [0, "user 'bob' may pull repository 'alice/app'\n"], granted.stderr);
  const pulled = await inspectAs('bob:bob-pw', 'alice/app:v1');
  t.equal(pulled.code, 0, `bob pulls after the grant: ${pulled.stderr}`);
  const listed = await ctl(['users', 'repos', 'bob', '--json']);
  t.same(JSON.parse(listed.stdout), { user: 'bob', repositories: ['alice/app'] }, 'users repos shows the grant');
  const catalog = await get('/v2/_catalog', { Authorization: `Bearer ${(await tokenOf('bob', 'bob-pw', 'registry:catalog:*')).json<{ token: string }>().token}` });
  t.same(catalog.json(), { repositories: ['alice/app'] }, "and bob's catalog lists it");

  const revoked = await ctl(['repos', 'revoke', 'bob', 'alice/app']);
  t.equal(revoked.code, 0, revoked.stderr);
  t.not((await inspectAs('bob:bob-pw', 'alice/app:v1')).code, 0, 'bob cannot pull after the revoke');
  t.equal((await inspectAs('alice:alice-new', 'alice/app:v1')).code, 0, 'the owner still can');

  const again = await ctl(['repos', 'revoke', 'bob', 'alice/app']);
  t.same([again.code, again.stderr], [1, "proxyctl: user 'bob' has no grant on repository 'alice/app'\n"], 'revoking twice: exit 1');
  const noRepo = await ctl(['repos', 'grant', 'bob', 'no/such']);
  t.same([noRepo.code, noRepo.stderr], [1, "proxyctl: repository 'no/such' not found\n"], 'unknown repository: exit 1');
  const noUser = await ctl(['repos', 'grant', 'nobody', 'alice/app']);
  t.same([noUser.code, noUser.stderr], [1, "proxyctl: user 'nobody' not found\n"], 'unknown user: exit 1');
  const bad = await ctl(['repos', 'grant', 'bob', 'Bad Name']);
  t.equal(bad.code, 64, 'a bad repository name: exit 64');
});

t.test('tags list: the tags and the digests a client resolves them to', async (t) => {
  await pushImage(image.ref, `${host}/alice/app:v2`, { creds: 'alice:alice-new' });
  const token = (await tokenOf('alice', 'alice-new', 'repository:alice/app:pull')).json<{ token: string }>().token;
  const digest = (await request(`${p.httpUrl}/v2/alice/app/manifests/v1`, { method: 'HEAD', headers: { Authorization: `Bearer ${token}`, Accept: 'application/vnd.oci.image.manifest.v1+json' } })).headers['docker-content-digest'];
  t.match(digest, /^sha256:[0-9a-f]{64}$/);
  const json = await ctl(['tags', 'list', 'alice/app', '--json']);
  t.same(JSON.parse(json.stdout), { repository: 'alice/app', tags: [{ tag: 'v1', digest }, { tag: 'v2', digest }] }, json.stderr);
  const text = await ctl(['tags', 'list', 'alice/app']);
  t.match(text.stdout, new RegExp(`^TAG +DIGEST\nv1 +${digest}\nv2 +${digest}\n$`));
  const unknown = await ctl(['tags', 'list', 'no/such']);
  t.same([unknown.code, unknown.stderr], [1, "proxyctl: repository 'no/such' not found\n"]);
});

t.test('tokens revoke: a request with the old token gets 401 and a challenge; logging in again works', async (t) => {
  const token = (await tokenOf('alice', 'alice-new', 'repository:alice/app:pull')).json<{ token: string }>().token;
  const auth = { Authorization: `Bearer ${token}` };
  t.equal((await get('/v2/alice/app/tags/list', auth)).status, 200, 'the token works');
  const revoked = await ctl(['tokens', 'revoke', 'alice', '--json']);
  t.equal(revoked.code, 0, revoked.stderr);
  t.match(JSON.parse(revoked.stdout), { user: 'alice', revoked: Number });
  t.ok(JSON.parse(revoked.stdout).revoked >= 1, 'at least the token above');
  const after = await get('/v2/alice/app/tags/list', auth);
  t.equal(after.status, 401, 'the old token is refused');
  t.equal(after.headers['www-authenticate'], `Bearer realm="${p.httpUrl}/v2/token",service="${host}",scope="repository:alice/app:pull"`, 'with the challenge');
  t.equal((await inspectAs('alice:alice-new', 'alice/app:v1')).code, 0, 'a new login pulls again');
  const unknown = await ctl(['tokens', 'revoke', 'nobody']);
  t.same([unknown.code, unknown.stderr], [1, "proxyctl: user 'nobody' not found\n"]);
});

t.test('repos delete: gone from the catalog and the registry, its content reclaimed by proxyctl gc', async (t) => {
  const other = await buildImage(join(work, 'images'), { name: 'other', files: { '/etc/other.txt': 'kept\n' } });
  await pushImage(other.ref, `${host}/alice/kept:v1`, { creds: 'alice:alice-new' });
  const deleted = await ctl(['repos', 'delete', 'alice/app', '--json']);
  t.same([deleted.code, JSON.parse(deleted.stdout)], [0, { repository: 'alice/app', deleted: true }], deleted.stderr);
  const token = (await tokenOf('alice', 'alice-new', 'registry:catalog:*')).json<{ token: string }>().token;
  t.same((await get('/v2/_catalog', { Authorization: `Bearer ${token}` })).json(), { repositories: ['alice/kept'] }, 'the catalog lists only the other');
  const gone = await inspectAs('alice:alice-new', 'alice/app:v1');
  t.not(gone.code, 0, 'pulling it fails');
  t.match(gone.stderr, /manifest unknown|name unknown|not found/i);
  t.notOk((await ctl(['repos', 'list'])).stdout.includes('alice/app\n'), 'repos list no longer shows it');

  const gc = await ctl(['gc', '--json']);
  t.equal(gc.code, 0, gc.stderr);
  t.equal(JSON.parse(gc.stdout).removed, 2, "gc removes its config and layer (the other repository's are kept)");
  t.equal((await inspectAs('alice:alice-new', 'alice/kept:v1')).code, 0, 'the other repository still pulls');
  const verify = await ctl(['verify']);
  t.same([verify.code, verify.stdout], [0, '2 blobs checked, 0 bad\n'], 'the store holds just what is left');

  const again = await ctl(['repos', 'delete', 'alice/app']);
  t.same([again.code, again.stderr], [1, "proxyctl: repository 'alice/app' not found\n"], 'deleting twice: exit 1');
});

t.test('logs: the recent records; --follow prints new ones as they come', async (t) => {
  const once = await ctl(['logs']);
  t.equal(once.code, 0, once.stderr);
  t.match(once.stdout, /^\d{4}-\d\d-\d\dT[\d:.]+Z INFO .*repository 'alice\/app' deleted/m, 'the audit line of repos delete');
  const json = await ctl(['logs', '--json']);
  const records = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { message: string });
  t.ok(records.some((r) => /repository 'alice\/app' deleted/.test(r.message)), 'one JSON record per line');

  const follow = spawnNode([PROXYCTL, '--settings', p.settingsFile, 'logs', '--follow', '--json'], { cwd: ROOT, env: childEnv() });
  t.teardown(() => follow.kill());
  let out = '';
  follow.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  /** Resolves once the output matches (the test's timeout bounds the wait). */
  const seen = async (pattern: RegExp) => {
    while (!pattern.test(out)) await new Promise((resolve) => setTimeout(resolve, 100));
  };
  await seen(/repository 'alice\/app' deleted/);
  const before = out.split('\n').filter((l) => /standalone user 'carol' added/.test(l)).length;
  t.equal(before, 0, 'carol is not there yet');
  t.equal((await ctl(['users', 'add', 'carol', '--password-stdin'], 'carol-pw\n')).code, 0);
  await seen(/standalone user 'carol' added/);
  await new Promise((resolve) => setTimeout(resolve, 2500)); // two more polls: nothing is printed twice
  const lines = out.trim().split('\n');
  t.equal(lines.filter((l) => /standalone user 'carol' added/.test(l)).length, 1, 'the new record, once');
  t.equal(new Set(lines).size, lines.length, 'no record repeated');
  follow.kill();
});

t.test('exit 2 when the daemon is unreachable, with --json the failure as JSON too', async (t) => {
  const port = await freePort();
  for (const args of [['users', 'passwd', 'x', '--password-stdin'], ['repos', 'delete', 'a/b'], ['repos', 'grant', 'x', 'a/b'], ['tags', 'list', 'a/b'], ['tokens', 'revoke', 'x'], ['logs']]) {
    const r = await run([PROXYCTL, '--url', `http://127.0.0.1:${port}`, ...args, '--json'], {}, undefined, 'pw\n');
    t.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.match(JSON.parse(r.stdout), { error: /unreachable/, exit: 2 });
  }
});

t.test('completion: bash and zsh scripts from the command tree', async (t) => {
  const bash = await ctl(['completion', 'bash']);
  t.equal(bash.code, 0, bash.stderr);
  // Complete as bash would, with the script sourced.
  const complete = async (script: string, words: string[]) => {
    const line = `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _proxyctl; echo "\${COMPREPLY[*]}"`;
    return (await runCommand('bash', ['-c', line])).stdout.trim();
  };
  t.equal(await complete(bash.stdout, ['proxyctl', 'repos', '']), 'list set-public set-private grant revoke delete --help');
  t.equal(await complete(bash.stdout, ['proxyctl', '--settings', '/x.yml', 'to']), 'tokens', 'an option value is skipped');
  t.equal(await complete(bash.stdout, ['proxyctl', 'logs', '--']), '--follow --json --help');
  t.equal(await complete(bash.stdout, ['proxyctl', 'users', 'pa']), 'passwd');
  const zsh = await ctl(['completion', 'zsh']);
  t.match(zsh.stdout, /^autoload -U \+X bashcompinit && bashcompinit$/m, 'zsh loads bash completion');
  t.equal(zsh.stdout.replace(/^autoload.*\n/m, '').replace(/zsh/g, 'bash'), bash.stdout, 'and the same function');
  const fish = await ctl(['completion', 'fish']);
  t.same([fish.code, fish.stderr], [64, "proxyctl: no completion for 'fish': bash or zsh\n"]);
});

t.test('--help of the new commands', async (t) => {
  for (const [args, pattern] of [
    [['users', 'passwd', '--help'], /--password-stdin[\s\S]*--json/],
    [['repos', 'delete', '--help'], /proxyctl gc/],
    [['tokens', 'revoke', '--help'], /401/],
    [['tags', 'list', '--help'], /<repo>/],
    [['logs', '--help'], /--follow[\s\S]*Exit codes/],
  ] as const) {
    const r = await ctl([...args]);
    t.equal(r.code, 0);
    t.match(r.stdout, pattern, args.join(' '));
  }
});

t.test('smart-proxy mode: grants and deletions refused (Katello owns them), tokens revoke works', async (t) => {
  const katello = await startKatelloDouble({ publicRepositories: ['acme/prod/app'], users: { dave: { password: 'dave-pw', repositories: ['acme/prod/secret'] } } });
  t.teardown(() => katello.stop());
  const sp = await startProxyd({
    fixtures: false,
    settings: { foreman_url: katello.url, log_level: 'WARN' },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'smart.db'), storage_path: join(work, 'smart-storage') } },
  });
  t.teardown(() => sp.stop());
  const spCtl = (args: string[]) => run([PROXYCTL, '--settings', sp.settingsFile, ...args]);
  const body = JSON.stringify({ repositories: [{ repository: 'acme/prod/app', auth_required: false }, { repository: 'acme/prod/secret', auth_required: true }] });
  const listed = await request(`${sp.httpUrl}/container_gateway/repository_list`, { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body });
  t.equal(listed.status, 200, listed.body);

  for (const args of [['repos', 'grant', 'dave', 'acme/prod/app'], ['repos', 'revoke', 'dave', 'acme/prod/app'], ['repos', 'delete', 'acme/prod/app']]) {
    const r = await spCtl(args);
    t.equal(r.code, 1, `${args.join(' ')}: exit 1`);
    t.match(r.stderr, /is for standalone mode only: with foreman_url, Katello's repository lists and mappings replace it/);
  }
  t.same(JSON.parse((await spCtl(['repos', 'list', '--json'])).stdout).map((r: { name: string }) => r.name), ['acme/prod/app', 'acme/prod/secret'], 'both repositories are still there');

  const login = await request(`${sp.httpUrl}/v2/token?${new URLSearchParams({ service: new URL(sp.httpUrl).host, scope: 'registry:catalog:*' })}`, { headers: basic('dave', 'dave-pw') });
  t.equal(login.status, 200, login.body);
  const auth = { Authorization: `Bearer ${login.json<{ token: string }>().token}` };
  t.equal((await request(`${sp.httpUrl}/v2/_catalog`, { headers: auth })).status, 200, "dave's token works");
  const revoked = await spCtl(['tokens', 'revoke', 'dave']);
  t.match([revoked.code, revoked.stdout], [0, /^[1-9]\d* tokens of user 'dave' revoked\n$/], revoked.stderr);
  const after = await request(`${sp.httpUrl}/v2/_catalog`, { headers: auth });
  t.equal(after.status, 401, 'the token is refused from now on');
  t.match(after.headers['www-authenticate'], /^Bearer realm="/, 'with a challenge');
});

t.test('tags list with the Pulp backend: refused (Pulp keeps the tags), exit 1', async (t) => {
  const pulp = await startProxyd({
    fixtures: false,
    settings: { log_level: 'WARN' },
    plugins: { container_gateway: { enabled: true, content_backend: 'pulp', pulp_endpoint: `http://127.0.0.1:${await freePort()}`, sqlite_db_path: join(work, 'pulp.db') } },
  });
  t.teardown(() => pulp.stop());
  const r = await run([PROXYCTL, '--settings', pulp.settingsFile, 'tags', 'list', 'acme/prod/app']);
  t.same([r.code, r.stderr], [1, 'proxyctl: tags are listed from the embedded store: with content_backend pulp, Pulp keeps them\n']);
});

t.test('logs where the logs module is off: exit 1, saying so', async (t) => {
  const off = await startProxyd({ fixtures: false, settings: { log_level: 'WARN' }, plugins: { logs: { enabled: false } } });
  t.teardown(() => off.stop());
  const r = await run([PROXYCTL, '--settings', off.settingsFile, 'logs']);
  t.same([r.code, r.stderr], [1, `proxyctl: ${off.httpUrl} has no logs module (GET /logs/ answered 404): is it enabled there?\n`]);
});
