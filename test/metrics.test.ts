// GET /metrics through the real daemon: a skopeo push and pull move the
// counters by exactly what those copies did (requests by route class, bytes
// served from the store, logins, what the store holds); with workers: 2 one
// page counts both workers; by default a client that is not trusted is
// refused (a non-loopback peer from a network namespace, helpers/netns.ts),
// `metrics_access: open` lets it read, `disabled` serves nothing.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, layoutBlobPath, layoutManifest, pullImage, pushImage } from './helpers/images.ts';
import { createPeerNamespace } from './helpers/netns.ts';
import { scrape } from './helpers/metrics.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';

const work = mkdtempSync(join(tmpdir(), 'proxyd-metrics-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

async function gatewayDaemon(name: string, settings: Record<string, unknown> = {}, extra: Parameters<typeof startProxyd>[0] = {}): Promise<RunningProxyd> {
  const p = await startProxyd({
    fixtures: false,
    ...extra,
    settings: { log_level: 'WARN', ...settings, ...extra.settings },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, `${name}.db`), storage_path: join(work, `${name}-storage`) } },
  });
  t.teardown(() => p.stop());
  return p;
}

async function addUser(base: string, name: string, password: string): Promise<void> {
  const r = await request(`${base}/container_gateway/admin/users`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name, password }) });
  if (r.status !== 201) throw new Error(`add user: ${r.status} ${r.body}`);
}

const REQUESTS = 'proxyd_http_requests_total';
const LATENCY_COUNT = 'proxyd_http_request_duration_seconds_count';

t.test('a push then a pull move the counters by exactly what they did', async (t) => {
  const p = await gatewayDaemon('pushpull');
  const base = p.httpUrl;
  const gw = new URL(base).host;
  await addUser(base, 'alice', 'alice-pw');
  const image = await buildImage(join(work, 'src'), { name: 'app', files: { '/etc/app.txt': 'metrics\n' }, layers: 2, randomBytes: 256 * 1024 });
  const { manifest, raw } = layoutManifest(image.layout, image.tag);
  const blobs = [manifest.config, ...manifest.layers];
  const blobBytes = blobs.reduce((sum, b) => sum + b.size, 0);
  t.same(blobs.map((b) => statSync(layoutBlobPath(image.layout, b.digest)).size), blobs.map((b) => b.size), 'the layout holds the blobs the manifest names');

  const before = await scrape(t, base);
  t.equal(before.value('container_gateway_stored_blobs'), 0, 'an empty store holds no blobs');
  t.equal(before.value('container_gateway_served_bytes_total'), 0, 'nothing served yet');
  t.equal(before.value('proxyd_worker_processes'), 1, 'one process');
  const dashboard = readFileSync(join(import.meta.dirname, '../extra/grafana-dashboard.json'), 'utf8');
  const queried = new Set([...dashboard.matchAll(/\b((?:proxyd|container_gateway)_[a-z_]+?)(?:_bucket)?\b/g)].map((m) => m[1]!));
  t.same([...queried].filter((name) => !before.text.includes(`# TYPE ${name} `)), [], 'the Grafana dashboard queries only metrics the page has');

  await pushImage(image.ref, `${gw}/alice/app:v1`, { creds: 'alice:alice-pw' });
  const pushed = await scrape(t, base);
  t.equal(pushed.value(REQUESTS, { route: 'manifests', method: 'PUT', status: '201' }), 1, 'one manifest PUT, answered 201');
  t.equal(pushed.value(REQUESTS, { route: 'uploads', method: 'PUT', status: '201' }), blobs.length, 'one finished upload per blob');
  t.equal(pushed.value('container_gateway_stored_blobs'), blobs.length, 'the store holds the pushed blobs');
  t.equal(pushed.value('container_gateway_stored_bytes'), blobBytes, 'and their bytes');
  t.equal(pushed.value('container_gateway_served_bytes_total'), 0, 'a push serves no content');
  t.ok(pushed.value('container_gateway_logins_total', { result: 'success' }) >= 1, 'skopeo logged in');
  t.equal(pushed.value('container_gateway_logins_total', { result: 'failure' }), 0, 'no failed login');
  t.equal(pushed.value(LATENCY_COUNT, { route: 'manifests' }), pushed.value(REQUESTS, { route: 'manifests' }), 'every request has its latency observed');

  await pullImage(`${gw}/alice/app:v1`, `oci:${join(work, 'pulled')}:copy`, { creds: 'alice:alice-pw' });
  const pulled = await scrape(t, base);
  const manifestGets = pulled.value(REQUESTS, { route: 'manifests', method: 'GET', status: '200' }) - pushed.value(REQUESTS, { route: 'manifests', method: 'GET', status: '200' });
  const blobGets = pulled.value(REQUESTS, { route: 'blobs', method: 'GET', status: '200' }) - pushed.value(REQUESTS, { route: 'blobs', method: 'GET', status: '200' });
  t.equal(blobGets, blobs.length, 'the pull read each blob once');
  t.ok(manifestGets >= 1, `the pull read the manifest (${manifestGets} times)`);
  t.equal(pulled.value('container_gateway_served_bytes_total', { source: 'store' }), blobBytes + manifestGets * raw.length, 'bytes served from the store: the blobs and the manifest, exactly');
  t.equal(pulled.value('container_gateway_served_bytes_total', { source: 'main' }) + pulled.value('container_gateway_served_bytes_total', { source: 'pulp' }), 0, 'nothing from elsewhere');
  t.equal(pulled.value('container_gateway_stored_blobs'), blobs.length, 'a pull stores nothing');

  const wrong = await request(`${base}/v2/token?service=${gw}&scope=repository:alice/app:pull`, { headers: { Authorization: `Basic ${Buffer.from('alice:wrong').toString('base64')}` } });
  t.equal(wrong.status, 401, 'a wrong password is refused');
  const after = await scrape(t, base);
  t.equal(after.value('container_gateway_logins_total', { result: 'failure' }), 1, 'one failed login counted');
  t.equal(after.value(REQUESTS, { route: 'token', status: '401' }), 1, 'and its 401 on the token route');
  t.equal(after.value(REQUESTS, { route: 'metrics', method: 'GET', status: '200' }), 3, 'the three scrapes before this one are counted (this one when it ends)');
});

