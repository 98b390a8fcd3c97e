// Katello's management routes exist only in smart-proxy mode (foreman_url set),
// and no management call loses stored content.
//   Standalone: every management route answers the daemon's JSON 404 and the
//   four pushed repositories stay, rows and files, pullable as before.
//   Smart-proxy: a repository_list that omits repositories unlists them: their
//   users and hosts lose them at once (even with a token issued before), the
//   catalog no longer shows them, but their tags, manifests, blob links and
//   files stay; a later list naming them again serves them again; gc reclaims
//   the content of repositories that are still unlisted.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { buildImage, layoutBlobs, layoutManifest, pushImage, type BuiltImage } from './helpers/images.ts';
import { startKatelloDouble } from './helpers/katello-double.ts';
import { startMainServer } from './helpers/main-server.ts';
import { PROXYCTL, run as runProgram, startProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';
import { databaseRows, storeFiles } from './helpers/state.ts';
import { queryGateway } from './helpers/test-database.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
const JSON_BODY = { 'Content-Type': 'application/json' };
const NOT_FOUND = { error: 'Requested url was not found' };
/** The tables that hold stored content (the rest is access). */
const CONTENT_TABLES = ['blobs', 'manifests', 'manifest_children', 'repository_blobs', 'tags'];

const work = mkdtempSync(join(tmpdir(), 'proxyd-mgmt-modes-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const basic = (creds: string) => ({ Authorization: `Basic ${Buffer.from(creds).toString('base64')}` });
const digestOf = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

async function token(base: string, creds: string, repo: string): Promise<string> {
  const r = await request(`${base}/v2/token?service=${new URL(base).host}&scope=repository:${repo}:pull`, { headers: basic(creds) });
  if (r.status !== 200) throw new Error(`login ${creds.split(':')[0]}: ${r.status} ${r.body}`);
  return (r.json() as { token: string }).token;
}

function manifest(base: string, repo: string, bearer = 'unauthenticated'): Promise<Reply> {
  return request(`${base}/v2/${repo}/manifests/v1`, { headers: { Authorization: `Bearer ${bearer}`, Accept: ACCEPT } });
}

/** Every management route, with a body that would change something. */
function managementCalls(repos: string[]): Array<[string, string, unknown?]> {
  return [
    ['PUT', 'repository_list', { repositories: [] }],
    ['PUT', 'repository_list/', { repositories: [] }],
    ['PUT', 'user_repository_mapping', { users: [{ mallory: repos.map((repository) => ({ repository, auth_required: true })) }] }],
    ['PUT', 'update_hosts', { hosts: [{ uuid: 'a-host' }] }],
    ['PUT', 'host_repository_mapping', { hosts: [{ 'a-host': repos.map((repository) => ({ repository, auth_required: true })) }] }],
    ['PUT', 'update_host_repositories', { hosts: [{ 'a-host': repos.map((repository) => ({ repository, auth_required: true })) }] }],
    ['GET', 'users'],
    ['GET', 'users/'],
  ];
}

/** The blobs (config and layers) of an image: what the store keeps as files. */
function blobsOf(image: BuiltImage): string[] {
  const { digest } = layoutManifest(image.layout);
  return layoutBlobs(image.layout).filter((d) => d !== digest);
}

/** Blobs of `image` not stored as files under `storage` (blobs/sha256/<2>/<hex>). */
function missing(image: BuiltImage, storage: string): string[] {
  const stored = new Set(storeFiles(storage).map((f) => f.split(' ')[0]!).filter((f) => f.startsWith('blobs/sha256/')).map((f) => `sha256:${f.split('/').pop()}`));
  return blobsOf(image).filter((d) => !stored.has(d));
}

/** `user|host repository` of every access row. */
async function accessRows(file: string): Promise<string[]> {
  const rows = await queryGateway<{ row: string }>(file, `SELECT u.name || ' ' || r.name AS row FROM repositories_users x JOIN users u ON u.id = x.user_id JOIN repositories r ON r.id = x.repository_id
      UNION ALL SELECT h.uuid || ' ' || r.name AS row FROM hosts_repositories x JOIN hosts h ON h.id = x.host_id JOIN repositories r ON r.id = x.repository_id`);
  return rows.map((r) => r.row);
}

t.test('standalone mode: the management routes answer 404 and change nothing; the pushed repositories stay', async (t) => {
  const db = join(work, 'standalone.db');
  const storage = join(work, 'standalone-storage');
  const p = await startProxyd({ fixtures: false, settings: { log_level: 'INFO' }, plugins: { container_gateway: { enabled: true, sqlite_db_path: db, storage_path: storage } } });
  t.teardown(() => p.stop());
  const added = await request(`${p.httpUrl}/container_gateway/admin/users`, { method: 'POST', headers: JSON_BODY, body: '{"name":"alice","password":"alice-pw"}' });
  t.equal(added.status, 201, 'alice exists');
  const image = await buildImage(join(work, 'images'), { name: 'pushed', files: { '/etc/pushed.txt': 'pushed here\n' } });
  const REPOS = ['alice/one', 'alice/two', 'alice/three', 'alice/four'];
  for (const repo of REPOS) await pushImage(image.ref, `${new URL(p.httpUrl).host}/${repo}:v1`, { creds: 'alice:alice-pw' });
  const before = { rows: await databaseRows(db), files: storeFiles(storage) };
  t.same(missing(image, storage), [], 'the store holds the pushed blobs');

  for (const [method, route, body] of managementCalls(REPOS)) {
    for (const encoding of body === undefined ? ['none'] : ['json', 'form']) {
      const r = await request(`${p.httpUrl}/container_gateway/${route}`, {
        method,
        ...(encoding === 'json' ? { headers: JSON_BODY, body: JSON.stringify(body) } : {}),
        ...(encoding === 'form' ? { headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: route.startsWith('repository_list') ? 'repositories' : 'hosts' } : {}),
      });
      t.equal(r.status, 404, `${method} /container_gateway/${route} (${encoding}) from 127.0.0.1: 404`);
      t.same(r.json(), NOT_FOUND, 'the JSON 404 of unknown routes');
    }
  }
  t.same({ rows: await databaseRows(db), files: storeFiles(storage) }, before, 'every row and every file is as it was');
  const bearer = await token(p.httpUrl, 'alice:alice-pw', 'alice/one');
  for (const repo of REPOS) {
    const tags = await request(`${p.httpUrl}/v2/${repo}/tags/list`, { headers: { Authorization: `Bearer ${await token(p.httpUrl, 'alice:alice-pw', repo)}` } });
    t.same([tags.status, tags.json()], [200, { name: repo, tags: ['v1'] }], `${repo}: still tagged v1`);
  }
  const m = await manifest(p.httpUrl, 'alice/one', bearer);
  t.equal(m.status, 200, 'alice pulls her manifest');
  t.equal(digestOf(m.body), layoutManifest(image.layout).digest, 'the bytes she pushed');
});

// --- smart-proxy mode ----------------------------------------------------------

const KEEP = 'org/prod/keep';
const GONE = 'org/prod/gone';
const SECRET = 'org/prod/secret';
const HOST = '5b0e6a4c-1d2e-4f3a-8b9c-0d1e2f3a4b5c';

t.test('smart-proxy mode: repository_list unlists omitted repositories without losing their content; gc reclaims it', async (t) => {
  const upstream = await startRegistry();
  t.teardown(() => upstream.stop());
  const images = new Map<string, BuiltImage>();
  for (const repo of [KEEP, GONE, SECRET]) {
    const image = await buildImage(join(work, 'images'), { name: repo.split('/').pop()!, files: { '/etc/repo.txt': `${repo}\n` } });
    images.set(repo, image);
    await pushImage(image.ref, `${upstream.host}/${repo}:v1`);
  }
  const katello = await startKatelloDouble({ publicRepositories: [KEEP, GONE], users: { alice: { password: 'alice-pw', repositories: [SECRET] } } });
  t.teardown(() => katello.stop());
  const db = join(work, 'smart.db');
  const storage = join(work, 'smart-storage');
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: katello.url, log_level: 'INFO' },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: db, storage_path: storage, main_registry_url: `${upstream.url}/v2/`, gc_grace_period: 0 } },
  });
  t.teardown(() => p.stop());
  const manage = (route: string, body: unknown) => request(`${p.httpUrl}/container_gateway/${route}`, { method: 'PUT', headers: JSON_BODY, body: JSON.stringify(body) });
  const list = (entries: Array<[string, boolean]>) => manage('repository_list', { repositories: entries.map(([repository, auth_required]) => ({ repository, auth_required })) });
  const ALL: Array<[string, boolean]> = [[KEEP, false], [GONE, false], [SECRET, true]];

  // Katello's sync: content mirrored, then the lists.
  const started = await request(`${p.httpUrl}/container_gateway/sync`, { method: 'POST', headers: JSON_BODY, body: JSON.stringify({ repositories: [KEEP, GONE, SECRET] }) });
  t.equal(started.status, 202, started.body);
  let run: Record<string, unknown> = {};
  for (let i = 0; i < 600 && (run.state ?? 'running') === 'running'; i++) {
    if (i > 0) await new Promise((res) => setTimeout(res, 100));
    run = (await request(`${p.httpUrl}/container_gateway/sync/${started.json().id}`)).json();
  }
  t.equal(run.state, 'succeeded', `sync: ${JSON.stringify(run)}`);
  t.equal((await list(ALL)).status, 200, 'repository_list: all three');
  t.equal((await manage('user_repository_mapping', { users: [{ alice: [{ repository: SECRET, auth_required: true }] }] })).status, 200);
  t.equal((await manage('update_host_repositories', { hosts: [{ [HOST]: [{ repository: SECRET, auth_required: true }] }] })).status, 200);
  t.same((await accessRows(db)).sort(), [`${HOST} ${SECRET}`, `alice ${SECRET}`], 'alice and a content host are mapped to the private repository');
  const aliceToken = await token(p.httpUrl, 'alice:alice-pw', SECRET);
  const digest = (repo: string) => layoutManifest(images.get(repo)!.layout).digest;
  for (const repo of [KEEP, GONE]) t.equal(digestOf((await manifest(p.httpUrl, repo)).body), digest(repo), `${repo}: public, served`);
  const secret = await manifest(p.httpUrl, SECRET, aliceToken);
  t.equal(secret.status, 200, 'alice reads the private repository');
  const content = await databaseRows(db, CONTENT_TABLES);
  const files = storeFiles(storage);

  // Katello omits two repositories.
  const omitted = await list([[KEEP, false]]);
  t.same([omitted.status, omitted.json()], [200, { repositories: 1, unlisted: 2 }], 'repository_list without gone and secret: 2 unlisted');
  t.same(await databaseRows(db, CONTENT_TABLES), content, 'tags, manifests and blob links are all still there');
  t.same(storeFiles(storage), files, 'and every blob file');
  // As an unknown repository: anonymous clients are asked to log in, users are told it does not exist.
  for (const [repo, bearer, who, status, code] of [
    [GONE, 'unauthenticated', 'anonymous', 401, 'UNAUTHORIZED'],
    [SECRET, aliceToken, 'alice (a token issued before)', 404, 'NAME_UNKNOWN'],
  ] as const) {
    const r = await manifest(p.httpUrl, repo, bearer);
    t.equal(r.status, status, `${repo} for ${who}: ${status}`);
    t.match(r.json(), { errors: [{ code }] }, 'as an unknown repository');
  }
  t.same(await accessRows(db), [], "the user's and the host's mappings to it are gone");
  const fresh = await token(p.httpUrl, 'alice:alice-pw', SECRET);
  t.equal((await manifest(p.httpUrl, SECRET, fresh)).status, 404, 'a new login of alice does not bring it back');
  t.same(await accessRows(db), [], 'nor her mapping');
  const catalog = await request(`${p.httpUrl}/v2/_catalog`, { headers: { Authorization: `Bearer ${fresh}` } });
  t.same(catalog.json(), { repositories: [KEEP] }, "alice's catalog: the listed repository only");

  // The other management calls touch no content either.
  for (const [method, route, body] of managementCalls([GONE, SECRET])) {
    if (route.startsWith('repository_list')) continue;
    const r = await request(`${p.httpUrl}/container_gateway/${route}`, { method, ...(body ? { headers: JSON_BODY, body: JSON.stringify(body) } : {}) });
    t.equal(r.status, 200, `${method} ${route}: ${r.body}`);
  }
  t.same(await databaseRows(db, CONTENT_TABLES), content, 'content rows unchanged by user and host mappings');
  t.equal((await manifest(p.httpUrl, SECRET, fresh)).status, 404, 'a mapping to an unlisted repository grants nothing');

  // Katello lists them again: served again, same bytes.
  t.same((await list(ALL)).json(), { repositories: 3, unlisted: 0 }, 'listed again');
  const again = await manifest(p.httpUrl, GONE);
  t.same([again.status, digestOf(again.body)], [200, digest(GONE)], `${GONE}: served again, the same manifest`);
  t.equal((await manage('user_repository_mapping', { users: [{ alice: [{ repository: SECRET, auth_required: true }] }] })).status, 200);
  t.equal((await manifest(p.httpUrl, SECRET, fresh)).status, 200, 'alice reads the private one again once Katello maps her');

  // Unlisted again, then gc: their content goes, the kept repository's stays.
  t.same((await list([[KEEP, false]])).json(), { repositories: 1, unlisted: 2 });
  const gc = await runProgram([PROXYCTL, '--url', p.httpUrl, 'gc']);
  t.equal(gc.code, 0, gc.stderr);
  t.match(gc.stdout, /^\d+ blobs removed, [\d.]+ MB freed\n\d+ abandoned uploads purged, [\d.]+ MB freed\ncontent of unlisted repositories reclaimed: org\/prod\/gone, org\/prod\/secret$/m, `proxyctl gc names the unlisted repositories it reclaimed (${gc.stdout})`);
  t.same(missing(images.get(KEEP)!, storage), [], `every blob of ${KEEP} is still stored`);
  for (const repo of [GONE, SECRET]) {
    const own = blobsOf(images.get(repo)!).filter((d) => !blobsOf(images.get(KEEP)!).includes(d));
    t.ok(own.length > 0, `${repo} has blobs of its own`);
    t.same(missing(images.get(repo)!, storage).sort(), own.sort(), `${repo}: its own blobs are gone from the store`);
  }
  const kept = await manifest(p.httpUrl, KEEP);
  t.same([kept.status, digestOf(kept.body)], [200, digest(KEEP)], `${KEEP} is still served`);
});

