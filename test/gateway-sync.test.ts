// proxyctl sync against real registries: a docker-registry without auth as
// the main server's registry (Katello double as foreman_url), filled by
// skopeo with 20 repositories × 5 tags, mirrored into the embedded store and
// pulled back byte for byte (public where Katello's anonymous catalog says
// so, host mappings refreshed); a second sync transfers nothing; tags gone
// upstream are pruned; bad requests start nothing; `proxyctl status` shows the
// last run; the authenticated main server (token auth whose tokens come from
// the Katello double) with an outage the sync rides out; and an unreachable
// one that makes the run fail with its reason.
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, layoutBlobs, layoutManifest, pullImage, pushImage, type BuiltImage } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { startMainServer } from './helpers/main-server.ts';
import { freePort, PROXYCTL, run, startProxyd, type RunningProxyd, lineLogged } from './helpers/proxyd.ts';
import { queryGateway } from './helpers/test-database.ts';
import { startRegistry } from './helpers/registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json';
const anon = { Authorization: 'Bearer unauthenticated' };
const work = mkdtempSync(join(tmpdir(), 'gw-sync-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

const digestOf = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The daemon with the embedded store, syncing from `mainRegistryUrl`. */
async function daemon(tt: Tap, name: string, foremanUrl: string, mainRegistryUrl: string, extra: Record<string, unknown> = {}): Promise<RunningProxyd> {
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl, log_level: 'INFO' },
    plugins: {
      container_gateway: {
        enabled: true,
        sqlite_db_path: join(work, `${name}.db`),
        storage_path: join(work, `${name}-storage`),
        main_registry_url: mainRegistryUrl,
        sync_concurrency: 4,
        sync_retries: 2,
        ...extra,
      },
    },
  });
  tt.teardown(() => p.stop());
  return p;
}

const proxyctl = (p: RunningProxyd, ...args: string[]) => run([PROXYCTL, '--url', p.httpUrl, ...args]);
const jsonLines = (out: string) => out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);

async function waitForRun(p: RunningProxyd, id: number): Promise<Record<string, any>> {
  for (let i = 0; i < 1200; i++) {
    const r = (await request(`${p.httpUrl}/container_gateway/sync/${id}`)).json();
    if (r.state !== 'running') return r;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`sync #${id} did not end`);
}

/** Katello's repository_list: who may pull what here (all public). */
async function listRepositories(tt: Tap, p: RunningProxyd, names: string[]): Promise<void> {
  const put = await request(`${p.httpUrl}/container_gateway/repository_list`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ repositories: names.map((repository) => ({ repository, auth_required: false })) }),
  });
  tt.equal(put.status, 200, 'repository_list accepted');
}

// ---------------------------------------------------------------------------
// The main server without auth: 20 repositories × 5 tags.

const REPOS = Array.from({ length: 20 }, (_, i) => `org/prod/app${String(i).padStart(2, '0')}`);
const TAGS = ['v1', 'v2', 'v3', 'v4', 'v5'];
const upstream = await startRegistry();
t.teardown(() => upstream.stop());
// v1-v4: four images every repository shares (deduplicated by digest); v5: one of the repository's own.
const shared: BuiltImage[] = [];
for (const tag of TAGS.slice(0, 4)) shared.push(await buildImage(join(work, 'images'), { name: 'shared', tag, files: { '/etc/shared.txt': `shared ${tag}\n` }, layers: 2 }));
const own = new Map<string, BuiltImage>();
for (const [i, repo] of REPOS.entries()) own.set(repo, await buildImage(join(work, 'images'), { name: 'own', tag: `r${i}`, files: { '/etc/own.txt': `${repo}\n` }, layers: 2 }));
await pool(REPOS.flatMap((repo) => TAGS.map((tag, i) => ({ repo, tag, image: i < 4 ? shared[i]! : own.get(repo)! }))), 4, ({ repo, tag, image }) =>
  pushImage(image.ref, `${upstream.host}/${repo}:${tag}`, i0(repo, tag) ? { format: 'v2s2' } : {}),
);
/** A few tags are Docker v2s2, the rest OCI. */
function i0(repo: string, tag: string): boolean {
  return repo.endsWith('07') && tag === 'v5';
}

