// The proxy in front of Katello itself (the Katello double, no docker-registry):
// - issue 10 point 7: with foreman_url https://f/foreman, pushes, logins,
//   search, sync and the capsule-sync trigger all go under /foreman;
// - issue 10 point 8: Katello's answers to pushes (400 NAME_INVALID, 409,
//   404 NAME_UNKNOWN, 404 DENIED, 401), its opaque tokens reused across
//   logins, revoked users, reach the client through the proxy, and change
//   nothing here;
// - issue 9 point 5: DELETEs, which Katello does not implement, reach the
//   client as Katello answers them, and delete nothing here.
import http from 'node:http';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { buildImage, layoutManifest, pushImage, sha256 } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { NAME_SCHEMA_MESSAGE } from './helpers/katello-push.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';

const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
const work = mkdtempSync(join(tmpdir(), 'gw-katello-main-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const storage = join(work, 'storage');
const dbPath = join(work, 'gw.db');

let katello: KatelloDouble;
let proxy: RunningProxyd;
let foremanUrl: string;

t.before(async () => {
  katello = new KatelloDouble({
    basePath: '/foreman',
    users: {
      pusher: { password: 'pusher-pw', repositories: ['acme/web/app'], push: true },
      reader: { password: 'reader-pw', repositories: ['acme/web/app'] },
      leaver: { password: 'leaver-pw', repositories: [], push: true },
      capsule: { password: 'capsule-pw', repositories: ['acme/web/app'], catalog: true },
    },
    push: { products: ['acme/web', 'id/1/2'], taken: ['acme/web/synced'] },
  });
  await katello.start();
  // As an admin writes it: a sub-URI, no trailing slash.
  foremanUrl = `${katello.origin}/foreman`;
  proxy = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl, log_level: 'INFO' },
    plugins: {
      container_gateway: {
        enabled: true,
        content_backend: 'local',
        sqlite_db_path: dbPath,
        storage_path: storage,
        sync_username: 'capsule',
        sync_password: 'capsule-pw',
        sync_retries: 0,
      },
    },
  });
});
t.teardown(async () => {
  await proxy?.stop();
  await katello?.stop();
});

const basic = (creds: string) => `Basic ${Buffer.from(creds).toString('base64')}`;

async function login(creds: string, scope: string, p = proxy): Promise<Reply> {
  return request(`${p.httpUrl}/v2/token?account=${creds.split(':')[0]}&scope=${encodeURIComponent(scope)}`, { headers: { Authorization: basic(creds) } });
}

async function bearer(creds: string, scope: string, p = proxy): Promise<Record<string, string>> {
  const res = await login(creds, scope, p);
  if (res.status !== 200) throw new Error(`login ${creds.split(':')[0]}: ${res.status} ${res.body}`);
  return { Authorization: `Bearer ${res.json().token as string}` };
}

/** The proxy's content: blob files and the rows about content and tags. */
function snapshot(): string {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else files.push(join(dir, e.name).slice(storage.length));
    }
  };
  walk(storage);
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const rows = (sql: string) => db.prepare(sql).all();
    return JSON.stringify({
      files: files.sort(),
      repositories: rows('SELECT name FROM repositories ORDER BY name'),
      links: rows('SELECT repository_id, digest FROM repository_blobs ORDER BY 1, 2'),
      manifests: rows('SELECT repository_id, digest FROM manifests ORDER BY 1, 2'),
      tags: rows('SELECT repository_id, name, digest FROM tags ORDER BY 1, 2'),
    });
  } finally {
    db.close();
  }
}

/** A GET whose body is kept as bytes. */
function bytes(url: string, headers: Record<string, string>): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

let pushedDigest = '';

