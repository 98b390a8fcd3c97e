// The gateway's metrics in smart-proxy mode, through the real daemon: a main
// server (docker-registry with token auth and the Katello double,
// helpers/main-server.ts) and an empty embedded store. A skopeo pull with
// download_policy on_demand counts misses and the bytes fetched from the main
// server, served as `main`; the same pull again counts hits, served as
// `store`. A sync run counts its end, blobs and bytes as its own report says,
// and the store gauges follow.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, layoutManifest, pullImage, pushImage } from './helpers/images.ts';
import { startMainServer } from './helpers/main-server.ts';
import { scrape } from './helpers/metrics.ts';
import { startProxyd } from './helpers/proxyd.ts';

const REPO = 'acme/web/app';
const READER = 'reader:reader-pw';
const work = mkdtempSync(join(tmpdir(), 'proxyd-metrics-main-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const main = await startMainServer({
  users: {
    pusher: { password: 'pusher-pw', repositories: [], push: true },
    reader: { password: 'reader-pw', repositories: [REPO] },
    capsule: { password: 'capsule-pw', repositories: [REPO], catalog: true },
  },
});
t.teardown(() => main.stop());
const image = await buildImage(join(work, 'images'), { name: 'app', files: { '/etc/app.txt': 'metrics main\n' }, layers: 2, randomBytes: 64 * 1024 });
await pushImage(image.ref, `${main.registry.host}/${REPO}:v1`, { creds: 'pusher:pusher-pw' });
const { manifest, raw } = layoutManifest(image.layout, image.tag);
const blobs = [manifest.config, ...manifest.layers];
const blobBytes = blobs.reduce((sum, b) => sum + b.size, 0);

async function proxy(name: string, policy: string) {
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: main.foremanUrl, log_level: 'WARN' },
    plugins: {
      container_gateway: {
        enabled: true,
        sqlite_db_path: join(work, `${name}.db`),
        storage_path: join(work, `${name}-storage`),
        main_registry_url: main.mainRegistryUrl,
        sync_username: 'capsule',
        sync_password: 'capsule-pw',
        download_policy: policy,
      },
    },
  });
  t.teardown(() => p.stop());
  const put = await request(`${p.httpUrl}/container_gateway/repository_list`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ repositories: [{ repository: REPO, auth_required: true }] }) });
  if (put.status !== 200) throw new Error(`repository_list: ${put.status} ${put.body}`);
  return p;
}

const GETS = (page: Awaited<ReturnType<typeof scrape>>, route: string) => page.value('proxyd_http_requests_total', { route, method: 'GET', status: '200' });

t.test('on_demand: a first pull misses and is served from the main server, the second hits the store', async (t) => {
  const p = await proxy('ondemand', 'on_demand');
  const gw = new URL(p.httpUrl).host;
  await pullImage(`${gw}/${REPO}:v1`, `oci:${join(work, 'first')}:copy`, { creds: READER });
  const first = await scrape(t, p.httpUrl);
  t.equal(GETS(first, 'blobs'), blobs.length, 'each blob read once');
  const manifestGets = GETS(first, 'manifests');
  t.equal(first.value('container_gateway_on_demand_fetched_bytes_total'), blobBytes + raw.length, 'fetched from the main server: the blobs and the manifest, once');
  t.ok(first.value('container_gateway_on_demand_reads_total', { result: 'miss' }) >= blobs.length + 1, 'a miss for each blob and the manifest');
  t.equal(
    first.value('container_gateway_served_bytes_total', { source: 'main' }) + first.value('container_gateway_served_bytes_total', { source: 'store' }),
    blobBytes + manifestGets * raw.length,
    'everything served was the image',
  );
  t.ok(first.value('container_gateway_served_bytes_total', { source: 'main' }) >= blobBytes, 'the blobs were served as fetched from the main server');
  t.equal(first.value('container_gateway_stored_blobs'), blobs.length, 'and kept in the store');
  t.equal(first.value('container_gateway_stored_bytes'), blobBytes);

  const misses = first.value('container_gateway_on_demand_reads_total', { result: 'miss' });
  const storeBytes = first.value('container_gateway_served_bytes_total', { source: 'store' });
  await pullImage(`${gw}/${REPO}:v1`, `oci:${join(work, 'second')}:copy`, { creds: READER });
  const second = await scrape(t, p.httpUrl);
  const manifestGets2 = GETS(second, 'manifests') - manifestGets;
  t.equal(second.value('container_gateway_on_demand_reads_total', { result: 'miss' }), misses, 'no new miss');
  t.ok(second.value('container_gateway_on_demand_reads_total', { result: 'hit' }) - first.value('container_gateway_on_demand_reads_total', { result: 'hit' }) >= blobs.length + 1, 'hits instead');
  t.equal(second.value('container_gateway_on_demand_fetched_bytes_total'), blobBytes + raw.length, 'nothing more fetched');
  t.equal(second.value('container_gateway_served_bytes_total', { source: 'store' }) - storeBytes, blobBytes + manifestGets2 * raw.length, 'the second pull served from the store');
});

t.test('a sync run: its end, blobs and bytes as it reports them', async (t) => {
  const p = await proxy('sync', 'immediate');
  const started = await request(`${p.httpUrl}/container_gateway/sync`, { method: 'POST' });
  t.equal(started.status, 202, started.body);
  let run: Record<string, any> = {};
  for (let i = 0; i < 600; i++) {
    run = (await request(`${p.httpUrl}/container_gateway/sync/${started.json().id}`)).json();
    if (run.state !== 'running') break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.equal(run.state, 'succeeded', run.error);
  const page = await scrape(t, p.httpUrl);
  t.same(['succeeded', 'failed'].map((state) => page.value('container_gateway_sync_runs_total', { state })), [1, 0], 'one run, succeeded');
  t.equal(page.value('container_gateway_sync_blobs_total'), blobs.length, 'its blobs');
  t.equal(page.value('container_gateway_sync_blobs_total'), run.progress.blobs.transferred, 'as the run reports');
  t.equal(page.value('container_gateway_sync_bytes_total'), run.progress.bytes, 'its bytes, as the run reports');
  t.equal(page.value('container_gateway_stored_blobs'), blobs.length, 'the store holds them');
  t.equal(page.value('container_gateway_stored_bytes'), blobBytes);
});