const HOST = '7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f';
// app19 is private at the main server, readable by one content host.
const katello = new KatelloDouble({ publicRepositories: REPOS.slice(0, 19), hosts: { [HOST]: ['org/prod/app19'] } });
const foremanUrl = await katello.start();
t.teardown(() => katello.stop());

t.test('20 repositories × 5 tags: mirrored, pullable byte for byte; a second sync transfers 0 blobs; pruning; status', async (t) => {
  const p = await daemon(t, 'main', foremanUrl, `${upstream.url}/v2/`);
  const hosts = await request(`${p.httpUrl}/container_gateway/update_hosts`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ hosts: [{ uuid: HOST }] }) });
  t.equal(hosts.status, 200, 'a content host known here');
  const started = await request(`${p.httpUrl}/container_gateway/sync`, { method: 'POST' });
  t.equal(started.status, 202, started.body);
  const { id } = started.json();
  t.match(started.json(), { id: Number, state: 'running' });
  const second = await request(`${p.httpUrl}/container_gateway/sync`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  t.equal(second.status, 409, 'one run at a time');
  t.match(second.json(), { error: /running/, id });
  const first = await waitForRun(p, id);
  t.equal(first.state, 'succeeded', first.error);
  t.same(first.progress.repositories, { done: 20, total: 20 });
  t.same(first.progress.tags, { done: 100, total: 100 });
  const uniqueBlobs = 4 * 3 + 20 * 3; // config + 2 layers per image
  t.equal(first.progress.blobs.transferred, uniqueBlobs, 'each blob downloaded once, however many repositories use it');
  const stored = readdirSync(join(work, 'main-storage', 'blobs', 'sha256'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  t.equal(stored.length, uniqueBlobs, 'the store holds each blob once');
  t.equal(first.progress.bytes, stored.reduce((sum, e) => sum + statSync(join(e.parentPath, e.name)).size, 0), 'bytes: exactly what the store holds');
  t.ok(first.finished_at && first.started_at);

  // Access as Katello has it: public where its anonymous catalog says so, host mappings fetched again.
  t.equal((await request(`${p.httpUrl}/v2/org/prod/app19/manifests/v1`, { headers: { ...anon, Accept: ACCEPT } })).status, 401, 'private at the main server: private here (no credentials: 401)');
  const mapped = await queryGateway<{ name: string }>(join(work, 'main.db'), 'SELECT r.name FROM hosts_repositories hr JOIN hosts h ON h.id = hr.host_id JOIN repositories r ON r.id = hr.repository_id WHERE h.uuid = ?', [HOST]);
  t.same(mapped.map((r) => r.name), ['org/prod/app19'], "the host's mapping");
  // Pullable from the proxy, byte for byte.
  const gw = new URL(p.httpUrl).host;
  for (const [repo, tag] of [['org/prod/app00', 'v1'], ['org/prod/app07', 'v5'], ['org/prod/app13', 'v3'], ['org/prod/app18', 'v5']] as const) {
    const want = await request(`${upstream.url}/v2/${repo}/manifests/${tag}`, { headers: { Accept: ACCEPT } });
    const got = await request(`${p.httpUrl}/v2/${repo}/manifests/${tag}`, { headers: { ...anon, Accept: ACCEPT } });
    t.equal(got.status, 200, `${repo}:${tag} is served`);
    t.equal(got.body, want.body, `${repo}:${tag}: the manifest's exact bytes`);
    t.equal(got.headers['docker-content-digest'], want.headers['docker-content-digest']);
    t.equal(got.headers['content-type'], want.headers['content-type']);
    for (const d of [JSON.parse(want.body).config.digest as string, ...JSON.parse(want.body).layers.map((l: { digest: string }) => l.digest)]) {
      const blob = Buffer.from(await (await fetch(`${p.httpUrl}/v2/${repo}/blobs/${d}`, { headers: anon })).arrayBuffer());
      t.equal(digestOf(blob), d, `${repo}:${tag}: blob ${d.slice(0, 19)} is intact`);
    }
  }
  const layout = join(work, 'pulled');
  await pullImage(`${gw}/org/prod/app11:v5`, `oci:${layout}:v5`);
  const pulled = layoutManifest(layout, 'v5');
  t.equal(pulled.digest, digestOf((await request(`${upstream.url}/v2/org/prod/app11/manifests/v5`, { headers: { Accept: ACCEPT } })).body), 'skopeo pulls the same image from the proxy');
  const built = layoutBlobs(own.get('org/prod/app11')!.layout);
  t.ok(layoutBlobs(layout).every((d) => built.includes(d)), 'every blob pulled is one skopeo pushed');

  const again = await proxyctl(p, 'sync', '--wait', '--json');
  t.equal(again.code, 0, again.stderr);
  const lines = jsonLines(again.stdout);
  const last = lines[lines.length - 1]!;
  t.match(last, { state: 'succeeded', final: true, progress: { repositories: { done: 20, total: 20 }, tags: { done: 100, total: 100 } } });
  t.equal(last.progress.blobs.transferred, 0, 'the second sync transfers 0 blobs');
  t.equal(last.progress.bytes, 0);

  // A tag gone upstream is removed here (and REPO arguments limit the run).
  const v5 = await request(`${upstream.url}/v2/org/prod/app03/manifests/v5`, { method: 'HEAD', headers: { Accept: ACCEPT } });
  t.equal((await request(`${upstream.url}/v2/org/prod/app03/manifests/${v5.headers['docker-content-digest']}`, { method: 'DELETE' })).status, 202);
  const pruned = await proxyctl(p, 'sync', 'org/prod/app03', '--wait');
  t.equal(pruned.code, 0, pruned.stderr);
  t.match(pruned.stdout, /sync #\d+ succeeded: 1\/1 repositories/);
  t.equal((await request(`${p.httpUrl}/v2/org/prod/app03/manifests/v5`, { headers: { ...anon, Accept: ACCEPT } })).status, 404, 'the tag is gone here too');
  t.equal((await request(`${p.httpUrl}/v2/org/prod/app03/manifests/v4`, { headers: { ...anon, Accept: ACCEPT } })).status, 200, 'the others stay');
  t.same((await request(`${p.httpUrl}/v2/org/prod/app03/tags/list`, { headers: anon })).json().tags, ['v1', 'v2', 'v3', 'v4']);

  // proxyctl status shows the last run.
  const status = await proxyctl(p, 'status');
  t.equal(status.code, 0, status.stderr);
  t.match(status.stdout, /container_gateway.*\n\s+last sync: #\d+ succeeded at \S+: 1\/1 repositories/);
  const statusJson = JSON.parse((await proxyctl(p, 'status', '--json')).stdout);
  t.match(statusJson.plugins.find((x: { name: string }) => x.name === 'container_gateway'), { details: { last_sync: { state: 'succeeded', repositories: ['org/prod/app03'] } } });

  // Without --wait: the run id, exit 0.
  const detached = await proxyctl(p, 'sync', 'org/prod/app04');
  t.equal(detached.code, 0, detached.stderr);
  t.match(detached.stdout, /^sync #\d+ started/);
  await waitForRun(p, Number(/#(\d+)/.exec(detached.stdout)![1]));
});

t.test('bad requests start nothing: 400 JSON; proxyctl usage errors exit 64', async (t) => {
  const p = await daemon(t, 'bad', foremanUrl, `${upstream.url}/v2/`);
  const post = (body: string, type = 'application/json') => request(`${p.httpUrl}/container_gateway/sync`, { method: 'POST', headers: { 'content-type': type }, body });
  for (const [body, type, why] of [
    ['{"repositories": [', 'application/json', /not valid JSON/],
    ['repositories=org/app', 'application/x-www-form-urlencoded', /Content-Type/],
    ['{"repositories": "org/prod/app00"}', 'application/json', /non-empty array/],
    ['{"repositories": []}', 'application/json', /non-empty array/],
    ['{"repositories": [42]}', 'application/json', /invalid repository name/],
    ['{"repositories": ["Org/Bad Name"]}', 'application/json', /invalid repository name/],
    ['{"repos": ["org/prod/app00"]}', 'application/json', /unknown key/],
    ['[]', 'application/json', /JSON object/],
  ] as const) {
    const r = await post(body, type);
    t.equal(r.status, 400, `${body} → 400`);
    t.match(r.headers['content-type'], /application\/json/);
    t.match(r.json(), { error: why });
  }
  const none = await request(`${p.httpUrl}/container_gateway/sync`);
  t.equal(none.status, 404, 'no run was started');
  t.match(none.json(), { error: /no sync/ });
  t.equal((await request(`${p.httpUrl}/container_gateway/sync/abc`)).status, 400);
  t.equal((await request(`${p.httpUrl}/container_gateway/sync/99`)).status, 404);
  const usage = await proxyctl(p, 'sync', 'Bad Name');
  t.equal(usage.code, 64, 'an invalid repository name is a usage error');
  t.match(usage.stderr, /invalid repository name/);
  const help = await proxyctl(p, 'sync', '--help');
  t.equal(help.code, 0);
  t.match(help.stdout, /--wait[\s\S]*--json[\s\S]*Exit codes/);
  t.equal((await request(`${p.httpUrl}/container_gateway/sync`)).status, 404, 'still nothing started');
});

t.test('pulp backend or standalone: 409 with the reason', async (t) => {
  const standalone = await startProxyd({ fixtures: false, plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'standalone.db'), storage_path: join(work, 'standalone') } } });
  t.teardown(() => standalone.stop());
  const r = await request(`${standalone.httpUrl}/container_gateway/sync`, { method: 'POST' });
  t.equal(r.status, 409);
  t.match(r.json(), { error: /foreman_url/ });
  const cli = await proxyctl(standalone, 'sync', '--wait');
  t.equal(cli.code, 1);
  t.match(cli.stderr, /foreman_url is unset/);
});

t.test('main server unreachable: retries with backoff, says so, then fails with exit 1 and the reason', async (t) => {
  const dead = `http://127.0.0.1:${await freePort()}/v2/`;
  const p = await daemon(t, 'dead', foremanUrl, dead, { sync_retries: 2 });
  const r = await proxyctl(p, 'sync', '--wait', '--json');
  t.equal(r.code, 1, r.stderr);
  const lines = jsonLines(r.stdout);
  t.ok(lines.some((l) => /main server unreachable .*retrying in 1 s \(attempt 1\/2\)/.test(l.retrying?.message ?? '')), 'the first retry is reported');
  t.ok(lines.some((l) => /retrying in 2 s \(attempt 2\/2\)/.test(l.retrying?.message ?? '')), 'then the second, after a longer wait');
  t.match(lines[lines.length - 1], { state: 'failed', final: true, error: /unreachable after 3 attempts/ });
  t.match(r.stderr, /sync #\d+ failed: main server unreachable after 3 attempts: .*ECONNREFUSED/);
  t.match((await proxyctl(p, 'status')).stdout, /last sync: #\d+ failed at \S+: main server unreachable/);
  t.ok(await lineLogged(p, /retrying in/), 'the daemon log says so too');
});

// ---------------------------------------------------------------------------
// The authenticated main server: the proxy's identity gets tokens from the Katello double.

t.test('authenticated main server: the token dance with sync credentials; an outage is ridden out', async (t) => {
  const names = ['acme/web/frontend', 'acme/web/backend', 'acme/db/postgres'];
  const ms = await startMainServer({
    users: {
      capsule: { password: 'capsule-pw', repositories: names, catalog: true },
      pusher: { password: 'pusher-pw', repositories: [], push: true },
    },
  });
  t.teardown(() => ms.stop());
  for (const [i, name] of names.entries()) await pushImage((i === 2 ? own.get(REPOS[0]!)! : shared[i]!).ref, `${ms.registry.host}/${name}:latest`, { creds: 'pusher:pusher-pw' });

  // Anonymous: the registry refuses the catalog, the run fails and says why.
  const anonymous = await daemon(t, 'anon', ms.foremanUrl, ms.mainRegistryUrl);
  const refused = await proxyctl(anonymous, 'sync', '--wait');
  t.equal(refused.code, 1);
  t.match(refused.stderr, /failed: .*(requires credentials|401)/);

  const p = await daemon(t, 'auth', ms.foremanUrl, ms.mainRegistryUrl, { sync_username: 'capsule', sync_password: 'capsule-pw', sync_retries: 5 });
  const r = await proxyctl(p, 'sync', '--wait', '--json');
  t.equal(r.code, 0, r.stderr);
  const last = jsonLines(r.stdout).pop()!;
  t.match(last, { state: 'succeeded', progress: { repositories: { done: 3, total: 3 }, tags: { done: 3, total: 3 } } }, 'the catalog, read with the sync identity');
  const tokenRequests = ms.katello.requestsTo('/v2/token').filter((q) => q.query.account === 'capsule');
  t.ok(tokenRequests.some((q) => q.query.scope === 'registry:catalog:*' && q.query.account === 'capsule' && /^Basic /.test(String(q.headers.authorization))), 'catalog token with the sync credentials');
  t.ok(tokenRequests.some((q) => q.query.scope === 'repository:acme/web/frontend:pull'), 'a pull token per repository');
  const perScope = new Map<string, number>();
  for (const q of tokenRequests) perScope.set(q.query.scope ?? '', (perScope.get(q.query.scope ?? '') ?? 0) + 1);
  t.ok([...perScope.values()].every((n) => n === 1), 'tokens are reused until they expire');
  await listRepositories(t, p, names);
  const want = await request(`${ms.registry.url}/v2/acme/web/backend/manifests/latest`, { headers: { Accept: ACCEPT, Authorization: `Bearer ${await pullToken(ms.foremanUrl, 'acme/web/backend')}` } });
  const got = await request(`${p.httpUrl}/v2/acme/web/backend/manifests/latest`, { headers: { ...anon, Accept: ACCEPT } });
  t.equal(got.status, 200);
  t.equal(got.body, want.body, 'byte for byte');

  // Outage: the registry goes away; the run retries and says so, and completes once it is back.
  await ms.stopRegistry();
  const startedOutage = await request(`${p.httpUrl}/container_gateway/sync`, { method: 'POST' });
  t.equal(startedOutage.status, 202);
  let retrying: Record<string, any> | undefined;
  for (let i = 0; i < 100 && !retrying; i++) {
    const cur = (await request(`${p.httpUrl}/container_gateway/sync`)).json();
    if (cur.retrying) retrying = cur;
    else await new Promise((res) => setTimeout(res, 100));
  }
  t.match(retrying, { state: 'running', retrying: { attempt: Number, retries: 5, message: /main server unreachable .*retrying in \d+ s \(attempt \d\/5\)/ } });
  await ms.startRegistry();
  const done = await waitForRun(p, startedOutage.json().id);
  t.equal(done.state, 'succeeded', done.error);
  t.notOk(done.retrying, 'no retry pending at the end');
  t.equal(done.progress.blobs.transferred, 0, 'nothing new to download');
});

async function pullToken(foreman: string, name: string): Promise<string> {
  const r = await request(`${foreman}v2/token?service=test-registry&scope=repository:${name}:pull&account=pusher`, { headers: { Authorization: `Basic ${Buffer.from('pusher:pusher-pw').toString('base64')}` } });
  return r.json().token as string;
}
