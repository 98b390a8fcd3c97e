// The gateway's metrics in front of an upstream, through the real daemon:
// docker-registry standing in for Pulp's registry (the pulp backend) and the
// Katello double. Two anonymous skopeo pulls: bytes served from Pulp are
// exactly the image's, the second pull's manifest comes from the cache (a
// hit); wrong passwords count as failed logins, then as throttled ones; a
// Pulp that refuses connections counts as upstream errors of kind `connect`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, layoutManifest, pullImage, pushImage } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { scrape } from './helpers/metrics.ts';
import { freePort, startProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';

const work = mkdtempSync(join(tmpdir(), 'proxyd-metrics-up-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const registry = await startRegistry();
t.teardown(() => registry.stop());
const image = await buildImage(work, { name: 'app', files: { '/etc/app.txt': 'metrics upstream\n' }, layers: 2, randomBytes: 128 * 1024 });
await pushImage(image.ref, `${registry.host}/org/prod/app:v1`);
const { manifest, raw } = layoutManifest(image.layout, image.tag);
const imageBytes = [manifest.config, ...manifest.layers].reduce((sum, b) => sum + b.size, 0) + raw.length;

const katello = new KatelloDouble({ users: { bob: { password: 'bobpw', repositories: [] } }, publicRepositories: ['org/prod/app'] });
const foremanUrl = await katello.start();
t.teardown(() => katello.stop());

async function gateway(name: string, pulpEndpoint: string, extra: Record<string, unknown> = {}) {
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl, log_level: 'WARN' },
    plugins: { container_gateway: { enabled: true, pulp_endpoint: pulpEndpoint, pulp_registry_path: '/v2/', sqlite_db_path: join(work, `${name}.db`), ...extra } },
  });
  t.teardown(() => p.stop());
  const listed = await request(`${p.httpUrl}/container_gateway/repository_list/`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ repositories: [{ repository: 'org/prod/app', auth_required: false }] }),
  });
  if (listed.status !== 200) throw new Error(`repository_list: ${listed.status} ${listed.body}`);
  return p;
}

t.test('pulls through Pulp: bytes by source, manifest cache misses then hits', async (t) => {
  const p = await gateway('pulp', registry.url, { manifest_cache_ttl: 300 });
  const gw = new URL(p.httpUrl).host;
  const before = await scrape(t, p.httpUrl);
  t.equal(before.value('container_gateway_manifest_cache_lookups_total'), 0, 'no lookup yet');
  t.notOk(/container_gateway_stored_/.test(before.text), 'no store, no store gauges');

  await pullImage(`${gw}/org/prod/app:v1`, `oci:${join(work, 'one')}:copy`);
  const first = await scrape(t, p.httpUrl);
  const manifests1 = first.value('proxyd_http_requests_total', { route: 'manifests', method: 'GET', status: '200' });
  t.ok(manifests1 >= 1, 'the pull read the manifest');
  t.equal(first.value('container_gateway_manifest_cache_lookups_total', { result: 'miss' }), 1, 'the first read missed the cache');
  t.equal(first.value('container_gateway_manifest_cache_lookups_total', { result: 'hit' }), manifests1 - 1, 'any later read of it hit');
  t.equal(first.value('container_gateway_served_bytes_total', { source: 'pulp' }), imageBytes + (manifests1 - 1) * raw.length, 'bytes served from Pulp: the image, exactly');

  await pullImage(`${gw}/org/prod/app:v1`, `oci:${join(work, 'two')}:copy`);
  const second = await scrape(t, p.httpUrl);
  const manifests2 = second.value('proxyd_http_requests_total', { route: 'manifests', method: 'GET', status: '200' }) - manifests1;
  t.equal(second.value('container_gateway_manifest_cache_lookups_total', { result: 'miss' }), 1, 'the second pull: no new miss');
  t.equal(second.value('container_gateway_manifest_cache_lookups_total', { result: 'hit' }) - first.value('container_gateway_manifest_cache_lookups_total', { result: 'hit' }), manifests2, 'every manifest read hit');
  t.equal(second.value('container_gateway_served_bytes_total', { source: 'pulp' }) - first.value('container_gateway_served_bytes_total', { source: 'pulp' }), imageBytes + (manifests2 - 1) * raw.length, 'the second pull: the image again');
  t.equal(second.value('container_gateway_upstream_errors_total'), 0, 'no upstream error');
});

t.test('failed logins, then throttled ones', async (t) => {
  const p = await gateway('logins', registry.url, { login_failure_limit: 2, login_failure_window: 60 });
  const gw = new URL(p.httpUrl).host;
  const login = (password: string) => request(`${p.httpUrl}/v2/token?service=${gw}&scope=repository:org/prod/private:pull`, { headers: { Authorization: `Basic ${Buffer.from(`bob:${password}`).toString('base64')}` } });
  t.equal((await login('bobpw')).status, 200, 'right password');
  t.equal((await login('nope')).status, 401, 'wrong #1');
  t.equal((await login('nope')).status, 401, 'wrong #2');
  t.equal((await login('bobpw')).status, 429, 'then throttled, even the right password');
  const page = await scrape(t, p.httpUrl);
  t.same(
    ['success', 'failure', 'unknown'].map((result) => page.value('container_gateway_logins_total', { result })),
    [1, 2, 0],
    'one login, two failures',
  );
  t.equal(page.value('container_gateway_logins_throttled_total'), 1, 'one throttled');
  t.equal(page.value('proxyd_http_requests_total', { route: 'token', status: '429' }), 1, 'its 429 on the token route');
});

t.test('a Pulp that refuses connections: upstream errors of kind connect', async (t) => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  const p = await gateway('dead', dead);
  const r = await request(`${p.httpUrl}/v2/org/prod/app/manifests/v1`);
  t.equal(r.status, 502, `the manifest read fails (${r.body.slice(0, 200)})`);
  const blob = await request(`${p.httpUrl}/v2/org/prod/app/blobs/${manifest.config.digest}`);
  t.equal(blob.status, 502, 'the blob read too');
  const page = await scrape(t, p.httpUrl);
  t.equal(page.value('container_gateway_upstream_errors_total', { kind: 'connect' }), 2, 'two upstream errors of kind connect');
  t.equal(page.value('container_gateway_served_bytes_total'), 0, 'nothing served');
  t.equal(page.value('proxyd_http_requests_total', { status: '502' }), 2, 'two 502 answers');
});