t.test('smart-proxy mode: a push through the proxy lists an unlisted repository again for its pusher', async (t) => {
  const REPO = 'acme/web/relist';
  const main = await startMainServer({ users: { pusher: { password: 'pusher-pw', repositories: [REPO], push: true } } });
  t.teardown(() => main.stop());
  const db = join(work, 'push.db');
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: main.foremanUrl, log_level: 'INFO' },
    plugins: { container_gateway: { enabled: true, content_backend: 'local', main_registry_url: main.mainRegistryUrl, sqlite_db_path: db, storage_path: join(work, 'push-storage') } },
  });
  t.teardown(() => p.stop());
  const image = await buildImage(join(work, 'images'), { name: 'relist', files: { '/etc/relist.txt': 'pushed through\n' } });
  const push = () => pushImage(image.ref, `${new URL(p.httpUrl).host}/${REPO}:v1`, { creds: 'pusher:pusher-pw' });
  await push();
  const bearer = await token(p.httpUrl, 'pusher:pusher-pw', REPO);
  t.equal((await manifest(p.httpUrl, REPO, bearer)).status, 200, 'the pusher reads what it pushed');
  const unlist = await request(`${p.httpUrl}/container_gateway/repository_list`, { method: 'PUT', headers: JSON_BODY, body: '{"repositories":[]}' });
  t.same(unlist.json(), { repositories: 0, unlisted: 1 }, 'Katello leaves it out');
  t.equal((await manifest(p.httpUrl, REPO, bearer)).status, 404, 'unlisted: the pusher no longer reads it');
  t.not((await databaseRows(db, ['tags'])).tags?.length ?? 0, 0, 'its tag is still stored');
  await push();
  const again = await manifest(p.httpUrl, REPO, await token(p.httpUrl, 'pusher:pusher-pw', REPO));
  t.same([again.status, digestOf(again.body)], [200, layoutManifest(image.layout).digest], 'pushed again: listed again, the pusher reads it');
});
