// Push integrity through the smart proxy (issue 10, points 2 and 3). The main
// server is docker-registry with the Katello double's tokens, behind a front
// that misbehaves on cue (helpers/scripted-registry.ts): status then hang-up,
// a wrong digest, 500, silence. Each case asserts what the client sees, what
// the main server then holds, and that the proxy's store and database did not
// change. Then racing pushes of one tag: the proxy's tag is the main server's.
import { readdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { sha256 } from './helpers/images.ts';
import { startMainServer, type MainServer } from './helpers/main-server.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { gatewayRows } from './helpers/test-database.ts';
import { startScriptedRegistry, type ScriptedRegistry } from './helpers/scripted-registry.ts';

const NAME = 'acme/web/integrity';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const ACCEPT = `${OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json`;

const work = mkdtempSync(join(tmpdir(), 'gw-push-integrity-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const storage = join(work, 'storage');
const dbPath = join(work, 'gw.db');

let main: MainServer;
let front: ScriptedRegistry;
let proxy: RunningProxyd;
let auth: Record<string, string>;
/** Pull-only: with push scope, a HEAD is a push probe the proxy forwards to the main server. */
let reader: Record<string, string>;

t.before(async () => {
  main = await startMainServer({ users: { pusher: { password: 'pusher-pw', repositories: [NAME], push: true } } });
  front = await startScriptedRegistry(main.registry.url);
  proxy = await startProxyd({
    fixtures: false,
    settings: { foreman_url: main.foremanUrl, workers: 2 },
    plugins: {
      container_gateway: {
        enabled: true,
        content_backend: 'local',
        // What the push path keeps, and nothing else: on demand, a read would fetch what the
        // main server holds (on-demand*.test.ts), which is not what these cases look at.
        download_policy: 'immediate',
        main_registry_url: `${front.url}/v2/`,
        sqlite_db_path: dbPath,
        storage_path: storage,
        upstream_response_timeout: 2,
      },
    },
  });
  const login = async (actions: string) => {
    const res = await request(`${proxy.httpUrl}/v2/token?account=pusher&scope=${encodeURIComponent(`repository:${NAME}:${actions}`)}`, {
      headers: { Authorization: `Basic ${Buffer.from('pusher:pusher-pw').toString('base64')}` },
    });
    return { Authorization: `Bearer ${res.json().token as string}` };
  };
  auth = await login('pull,push');
  reader = await login('pull');
});
t.teardown(async () => {
  await proxy?.stop();
  await front?.stop();
  await main?.stop();
});

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** One request to `base` (the proxy unless said); a connection the server breaks resolves with status 0. */
function call(method: string, path: string, headers: Record<string, string> = {}, body?: Buffer, base = proxy.httpUrl): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, { method, headers: { ...auth, ...headers, ...(body ? { 'Content-Length': String(body.length) } : {}) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      res.on('error', () => resolve({ status: 0, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${path}: no answer in 30 s`)));
    req.end(body);
  });
}

/** POST a session, PATCH the bytes, then PUT ?digest (the step a script may break). */
async function pushBlob(body: Buffer, name = NAME): Promise<Answer> {
  const start = await call('POST', `/v2/${name}/blobs/uploads/`);
  if (start.status !== 202) throw new Error(`POST: ${start.status} ${start.text}`);
  const at = new URL(start.headers.location!, proxy.httpUrl);
  const patched = await call('PATCH', at.pathname + at.search, { 'Content-Type': 'application/octet-stream' }, body);
  if (patched.status !== 202) throw new Error(`PATCH: ${patched.status} ${patched.text}`);
  const to = new URL(patched.headers.location!, proxy.httpUrl);
  to.searchParams.set('digest', sha256(body));
  return call('PUT', to.pathname + to.search);
}

function manifestOf(config: Buffer, layers: Buffer[], note = ''): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(l), size: l.length })),
      ...(note ? { annotations: { note } } : {}),
    }),
  );
}

const putManifest = (ref: string, manifest: Buffer) => call('PUT', `/v2/${NAME}/manifests/${ref}`, { 'Content-Type': OCI_MANIFEST }, manifest);

/** What the proxy keeps: blob files and every row about content. */
async function snapshot(): Promise<string> {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) {
        if (e.name !== 'uploads') walk(join(dir, e.name));
      } else files.push(join(dir, e.name).slice(storage.length));
    }
  };
  walk(storage);
  const db = await gatewayRows(dbPath);
  try {
    const rows = (sql: string) => db.all(sql);
    return JSON.stringify({
      files: files.sort(),
      blobs: await rows('SELECT digest, size FROM blobs ORDER BY digest'),
      links: await rows('SELECT repository_id, digest FROM repository_blobs ORDER BY 1, 2'),
      manifests: await rows('SELECT repository_id, digest FROM manifests ORDER BY 1, 2'),
      tags: await rows('SELECT repository_id, name, digest FROM tags ORDER BY 1, 2'),
    });
  } finally {
    await db.close();
  }
}

/** What the main server's registry itself holds (asked directly, with the pusher's token). */
async function mainHas(kind: 'blobs' | 'manifests', ref: string): Promise<number> {
  return (await call('HEAD', `/v2/${NAME}/${kind}/${ref}`, { Accept: ACCEPT }, undefined, main.registry.url)).status;
}

// The content every case pushes: a config and a layer the main server and the proxy both hold.
const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
const layer = Buffer.alloc(200_000, 5);

t.test('setup: a normal push through the front works and is kept here', async (t) => {
  for (const b of [config, layer]) t.equal((await pushBlob(b)).status, 201);
  const put = await putManifest('base', manifestOf(config, [layer]));
  t.equal(put.status, 201);
  const got = await call('GET', `/v2/${NAME}/manifests/base`, { ...reader, Accept: ACCEPT });
  t.equal(got.headers['docker-content-digest'], sha256(manifestOf(config, [layer])), 'the proxy serves what was pushed');
});

const BLOB_CASES = [
  { how: 'hangup', client: 502, mainHolds: 404, says: 'status 201 then a hang-up: the client hears 502, the main server never got it' },
  { how: 'wrong-digest', client: 201, mainHolds: 200, says: "201 with another digest: the client sees the main server's answer as it is" },
  { how: '500', client: 500, mainHolds: 404, says: '500: relayed' },
  { how: 'silence', client: 504, mainHolds: 404, says: 'silence: 504 once upstream_response_timeout passes' },
] as const;

for (const c of BLOB_CASES) {
  t.test(`blob PUT, main server ${c.says}; nothing is kept here`, async (t) => {
    const blob = Buffer.alloc(150_000, `blob ${c.how}`);
    const digest = sha256(blob);
    const before = await snapshot();
    front.set((r) => (r.method === 'PUT' && r.path.includes('/blobs/uploads/') ? c.how : undefined));
    const put = await pushBlob(blob).finally(() => front.set(null));
    t.equal(put.status, c.client, `the client sees ${c.client}`);
    if (c.client >= 500) t.equal(JSON.parse(put.text).errors[0].code, c.how === '500' ? 'UNKNOWN' : 'UNAVAILABLE', 'an OCI error body');
    t.equal(await mainHas('blobs', digest), c.mainHolds, `the main server ${c.mainHolds === 200 ? 'holds' : 'does not hold'} the blob`);
    t.equal(await snapshot(), before, 'no blob file, no row changed on the proxy');
    t.equal((await call('GET', `/v2/${NAME}/blobs/${digest}`, reader)).status, 404, 'the proxy does not serve it');
  });
}

t.test('monolithic POST ?digest answered 201 then a hang-up: the bytes kept as they passed are dropped', async (t) => {
  const blob = Buffer.alloc(120_000, 'one shot');
  const before = await snapshot();
  front.set((r) => (r.method === 'POST' && r.query.has('digest') ? 'hangup' : undefined));
  const post = await call('POST', `/v2/${NAME}/blobs/uploads/?digest=${sha256(blob)}`, { 'Content-Type': 'application/octet-stream' }, blob).finally(() => front.set(null));
  t.equal(post.status, 502, 'the client hears that the answer broke off');
  t.equal(await mainHas('blobs', sha256(blob)), 404, 'the main server never got it');
  t.equal(await snapshot(), before, 'the blob file written on the way is gone, no row changed');
});

const MANIFEST_CASES = [
  { how: 'hangup', client: 502, mainHolds: 404, says: 'status 201 then a hang-up, the main server has no such manifest' },
  { how: 'forward-then-hangup', client: 502, mainHolds: 200, says: 'stored there, but its answer broke off' },
  { how: 'wrong-digest', client: 201, mainHolds: 200, says: '201 with another Docker-Content-Digest' },
  { how: '500', client: 500, mainHolds: 404, says: '500' },
  { how: 'silence', client: 504, mainHolds: 404, says: 'silence' },
] as const;

for (const c of MANIFEST_CASES) {
  t.test(`manifest PUT, main server ${c.says}: the tag is not stored or served here`, async (t) => {
    const manifest = manifestOf(config, [layer], c.how);
    const tag = `t-${c.how}`;
    const before = await snapshot();
    front.set((r) => (r.method === 'PUT' && r.path.includes('/manifests/') ? c.how : undefined));
    const put = await putManifest(tag, manifest).finally(() => front.set(null));
    t.equal(put.status, c.client, `the client sees ${c.client}`);
    t.equal(await mainHas('manifests', tag), c.mainHolds, `the main server ${c.mainHolds === 200 ? 'holds' : 'does not hold'} the tag`);
    t.equal(await snapshot(), before, 'no manifest, tag or blob row changed on the proxy');
    const tags = JSON.parse((await call('GET', `/v2/${NAME}/tags/list`, reader)).text).tags as string[];
    t.notOk(tags.includes(tag), 'the proxy lists no such tag');
    t.equal((await call('GET', `/v2/${NAME}/manifests/${sha256(manifest)}`, { ...reader, Accept: ACCEPT })).status, 404, 'nor serves the manifest by digest');
  });
}

/** The tag's digest on the main server and on the proxy. */
async function both(tag: string): Promise<{ main: string | undefined; proxy: string | undefined }> {
  const onMain = await call('HEAD', `/v2/${NAME}/manifests/${tag}`, { Accept: ACCEPT }, undefined, main.registry.url);
  const here = await call('HEAD', `/v2/${NAME}/manifests/${tag}`, { ...reader, Accept: ACCEPT });
  return { main: onMain.headers['docker-content-digest'] as string | undefined, proxy: here.headers['docker-content-digest'] as string | undefined };
}

t.test("a late 201 for an older push of a tag does not overwrite the main server's newer one", async (t) => {
  const a = manifestOf(config, [layer], 'held A');
  const b = manifestOf(config, [layer], 'then B');
  let release!: () => void;
  let stored!: () => void;
  const storedThere = new Promise<void>((r) => (stored = r));
  front.set((r) => (r.method === 'PUT' && r.path.endsWith('/manifests/held') ? { hold: new Promise<void>((r2) => (release = r2)), answered: stored } : undefined));
  const first = putManifest('held', a);
  await storedThere; // A is stored on the main server; its 201 is held back
  front.set(null);
  const second = await putManifest('held', b);
  t.equal(second.status, 201, 'B: 201');
  release();
  t.equal((await first).status, 201, 'A: 201, after B');
  const tag = await both('held');
  t.equal(tag.main, sha256(b), 'the main server holds B (stored last)');
  t.equal(tag.proxy, tag.main, 'the proxy serves the same as the main server');
});

t.test('20 rounds of two concurrent pushes of different images to one tag: the proxy ends where the main server does', async (t) => {
  const mismatches: string[] = [];
  for (let round = 0; round < 20; round++) {
    const images = [manifestOf(config, [layer], `round ${round} one`), manifestOf(config, [layer], `round ${round} two`)];
    const answers = await Promise.all(images.map((m) => putManifest('race', m)));
    t.same(answers.map((a) => a.status), [201, 201], `round ${round}: both pushes answered 201`);
    const tag = await both('race');
    if (!tag.main || !images.map(sha256).includes(tag.main)) t.fail(`round ${round}: the main server holds ${tag.main}`);
    if (tag.proxy !== tag.main) mismatches.push(`round ${round}: proxy ${tag.proxy}, main server ${tag.main}`);
  }
  t.same(mismatches, [], 'every round: the same digest on the proxy as on the main server');
});