t.test('workers: 2: one page counts the requests of both workers', async (t) => {
  const p = await gatewayDaemon('workers', { workers: 2 });
  const base = p.httpUrl;
  // New connections are dealt out to the workers in turn: 20 land on both.
  const gauges = new Set<string>();
  const statuses = new Set<number>();
  for (let i = 0; i < 20; i++) statuses.add((await request(`${base}/v2/`)).status);
  t.same([...statuses], [401], 'GET /v2/ anonymously: the registry challenge, 20 times');
  for (let i = 0; i < 6; i++) {
    const page = await scrape(t, base);
    t.equal(page.value(REQUESTS, { route: 'registry_base', method: 'GET', status: '401' }), 20, `scrape ${i + 1}: all 20 requests, whichever worker answers`);
    t.equal(page.value('proxyd_worker_processes'), 2, `scrape ${i + 1}: both workers answered the primary`);
    gauges.add(page.value('container_gateway_stored_blobs').toString());
  }
  t.same([...gauges], ['0'], 'the store gauge is the store, not the sum of the workers');
});

t.test('metrics_access: trusted by default; open; disabled', async (t) => {
  const peer = createPeerNamespace();
  t.teardown(() => peer.destroy());
  const on = (p: RunningProxyd) => p.httpUrl.replace('127.0.0.1', peer.hostAddress);
  const closed = await gatewayDaemon('trusted', { bind_host: ['127.0.0.1', peer.hostAddress] });
  const refused = await peer.request(`${on(closed)}/metrics`);
  t.equal(refused.status, 403, 'a peer that is not trusted is refused');
  t.match(refused.json(), { error: new RegExp(`^Untrusted client ${peer.peerAddress.replace(/\./g, '\\.')} attempted to access /metrics`) });
  t.equal((await request(`${closed.httpUrl}/metrics`)).status, 200, 'loopback reads it');

  const open = await gatewayDaemon('open', { bind_host: ['127.0.0.1', peer.hostAddress], metrics_access: 'open' });
  const read = await peer.request(`${on(open)}/metrics`);
  t.equal(read.status, 200, 'metrics_access: open: anyone reads it');
  t.match(read.body, /^proxyd_http_requests_total\{route="metrics",method="GET",status="200"\} 0$|container_gateway_served_bytes_total/m);

  const off = await gatewayDaemon('off', { metrics_access: 'disabled' });
  const none = await request(`${off.httpUrl}/metrics`);
  t.equal(none.status, 404, 'metrics_access: disabled: no /metrics');
});