t.test('foreman_url with a path: pushes, logins, search, sync and the capsule-sync trigger all go under it', async (t) => {
  const img = await buildImage(join(work, 'src'), { name: 'app', files: { '/etc/app.txt': 'pushed to Katello\n' }, layers: 2 });
  pushedDigest = layoutManifest(img.layout).digest;
  await pushImage(img.ref, `${new URL(proxy.httpUrl).host}/acme/web/app:v1`, { creds: 'pusher:pusher-pw' });
  t.equal(katello.pushed.tags.get('acme/web/app:v1'), pushedDigest, 'the push reached Katello under /foreman');
  const read = await bearer('reader:reader-pw', 'repository:acme/web/app:pull');
  const served = await request(`${proxy.httpUrl}/v2/acme/web/app/manifests/v1`, { headers: { ...read, Accept: ACCEPT } });
  t.equal(served.headers['docker-content-digest'], pushedDigest, 'and the proxy serves it');

  const search = await request(`${proxy.httpUrl}/v1/search?q=web`, { headers: { Authorization: basic('reader:reader-pw') } });
  t.same(search.json().results.map((r: { name: string }) => r.name), ['acme/web/app'], 'search, with the catalog from Katello');

  const started = await request(`${proxy.httpUrl}/container_gateway/sync`, { method: 'POST' });
  t.equal(started.status, 202, `sync started: ${started.body}`);
  let run: Record<string, any> = {};
  for (let i = 0; i < 600 && run.state !== 'succeeded' && run.state !== 'failed'; i++) {
    run = (await request(`${proxy.httpUrl}/container_gateway/sync/${started.json().id}`)).json();
    if (run.state === 'running') await new Promise((r) => setTimeout(r, 100));
  }
  t.match(run, { state: 'succeeded', progress: { repositories: { done: 1, total: 1 }, tags: { done: 1, total: 1 } } }, 'the sync read the catalog and the tag from Katello');

  // The capsule-sync trigger: a pulp-backend proxy with the same foreman_url.
  const pulpProxy = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl },
    plugins: {
      container_gateway: {
        enabled: true,
        pulp_endpoint: 'http://127.0.0.1:9',
        sqlite_db_path: join(work, 'pulp.db'),
        push_sync_trigger: 'capsule_sync',
        capsule_id: 7,
        sync_username: 'capsule',
        sync_password: 'capsule-pw',
      },
    },
  });
  t.teardown(() => pulpProxy.stop());
  const push = await bearer('pusher:pusher-pw', 'repository:acme/web/app:pull,push', pulpProxy);
  const manifest = katello.pushed.manifests.get(`acme/web/app@${pushedDigest}`)!;
  const put = await request(`${pulpProxy.httpUrl}/v2/acme/web/app/manifests/v2`, { method: 'PUT', headers: { ...push, 'Content-Type': manifest.mediaType }, body: manifest.body.toString('utf8') });
  t.equal(put.status, 201, 'a push through the pulp-backend proxy');
  const syncs = () => katello.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/content/sync'));
  for (let i = 0; i < 100 && syncs().length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  t.same(syncs().map((r) => r.path), ['/foreman/katello/api/capsules/7/content/sync'], 'one capsule sync requested, under /foreman');

  const paths = katello.requests.map((r) => `${r.method} ${r.path}`);
  t.same(paths.filter((p) => !p.split(' ')[1]!.startsWith('/foreman/')), [], 'no request outside /foreman');
  for (const [what, re] of [
    ['logins', /^GET \/foreman\/v2\/token$/],
    ['catalogs', /^GET \/foreman\/v2\/_catalog$/],
    ['pushes', /^(POST|PATCH|PUT) \/foreman\/v2\/acme\/web\/app\/(blobs\/uploads|manifests)\//],
    ['sync reads', /^GET \/foreman\/v2\/acme\/web\/app\/tags\/list$/],
  ] as const) t.ok(paths.some((p) => re.test(p)), `${what} went to /foreman/v2/`);
});

