// Repositories belong to real owners (standalone mode, embedded store),
// through the real daemon: a user creates repositories only under their own
// name or a namespace an administrator granted (or, with
// open_top_level_names, one-component names); an upload alone lists nothing
// until the first manifest, while its blobs stay readable by their pusher;
// owners are user ids, so a new user who takes a removed user's name gets
// none of its repositories (and proxyctl users remove says so). Every refused
// attack is checked to change nothing in the database or store.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { hashPassword } from '../plugins/container_gateway/auth/passwords.ts';
import { MIGRATIONS } from '../plugins/container_gateway/db/migrations.ts';
import { request } from './helpers/http.ts';
import { PROXYCTL, run, startProxyd } from './helpers/proxyd.ts';
import { queryGateway } from './helpers/test-database.ts';
import { answer, manifestOf, OCI_MANIFEST, StandaloneGateway } from './helpers/standalone-gateway.ts';

const work = mkdtempSync(join(tmpdir(), 'gw-owners-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const gw = await StandaloneGateway.start(work);
t.teardown(() => gw.stop());
const host = new URL(gw.base).host;

await gw.addUser('alice');
await gw.addUser('bob');

// --- point 8: owners ----------------------------------------------------------

t.test("a bare upload claims no name under another user's namespace or at the top level", async (t) => {
  const bobToken = await gw.tokenOf('bob', 'pull,push', 'alice/claimed', 'claimed', 'bob/own');
  const before = await gw.snapshot();
  for (const name of ['alice/claimed', 'claimed']) {
    for (let i = 0; i < 2; i++) {
      const post = await gw.call('POST', `/v2/${name}/blobs/uploads/`, { token: bobToken });
      t.same(answer(post), { status: 404, code: 'NAME_UNKNOWN', challenge: gw.challenge(`repository:${name}:pull,push`) }, `bob's bare POST to ${name} (attempt ${i + 1})`);
      const mono = await gw.pushBlob(name, bobToken);
      t.equal(mono.res.status, 404, 'nor with content');
    }
  }
  t.same(await gw.snapshot(), before, 'no repository, upload, blob or file was made');
  const admin1 = await gw.admin('GET', '/repositories');
  t.notOk(admin1.json().repositories.some((r: { name: string }) => ['alice/claimed', 'claimed'].includes(r.name)));
  // The name stays alice's to take.
  const aliceClaims = await gw.tokenOf('alice', 'pull,push', 'alice/claimed');
  await gw.pushImage('alice/claimed', aliceClaims, 'v1');
  t.equal((await gw.repositoryRow('alice/claimed'))?.owner, 'alice');
  // And bob's own namespace is his.
  const own = await gw.pushBlob('bob/own', bobToken);
  t.equal(own.res.status, 201, 'bob pushes under bob/');
});

t.test('an upload alone lists nothing; its blobs are readable by their pusher; the first manifest lists it', async (t) => {
  const bobToken = await gw.tokenOf('bob', 'pull,push', 'bob/pending');
  const aliceLook = await gw.tokenOf('alice', 'pull', 'bob/pending');
  const { res, blob } = await gw.pushBlob('bob/pending', bobToken);
  t.equal(res.status, 201);
  t.same(await gw.repositoryRow('bob/pending'), { owner_id: (await gw.repositoryRow('bob/pending'))!.owner_id, pending: 1, owner: 'bob' }, 'stored as pending, owned by bob');

  const catalogToken = (await gw.call('GET', `/v2/token?service=${host}&scope=registry:catalog:*`, { headers: gw.basic('bob') })).json().token as string;
  const listed = async () => ({
    catalog: (await gw.call('GET', '/v2/_catalog?n=1000', { token: catalogToken })).json().repositories.includes('bob/pending'),
    search: (await gw.call('GET', '/v1/search?q=pending', { headers: gw.basic('bob') })).json().results.some((r: { name: string }) => r.name === 'bob/pending'),
    admin: (await gw.admin('GET', '/repositories')).json().repositories.some((r: { name: string }) => r.name === 'bob/pending'),
    proxyctl: (await run([PROXYCTL, '--url', gw.base, 'repos', 'list'])).stdout.includes('bob/pending'),
  });
  t.same(await listed(), { catalog: false, search: false, admin: false, proxyctl: false }, 'not in the catalog, search, the admin API or proxyctl repos list');
  const visibility = await gw.admin('PUT', '/repositories/bob/pending/visibility', { public: true });
  t.equal(visibility.status, 404, 'nor can an administrator publish it yet');

  const own = await gw.call('GET', `/v2/bob/pending/blobs/${blob.digest}`, { token: bobToken });
  t.equal(own.status, 200, 'bob reads his blob back');
  t.equal(own.body, blob.bytes);
  t.equal((await gw.call('HEAD', `/v2/bob/pending/blobs/${blob.digest}`, { token: bobToken })).headers['content-length'], String(blob.size));
  const other = await gw.call('GET', `/v2/bob/pending/blobs/${blob.digest}`, { token: aliceLook });
  t.same(answer(other), { status: 404, code: 'NAME_UNKNOWN', challenge: gw.challenge('repository:bob/pending:pull') }, 'to alice it does not exist');

  const config = await gw.pushBlob('bob/pending', bobToken, '{"os":"linux"}');
  const manifest = manifestOf(config.blob, [blob]);
  t.equal((await gw.call('PUT', '/v2/bob/pending/manifests/v1', { token: bobToken, body: manifest, headers: { 'Content-Type': OCI_MANIFEST } })).status, 201);
  t.equal((await gw.repositoryRow('bob/pending'))?.pending, 0);
  t.same(await listed(), { catalog: true, search: true, admin: true, proxyctl: true }, 'listed everywhere once its first manifest is stored');
});

t.test('a granted namespace: bob creates team/... only once an administrator grants it, and no more once taken back', async (t) => {
  const before = await gw.snapshot();
  const early = await gw.tokenOf('bob', 'pull,push', 'team/app');
  t.equal((await gw.pushBlob('team/app', early)).res.status, 404, 'not before the grant');
  t.same(await gw.snapshot(), before);

  const granted = await run([PROXYCTL, '--url', gw.base, 'users', 'grant', 'bob', 'team']);
  t.same([granted.code, granted.stdout.trim()], [0, "user 'bob' may create repositories under team/"], 'proxyctl users grant bob team');
  const listed = await run([PROXYCTL, '--url', gw.base, 'users', 'namespaces', 'bob', '--json']);
  t.same([listed.code, JSON.parse(listed.stdout)], [0, { user: 'bob', namespaces: ['team'] }], 'proxyctl users namespaces bob --json');
  t.same((await gw.admin('GET', '/users/bob/namespaces')).json(), { user: 'bob', namespaces: ['team'] });
  const stale = (await gw.pushBlob('team/app', early)).res;
  t.equal(stale.status, 401, 'a token issued before the grant granted nothing: it must be widened');
  t.equal(stale.headers['www-authenticate'], `${gw.challenge('repository:team/app:pull,push')},error="insufficient_scope"`);
  const token = await gw.tokenOf('bob', 'pull,push', 'team/app', 'team/sub/tool', 'teams/app');
  await gw.pushImage('team/app', token, 'v1');
  await gw.pushImage('team/sub/tool', token, 'v1');
  t.equal((await gw.repositoryRow('team/app'))?.owner, 'bob');
  t.equal((await gw.pushBlob('teams/app', token)).res.status, 404, 'a namespace is a path prefix, not a string prefix');

  for (const [path, status] of [['/users/nobody/namespaces/team', 404], ['/users/bob/namespaces/Bad_NS', 400], ['/users/bad%20name/namespaces/team', 400]] as const) {
    const res = await gw.admin('PUT', path);
    t.equal(res.status, status, `PUT ${path}`);
    t.type(res.json().error, 'string', 'a JSON error');
  }
  const nobody = await run([PROXYCTL, '--url', gw.base, 'users', 'grant', 'nobody', 'team']);
  t.same([nobody.code, /user 'nobody' not found/.test(nobody.stderr)], [1, true], `proxyctl users grant for an unknown user: exit 1 (${nobody.stderr.trim()})`);
  const revoked = await run([PROXYCTL, '--url', gw.base, 'users', 'revoke', 'bob', 'team']);
  t.same([revoked.code, revoked.stdout.trim()], [0, "user 'bob' may no longer create repositories under team/"], 'proxyctl users revoke bob team');
  t.equal((await run([PROXYCTL, '--url', gw.base, 'users', 'revoke', 'bob', 'team'])).code, 1, 'taken back once: the second revoke exits 1');
  t.same((await gw.admin('GET', '/users/bob/namespaces')).json(), { user: 'bob', namespaces: [] });
  const after = await gw.tokenOf('bob', 'pull,push', 'team/app', 'team/new');
  t.equal((await gw.pushBlob('team/new', after)).res.status, 404, 'no new repository under team/');
  t.equal((await gw.pushBlob('team/app', after)).res.status, 201, 'what bob made there stays his');
});

t.test('owners are users, not names: a new user who takes a removed user\'s name gets none of its repositories', async (t) => {
  await gw.addUser('carol');
  const carolToken = await gw.tokenOf('carol', 'pull,push,delete', 'carol/app', 'carol/public');
  const app = await gw.pushImage('carol/app', carolToken, 'v1');
  await gw.pushImage('carol/public', carolToken, 'v1');
  t.equal((await gw.admin('PUT', '/repositories/carol/public/visibility', { public: true })).status, 200);

  const removed = await run([PROXYCTL, '--url', gw.base, 'users', 'remove', 'carol']);
  t.equal(removed.code, 0, removed.stderr);
  t.match(removed.stdout, /^user 'carol' removed; the repositories it owned now have no owner: carol\/app, carol\/public\n/, 'proxyctl says which repositories lost their owner');
  t.match(removed.stdout, /A user added later as 'carol' does not get them/);
  t.equal((await gw.repositoryRow('carol/app'))?.owner_id, null, 'ownerless in the database');
  t.equal((await gw.call('GET', '/v2/carol/app/manifests/v1', { token: carolToken })).status, 401, "the old carol's token died with her");

  await gw.addUser('carol');
  const newCarol = await gw.tokenOf('carol', 'pull,push,delete', 'carol/app', 'carol/public', 'carol/fresh');
  const before = await gw.snapshot();
  t.same(answer(await gw.call('GET', '/v2/carol/app/manifests/v1', { token: newCarol })), { status: 404, code: 'NAME_UNKNOWN', challenge: gw.challenge('repository:carol/app:pull') }, 'the new carol cannot read the old private one');
  t.same(answer(await gw.call('POST', '/v2/carol/app/blobs/uploads/', { token: newCarol })), { status: 404, code: 'NAME_UNKNOWN', challenge: gw.challenge('repository:carol/app:pull,push') }, 'nor push to it');
  t.equal((await gw.call('DELETE', `/v2/carol/app/manifests/${app.digest}`, { token: newCarol })).status, 404, 'nor delete from it');
  const pub = await gw.call('POST', '/v2/carol/public/blobs/uploads/', { token: newCarol });
  t.equal(pub.status, 401, 'the public one: readable, not writable');
  t.match(pub.headers['www-authenticate'], /error="insufficient_scope"/);
  t.same(await gw.snapshot(), before, 'nothing changed');
  t.equal((await gw.call('GET', '/v2/carol/public/manifests/v1')).status, 200, 'public stays public');
  t.equal((await gw.pushBlob('carol/fresh', newCarol)).res.status, 201, 'her own namespace is open for new repositories');
  const listing = (await gw.admin('GET', '/repositories')).json().repositories as Array<{ name: string; owner?: string }>;
  t.same(listing.filter((r) => r.name.startsWith('carol/')).map((r) => [r.name, r.owner ?? '-']), [['carol/app', '-'], ['carol/public', '-']], 'proxyctl repos list shows them without owner (carol/fresh is pending)');
});

t.test('open_top_level_names: true lets any user create a one-component name, first come, first owned', async (t) => {
  const open = await StandaloneGateway.start(mkdtempSync(join(work, 'open-')), { settings: { open_top_level_names: true } });
  t.teardown(() => open.stop());
  await open.addUser('dave');
  await open.addUser('erin');
  const dave = await open.tokenOf('dave', 'pull,push', 'tool', 'dave/x');
  const erin = await open.tokenOf('erin', 'pull,push', 'tool', 'dave/x');
  const before = await open.snapshot();
  t.equal((await open.pushBlob('dave/x', erin)).res.status, 404, 'user namespaces stay closed to others');
  t.same(await open.snapshot(), before);
  await open.pushImage('tool', dave, 'v1');
  t.equal((await open.repositoryRow('tool'))?.owner, 'dave', 'dave created tool');
  const taken = await open.snapshot();
  t.same(answer((await open.pushBlob('tool', erin)).res), { status: 404, code: 'NAME_UNKNOWN', challenge: open.challenge('repository:tool:pull,push') }, "then it is not erin's");
  t.same(await open.snapshot(), taken, 'nothing changed');
});

t.test('an existing database: owners by name become owners by id; an owner already removed leaves the repository ownerless', async (t) => {
  const dir = mkdtempSync(join(work, 'migrate-'));
  const file = join(dir, 'gw.db');
  // The schema as it was before owners were user ids, with a repository of alice and one of a user removed since.
  const ownership = MIGRATIONS.findIndex((m) => m.includes('owner_id'));
  t.ok(ownership > 0, 'the ownership migration is found');
  const old = new Database(file);
  for (const m of MIGRATIONS.slice(0, ownership)) old.exec(m);
  old.pragma(`user_version = ${ownership}`);
  old.prepare('INSERT INTO users (name, password_hash) VALUES (?, ?)').run('alice', await hashPassword('alice-pw'));
  old.prepare("INSERT INTO repositories (name, auth_required, owner) VALUES ('alice/old', 1, 'alice'), ('gone/old', 1, 'gone'), ('katello/repo', 0, NULL)").run();
  old.close();

  const upgraded = await startProxyd({
    fixtures: false,
    settings: { log_level: 'WARN' },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: file, storage_path: join(dir, 'storage') } },
  });
  t.teardown(() => upgraded.stop());
  const list = await request(`${upgraded.httpUrl}/container_gateway/admin/repositories`);
  t.same(list.json(), { repositories: [{ name: 'alice/old', public: false, owner: 'alice' }, { name: 'gone/old', public: false }, { name: 'katello/repo', public: true }] });
  const byId = await queryGateway(file, 'SELECT r.name, CASE WHEN r.owner_id = u.id THEN 1 ELSE 0 END AS by_id FROM repositories r JOIN users u ON u.name = ? WHERE r.owner_id IS NOT NULL', ['alice']);
  t.same(byId, [{ name: 'alice/old', by_id: 1 }], "alice's repository refers to her user id");
  // The SQLite file itself was migrated (on PostgreSQL: before its rows were copied over at start).
  const db = new Database(file, { readonly: true });
  t.teardown(() => db.close());
  t.notOk((db.prepare('PRAGMA table_info(repositories)').all() as Array<{ name: string }>).some((c) => c.name === 'owner'), 'the owner name column is gone');

  // A user named "gone" added now does not get gone/old.
  const added = await request(`${upgraded.httpUrl}/container_gateway/admin/users`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'gone', password: 'pw' }) });
  t.equal(added.status, 201);
  const token = (await request(`${upgraded.httpUrl}/v2/token?scope=repository:gone/old:pull,push`, { headers: { Authorization: `Basic ${Buffer.from('gone:pw').toString('base64')}` } })).json().token as string;
  t.equal((await request(`${upgraded.httpUrl}/v2/gone/old/tags/list`, { headers: { Authorization: `Bearer ${token}` } })).status, 404, 'the new "gone" cannot read it');
  const aliceToken = (await request(`${upgraded.httpUrl}/v2/token?scope=repository:alice/old:pull`, { headers: { Authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` } })).json().token as string;
  t.equal((await request(`${upgraded.httpUrl}/v2/alice/old/tags/list`, { headers: { Authorization: `Bearer ${aliceToken}` } })).status, 200, 'alice still reads hers');
});
