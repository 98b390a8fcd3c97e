// download_policy against real components: a docker-registry with token auth
// behind the Katello double as the main server, a real proxyd with an empty
// embedded store. The settings refused with their file and key; a cold tag
// fetched once and served byte for byte; within manifest_check_interval no
// request upstream (the registry's access log), after it one HEAD, a moved
// tag followed, a deleted one gone here too, digests never revalidated;
// Katello's repository_list and a sync invalidate; a private repository never
// causes an upstream request; the main server stopped: stored content served,
// a miss 503 at once, back: the next miss works; streamed keeps nothing; the
// counters summed over two workers in `proxyctl status --json`.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, layoutBlobs, layoutManifest, pullImage, pushImage, type BuiltImage } from './helpers/images.ts';
import { startMainServer, type MainServer } from './helpers/main-server.ts';
import { PROXYCTL, run, startProxyd, type RunningProxyd } from './helpers/proxyd.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json';
const anon = { Authorization: 'Bearer unauthenticated' };
const PUSHER = 'pusher:pusher-pw';
const READER = 'reader:reader-pw';
const REPOS = { a: 'acme/web/a', b: 'acme/web/b', c: 'acme/web/c', priv: 'acme/web/private' };
const work = mkdtempSync(join(tmpdir(), 'gw-on-demand-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The reader's token from the proxy (Katello lists a, b and c for it), by proxy origin. */
const tokens = new Map<string, string>();

async function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const origin = new URL(url).origin;
  let token = tokens.get(origin);
  if (!token) {
    const scopes = [REPOS.a, REPOS.b, REPOS.c].map((r) => `scope=${encodeURIComponent(`repository:${r}:pull`)}`).join('&');
    const res = await request(`${origin}/v2/token?account=reader&${scopes}`, { headers: { Authorization: `Basic ${Buffer.from(READER).toString('base64')}` } });
    if (res.status !== 200) throw new Error(`token: ${res.status} ${res.body}`);
    token = res.json().token as string;
    tokens.set(origin, token);
  }
  const res = await fetch(url, { method, headers: { Authorization: `Bearer ${token}`, Accept: ACCEPT, ...headers } });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

let main: MainServer;
const images: Record<string, BuiltImage> = {};
t.before(async () => {
  main = await startMainServer({
    users: {
      pusher: { password: 'pusher-pw', repositories: [], push: true },
      reader: { password: 'reader-pw', repositories: [REPOS.a, REPOS.b, REPOS.c] },
      capsule: { password: 'capsule-pw', repositories: Object.values(REPOS), catalog: true },
    },
  });
  for (const [name, layers] of [['one', 2], ['two', 1], ['three', 1]] as const) {
    images[name] = await buildImage(join(work, 'images'), { name, files: { '/etc/name.txt': `${name}\n` }, layers, randomBytes: 64 * 1024 });
  }
  await Promise.all([
    pushImage(images.one!.ref, `${main.registry.host}/${REPOS.a}:v1`, { creds: PUSHER }),
    pushImage(images.two!.ref, `${main.registry.host}/${REPOS.a}:v2`, { creds: PUSHER }),
    pushImage(images.one!.ref, `${main.registry.host}/${REPOS.b}:v1`, { creds: PUSHER }),
    pushImage(images.one!.ref, `${main.registry.host}/${REPOS.c}:v1`, { creds: PUSHER }),
    pushImage(images.three!.ref, `${main.registry.host}/${REPOS.c}:v3`, { creds: PUSHER }),
    pushImage(images.one!.ref, `${main.registry.host}/${REPOS.priv}:v1`, { creds: PUSHER }),
  ]);
});
t.teardown(() => main?.stop());

/** A proxy with an empty store in front of the main server; repositories listed by Katello (all private: the reader may read a, b and c). */
async function proxy(tt: Tap, name: string, extra: Record<string, unknown> = {}, global: Record<string, unknown> = {}): Promise<RunningProxyd> {
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: main.foremanUrl, log_level: 'INFO', ...global },
    plugins: {
      container_gateway: {
        enabled: true,
        sqlite_db_path: join(work, `${name}.db`),
        storage_path: join(work, `${name}-storage`),
        main_registry_url: main.mainRegistryUrl,
        sync_username: 'capsule',
        sync_password: 'capsule-pw',
        sync_retries: 0,
        upstream_connect_timeout: 2,
        ...extra,
      },
    },
  });
  tt.teardown(() => p.stop());
  await listRepositories(tt, p);
  return p;
}