t.test("Katello's refusals of push names reach the client through the proxy, and change nothing here", async (t) => {
  const before = snapshot();
  const pushedBefore = katello.pushed.manifests.size;
  const cases = [
    ['acme/app', 400, 'NAME_INVALID', 'two components'],
    ['acme/web/app/extra', 400, 'NAME_INVALID', 'four components'],
    ['id/01/2/app', 400, 'NAME_INVALID', 'an id with a leading zero'],
    ['id/1/2', 400, 'NAME_INVALID', 'id form without a name'],
    ['acme/web/synced', 409, 'NAME_INVALID', 'a name taken by a synced repository'],
    ['other/prod/app', 404, 'NAME_UNKNOWN', 'an unknown organisation'],
  ] as const;
  for (const [name, status, code, what] of cases) {
    const auth = await bearer('pusher:pusher-pw', `repository:${name}:pull,push`);
    for (const attempt of [1, 2]) {
      const post = await request(`${proxy.httpUrl}/v2/${name}/blobs/uploads/`, { method: 'POST', headers: auth });
      t.equal(post.status, status, `${what} (${name}), attempt ${attempt}: ${status}`);
      t.equal(post.json().errors[0].code, code, `${code}, in the OCI shape`);
      if (status === 400) t.equal(post.json().errors[0].message, NAME_SCHEMA_MESSAGE, "Katello's message");
      const put = await request(`${proxy.httpUrl}/v2/${name}/manifests/v1`, { method: 'PUT', headers: { ...auth, 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body: '{"schemaVersion":2}' });
      t.equal(put.status, status, `manifest PUT to ${name}: ${status} too`);
    }
  }
  const reader = await bearer('reader:reader-pw', 'repository:acme/web/other:pull,push');
  const denied = await request(`${proxy.httpUrl}/v2/acme/web/other/blobs/uploads/`, { method: 'POST', headers: reader });
  t.equal(denied.status, 404, 'a user without push rights: 404');
  t.equal(denied.json().errors[0].code, 'DENIED');
  const anonymous = await request(`${proxy.httpUrl}/v2/acme/web/app/blobs/uploads/`, { method: 'POST' });
  t.equal(anonymous.status, 401, 'no credentials: 401');
  t.match(anonymous.headers['www-authenticate'], new RegExp(`realm="${proxy.httpUrl}/v2/token"`), 'the challenge sends the client to the proxy');
  t.equal(snapshot(), before, 'nothing stored on the proxy');
  t.equal(katello.pushed.manifests.size, pushedBefore, 'nothing stored at Katello');
});

t.test('opaque tokens reused across logins; a revoked user is refused', async (t) => {
  const first = await login('leaver:leaver-pw', 'repository:acme/web/app:pull,push');
  const second = await login('leaver:leaver-pw', 'repository:acme/web/app:pull');
  t.equal(first.status, 200);
  t.equal(second.json().token, first.json().token, 'the same token for the second login');
  t.notMatch(first.json().token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'not a JWT');
  t.ok(second.json().expires_in >= first.json().expires_in, 'its lifetime grows with reuse');
  const auth = { Authorization: `Bearer ${first.json().token as string}` };
  t.equal((await request(`${proxy.httpUrl}/v2/acme/web/app/blobs/uploads/`, { method: 'POST', headers: auth })).status, 202, 'it pushes');

  katello.revoke('leaver');
  const before = snapshot();
  for (const attempt of [1, 2]) {
    t.equal((await login('leaver:leaver-pw', 'repository:acme/web/app:pull,push')).status, 401, `login of a revoked user, attempt ${attempt}: 401`);
    const push = await request(`${proxy.httpUrl}/v2/acme/web/app/blobs/uploads/`, { method: 'POST', headers: auth });
    t.equal(push.status, 401, `its old token cannot push, attempt ${attempt}`);
  }
  t.equal(snapshot(), before, 'nothing changed on the proxy');
});

t.test('DELETEs, which Katello does not implement, reach the client as Katello answers them; nothing is deleted here', async (t) => {
  t.ok(pushedDigest, 'the image of the first test');
  const auth = await bearer('pusher:pusher-pw', 'repository:acme/web/app:pull,push');
  const read = await bearer('reader:reader-pw', 'repository:acme/web/app:pull');
  const manifest = await request(`${proxy.httpUrl}/v2/acme/web/app/manifests/${pushedDigest}`, { headers: { ...read, Accept: ACCEPT } });
  const layer = manifest.json().layers[0].digest as string;
  const before = snapshot();
  for (const path of ['manifests/v1', `manifests/${pushedDigest}`, `blobs/${layer}`]) {
    for (const attempt of [1, 2]) {
      const res = await request(`${proxy.httpUrl}/v2/acme/web/app/${path}`, { method: 'DELETE', headers: auth });
      t.equal(res.status, 404, `DELETE ${path.slice(0, 30)}, attempt ${attempt}: Katello's 404`);
      t.same(res.json(), { error: { message: `Route not found: DELETE /foreman/v2/acme/web/app/${path}` } }, "with Katello's body, unchanged");
    }
  }
  t.equal(snapshot(), before, 'nothing deleted on the proxy');
  t.equal((await request(`${proxy.httpUrl}/v2/acme/web/app/manifests/v1`, { headers: { ...read, Accept: ACCEPT } })).headers['docker-content-digest'], pushedDigest, 'the tag is still served');
  const blob = await bytes(`${proxy.httpUrl}/v2/acme/web/app/blobs/${layer}`, read);
  t.equal(blob.status, 200, 'the blob too');
  t.equal(sha256(blob.body), layer, 'byte for byte');
});

t.test('main_registry_url given as an origin: pushes and sync both use its /v2/', async (t) => {
  const registry = new KatelloDouble({
    users: { pusher: { password: 'pusher-pw', repositories: ['acme/web/app'], push: true }, capsule: { password: 'capsule-pw', repositories: ['acme/web/app'], catalog: true } },
  });
  await registry.start();
  t.teardown(() => registry.stop());
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl },
    plugins: {
      container_gateway: {
        enabled: true,
        content_backend: 'local',
        main_registry_url: registry.origin,
        sqlite_db_path: join(work, 'origin.db'),
        storage_path: join(work, 'origin-storage'),
        sync_username: 'capsule',
        sync_password: 'capsule-pw',
        sync_retries: 0,
      },
    },
  });
  t.teardown(() => p.stop());
  // Logins stay with Katello (foreman_url); the token is good at the registry double only if issued there.
  const token = JSON.parse((await request(`${registry.url}v2/token?account=pusher&scope=repository:acme/web/app:pull,push`, { headers: { Authorization: basic('pusher:pusher-pw') } })).body).token as string;
  const post = await request(`${p.httpUrl}/v2/acme/web/app/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
  t.equal(post.status, 202, 'the push reached the registry');
  t.ok(registry.requests.some((r) => r.method === 'POST' && r.path === '/v2/acme/web/app/blobs/uploads/'), 'at /v2/');
  // Finish it and tag an image of it, for the sync to read.
  const config = '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}';
  const at = new URL(post.headers.location!, p.httpUrl);
  at.searchParams.set('digest', sha256(config));
  const put = await request(`${p.httpUrl}${at.pathname}${at.search}`, { method: 'PUT', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' }, body: config });
  t.equal(put.status, 201, 'the blob upload completes');
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length }, layers: [] });
  const tagged = await request(`${p.httpUrl}/v2/acme/web/app/manifests/v1`, { method: 'PUT', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest });
  t.equal(tagged.status, 201, 'the manifest too');
  const started = await request(`${p.httpUrl}/container_gateway/sync`, { method: 'POST' });
  let run: Record<string, any> = {};
  for (let i = 0; i < 600 && run.state !== 'succeeded' && run.state !== 'failed'; i++) {
    run = (await request(`${p.httpUrl}/container_gateway/sync/${started.json().id}`)).json();
    if (run.state === 'running') await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(run.state, 'succeeded', `the sync ran: ${JSON.stringify(run.error ?? run.progress)}`);
  t.ok(registry.requests.some((r) => r.path === '/v2/_catalog'), 'and read the catalog at /v2/');
  t.same(registry.requests.filter((r) => !r.path.startsWith('/v2/')).map((r) => `${r.method} ${r.path}`), [], 'nothing outside /v2/');
});