async function listRepositories(tt: Tap, p: RunningProxyd): Promise<void> {
  const entries = Object.values(REPOS).map((repository) => ({ repository, auth_required: true }));
  const put = await request(`${p.httpUrl}/container_gateway/repository_list`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ repositories: entries }) });
  tt.equal(put.status, 200, 'repository_list accepted');
}

/** Requests the main server's registry answered about `repo` since `from` (an index into its access log). */
async function upstreamSince(from: number, repo: string): Promise<string[]> {
  const log = await main.flushAccessLog();
  return log.slice(from).filter((l) => l.path.startsWith(`/v2/${repo}/`)).map((l) => `${l.method} ${l.path.slice(`/v2/${repo}/`.length)}`);
}
const mark = async () => (await main.flushAccessLog()).length;

/** The plugin failed at start with a message naming its settings file and the key. */
async function refused(tt: Tap, settings: Record<string, unknown>, global: Record<string, unknown>, key: string, why: RegExp): Promise<void> {
  const p = await startProxyd({ fixtures: false, settings: global, plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'refused.db'), storage_path: join(work, 'refused'), ...settings } } });
  tt.teardown(() => p.stop());
  const entry = (await request(`${p.httpUrl}/v2/features`)).json().container_gateway as { state: string; message?: string };
  tt.equal(entry.state, 'failed', 'container_gateway failed');
  tt.ok(entry.message?.includes(join(p.dir, 'settings.d', 'container_gateway.yml')), `the message names the file: ${entry.message}`);
  tt.ok(entry.message?.includes(`'${key}'`), `the message names '${key}'`);
  tt.match(entry.message, why);
}

t.test('settings: refused with file and key; the defaults; pulp ignores the policy with a warning', async (t) => {
  await refused(t, { download_policy: 'on_demand' }, {}, 'download_policy', /needs a main server.*foreman_url is unset/);
  await refused(t, { download_policy: 'streamed' }, {}, 'download_policy', /needs a main server/);
  await refused(t, { download_policy: 'lazy' }, { foreman_url: main.foremanUrl }, 'download_policy', /must be immediate .*, on_demand .* or streamed .*got "lazy"/);
  await refused(t, { manifest_check_interval: -1 }, { foreman_url: main.foremanUrl }, 'manifest_check_interval', /0 or more.*got -1/);
  await refused(t, { on_demand_concurrency: 0 }, { foreman_url: main.foremanUrl }, 'on_demand_concurrency', /1 to 256/);
  const standalone = await startProxyd({ fixtures: false, plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'alone.db'), storage_path: join(work, 'alone') } } });
  t.teardown(() => standalone.stop());
  t.same((await request(`${standalone.httpUrl}/container_gateway/admin/on_demand`)).json(), { download_policy: 'immediate' }, 'standalone: immediate');
  const pulp = await startProxyd({
    fixtures: false,
    settings: { foreman_url: main.foremanUrl },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'pulp.db'), pulp_endpoint: 'http://127.0.0.1:9/', download_policy: 'streamed' } },
  });
  t.teardown(() => pulp.stop());
  await pulp.waitForLog(/download_policy: streamed is ignored with content_backend: pulp/);
  t.same((await request(`${pulp.httpUrl}/container_gateway/admin/on_demand`)).json(), { download_policy: 'immediate' }, 'pulp: immediate');
});

t.test('freshness: within the interval no request upstream, after it one HEAD; moved, gone; digests never ask', async (t) => {
  const p = await proxy(t, 'fresh', { manifest_check_interval: 2 });
  const repo = REPOS.b;
  const url = (ref: string) => `${p.httpUrl}/v2/${repo}/manifests/${ref}`;
  let from = await mark();
  const cold = await get(url('v1'));
  t.equal(cold.status, 200, `a tag never synced is served: ${cold.body}`);
  const d1 = layoutManifest(images.one!.layout).digest;
  t.equal(cold.headers.get('docker-content-digest'), d1);
  t.equal(digestOf(cold.body), d1, 'the exact bytes');
  t.same(await upstreamSince(from, repo), ['GET manifests/v1'], 'one GET upstream');

  from = await mark();
  t.equal((await get(url('v1'))).status, 200);
  t.equal((await get(url('v1'), {}, 'HEAD')).status, 200);
  t.same(await upstreamSince(from, repo), [], 'within the interval: nothing asked upstream');

  await sleep(2100);
  from = await mark();
  t.equal((await get(url('v1'))).headers.get('docker-content-digest'), d1);
  t.same(await upstreamSince(from, repo), ['HEAD manifests/v1'], 'after it: one HEAD');
  from = await mark();
  t.equal((await get(url(d1))).status, 200);
  t.same(await upstreamSince(from, repo), [], 'a digest read never asks');

  // The main server's tag moves.
  await pushImage(images.two!.ref, `${main.registry.host}/${repo}:v1`, { creds: PUSHER });
  const d2 = layoutManifest(images.two!.layout).digest;
  await sleep(2100);
  from = await mark();
  const moved = await get(url('v1'));
  t.equal(moved.headers.get('docker-content-digest'), d2, 'the tag moved here too');
  t.equal(digestOf(moved.body), d2);
  t.same(await upstreamSince(from, repo), ['HEAD manifests/v1', 'GET manifests/v1'], 'one HEAD, one GET');
  t.equal((await get(url(d1))).status, 200, 'the old manifest stays readable by digest');

  // The main server's tag is deleted (its link removed from the registry's storage).
  rmSync(join(main.registry.dir, 'data/docker/registry/v2/repositories', repo, '_manifests/tags/v1'), { recursive: true });
  await sleep(2100);
  const gone = await get(url('v1'));
  t.equal(gone.status, 404, 'gone upstream: gone here');
  t.equal(JSON.parse(gone.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
  const tags = await get(`${p.httpUrl}/v2/${repo}/tags/list`);
  t.same(JSON.parse(tags.body.toString()).tags ?? [], [], 'the tag is removed from the store');
});

t.test('on_demand (default): cold pull byte for byte; invalidation; private repositories; outage; counters over two workers', async (t) => {
  const p = await proxy(t, 'main', {}, { workers: 2 });
  const repo = REPOS.a;
  t.same((await request(`${p.httpUrl}/container_gateway/admin/on_demand`)).json(), { download_policy: 'on_demand', hits: 0, misses: 0, bytes_fetched: 0 }, 'on_demand is the default in smart-proxy mode');
  let from = await mark();
  const out = join(work, 'pulled-a');
  await pullImage(`${new URL(p.httpUrl).host}/${repo}:v1`, `oci:${out}:v1`, { creds: READER });
  t.same(layoutBlobs(out).sort(), layoutBlobs(images.one!.layout).sort(), 'skopeo pulls the cold image: the same blobs');
  t.equal(layoutManifest(out, 'v1').digest, layoutManifest(images.one!.layout).digest, 'the same manifest');
  const first = await upstreamSince(from, repo);
  t.equal(first.filter((l) => l.startsWith('GET manifests/')).length, 1, `one manifest GET upstream: ${first}`);
  t.equal(new Set(first.filter((l) => l.includes('/blobs/'))).size, first.filter((l) => l.includes('/blobs/')).length, 'each blob fetched once');

  from = await mark();
  await pullImage(`${new URL(p.httpUrl).host}/${repo}:v1`, `oci:${join(work, 'pulled-a2')}:v1`, { creds: READER });
  t.same(await upstreamSince(from, repo), [], 'a second pull: nothing asked upstream');

  // Access first: a private repository read anonymously is refused without asking upstream.
  from = await mark();
  t.equal((await get(`${p.httpUrl}/v2/${REPOS.priv}/manifests/v1`, anon)).status, 401, 'anonymous: 401');
  t.equal((await get(`${p.httpUrl}/v2/${REPOS.priv}/manifests/v1`)).status, 404, 'a user Katello does not list it for: 404');
  t.equal((await get(`${p.httpUrl}/v2/${REPOS.priv}/blobs/${layoutManifest(images.one!.layout).manifest.config.digest}`)).status, 404);
  t.same(await upstreamSince(from, REPOS.priv), [], 'no upstream request for a client that may not read');

  // Katello's repository_list invalidates: the next tag read asks.
  await listRepositories(t, p);
  from = await mark();
  t.equal((await get(`${p.httpUrl}/v2/${repo}/manifests/v1`)).status, 200);
  t.same(await upstreamSince(from, repo), ['HEAD manifests/v1'], 'after repository_list: one HEAD');
  from = await mark();
  t.equal((await get(`${p.httpUrl}/v2/${repo}/manifests/v1`)).status, 200);
  t.same(await upstreamSince(from, repo), [], 'then fresh again');

  // A sync invalidates too.
  const started = await request(`${p.httpUrl}/container_gateway/sync`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ repositories: [repo] }) });
  t.equal(started.status, 202, started.body);
  let state = 'running';
  for (let i = 0; i < 300 && state === 'running'; i++) {
    await sleep(100);
    state = (await request(`${p.httpUrl}/container_gateway/sync/${started.json().id}`)).json().state;
  }
  t.equal(state, 'succeeded');
  from = await mark();
  t.equal((await get(`${p.httpUrl}/v2/${repo}/manifests/v1`)).status, 200);
  t.same(await upstreamSince(from, repo), ['HEAD manifests/v1'], 'after a sync: one HEAD');

  // The counters, summed over both workers: 10 reads on fresh connections, 10 hits.
  await sleep(1200);
  const before = (await request(`${p.httpUrl}/container_gateway/admin/on_demand`)).json();
  const d1 = layoutManifest(images.one!.layout).digest;
  for (let i = 0; i < 10; i++) t.equal((await get(`${p.httpUrl}/v2/${repo}/manifests/${d1}`)).status, 200);
  await sleep(1200);
  const status = JSON.parse((await run([PROXYCTL, '--url', p.httpUrl, 'status', '--json'])).stdout);
  const details = status.plugins.find((x: { name: string }) => x.name === 'container_gateway').details.on_demand;
  t.equal(details.hits - before.hits, 10, 'every hit counted, whichever worker served it');
  t.equal(details.misses, before.misses, 'no miss');
  t.ok(details.misses >= 4 && details.bytes_fetched >= 64 * 1024, `misses and bytes fetched since start: ${JSON.stringify(details)}`);
  t.match((await run([PROXYCTL, '--url', p.httpUrl, 'status'])).stdout, /on demand: \d+ hits, \d+ misses, \d+\.\d\d GB fetched since start/);

  // The main server stopped: stored content served, a miss 503 at once; back: the next miss works.
  await listRepositories(t, p);
  await main.stopRegistry();
  try {
    const stored = await get(`${p.httpUrl}/v2/${repo}/manifests/v1`);
    t.equal(stored.status, 200, 'a stored tag is served (the HEAD failed)');
    const layer = layoutManifest(images.one!.layout).manifest.layers[0]!.digest as string;
    t.equal((await get(`${p.httpUrl}/v2/${repo}/blobs/${layer}`)).status, 200, 'a stored blob is served');
    const started = Date.now();
    const miss = await get(`${p.httpUrl}/v2/${REPOS.c}/manifests/v1`);
    t.equal(miss.status, 503, 'a miss: 503');
    t.ok(Date.now() - started < 2000, `at once (${Date.now() - started} ms)`);
    t.equal(miss.headers.get('retry-after'), '10');
    t.equal(JSON.parse(miss.body.toString()).errors[0].code, 'UNAVAILABLE');
    const blobMiss = await get(`${p.httpUrl}/v2/${REPOS.c}/blobs/${layoutManifest(images.three!.layout).manifest.layers[0]!.digest}`);
    t.equal(blobMiss.status, 503, 'a blob miss: 503');
  } finally {
    await main.startRegistry();
  }
  const back = await get(`${p.httpUrl}/v2/${REPOS.c}/manifests/v1`);
  t.equal(back.status, 200, 'back: the next miss works');
  t.equal(digestOf(back.body), layoutManifest(images.one!.layout).digest);
});

t.test('streamed: served from the main server, nothing kept', async (t) => {
  const p = await proxy(t, 'streamed', { download_policy: 'streamed' });
  const repo = REPOS.c;
  const m = layoutManifest(images.one!.layout);
  for (let round = 0; round < 2; round++) {
    const from = await mark();
    const got = await get(`${p.httpUrl}/v2/${repo}/manifests/v1`);
    t.equal(got.status, 200);
    t.equal(digestOf(got.body), m.digest, 'the manifest, byte for byte');
    const config = await get(`${p.httpUrl}/v2/${repo}/blobs/${m.manifest.config.digest}`);
    t.equal(digestOf(config.body), m.manifest.config.digest, 'a blob, byte for byte');
    t.same((await upstreamSince(from, repo)).filter((l) => l.startsWith('GET')), ['GET manifests/v1', `GET blobs/${m.manifest.config.digest}`], `round ${round + 1}: asked upstream each time`);
  }
  const blobs = join(work, 'streamed-storage', 'blobs');
  t.same(existsSync(blobs) ? readdirSync(blobs, { recursive: true }).filter((f) => String(f).startsWith('sha256/') && String(f).length > 20) : [], [], 'no blob stored');
});
