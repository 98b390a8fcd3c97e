// SIGKILL of proxyd in the middle of a sync: the run shows as interrupted
// after the restart, no partial blob is visible, a new sync completes without
// downloading again what was already stored, and `proxyctl verify` reports 0
// bad. A SIGTERM mid-sync stops cleanly and records the run as interrupted. The main server's registry is reached through a throttling TCP relay
// so that the kill surely lands mid-transfer.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, pushImage } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { PROXYCTL, run, startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';
import { startThrottleRelay } from './helpers/throttle-relay.ts';

const MiB = 1024 * 1024;
const IMAGES = 4;
/** Bytes per second the relay lets through towards the daemon. */
const RATE = 40 * MiB;

const work = mkdtempSync(join(tmpdir(), 'gw-sync-crash-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const upstream = await startRegistry();
t.teardown(() => upstream.stop());
const names = Array.from({ length: IMAGES }, (_, i) => `big/img${i}`);
for (const [i, name] of names.entries()) {
  const image = await buildImage(join(work, 'images'), { name: `big${i}`, files: { '/etc/big.txt': `${name}\n` }, layers: 2, randomBytes: 24 * MiB });
  await pushImage(image.ref, `${upstream.host}/${name}:latest`);
}

const relay = await startThrottleRelay(upstream.port, RATE);
t.teardown(() => relay.close());
const relayUrl = `http://127.0.0.1:${relay.port}/v2/`;

const katello = new KatelloDouble({ publicRepositories: names });
const foremanUrl = await katello.start();
t.teardown(() => katello.stop());

const storage = join(work, 'storage');
async function daemon(mainRegistryUrl: string, name = 'gw'): Promise<RunningProxyd> {
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl, log_level: 'INFO' },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, `${name}.db`), storage_path: name === 'gw' ? storage : join(work, `${name}-storage`), main_registry_url: mainRegistryUrl, sync_concurrency: 1 } },
  });
  t.teardown(() => p.stop());
  return p;
}

const files = (dir: string): Array<{ name: string; size: number }> => {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => ({ name: e.name, size: statSync(join(e.parentPath, e.name)).size }));
};

t.test('SIGKILL mid-sync, restart: interrupted, then a new sync completes and every blob verifies', async (t) => {
  const first = await daemon(relayUrl);
  const started = await request(`${first.httpUrl}/container_gateway/sync`, { method: 'POST' });
  t.equal(started.status, 202);
  // Kill once one big layer is stored and the next one is on its way.
  let landed = false;
  for (let i = 0; i < 3000 && !landed; i++) {
    const stored = files(join(storage, 'blobs')).filter((f) => f.size > 20 * MiB).length;
    const partial = files(join(storage, 'uploads')).some((f) => f.name.startsWith('.ingest-') && f.size > 2 * MiB);
    landed = stored >= 1 && partial;
    if (!landed) await new Promise((r) => setTimeout(r, 10));
  }
  t.ok(landed, 'the kill lands mid-sync, with a blob half-downloaded');
  first.proc.kill('SIGKILL');
  t.equal(await first.exited, null, 'killed');
  const bigStored = files(join(storage, 'blobs')).filter((f) => f.size > 20 * MiB).length;
  t.ok(bigStored < IMAGES, `only ${bigStored} of ${IMAGES} big layers were stored`);

  const second = await daemon(`${upstream.url}/v2/`);
  const interrupted = (await request(`${second.httpUrl}/container_gateway/sync`)).json();
  t.match(interrupted, { id: started.json().id, state: 'interrupted', error: /interrupted/ }, 'the killed run counts as interrupted');
  t.ok(interrupted.finished_at);

  const r = await run([PROXYCTL, '--url', second.httpUrl, 'sync', '--wait', '--json']);
  t.equal(r.code, 0, r.stderr);
  const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
  t.match(last, { state: 'succeeded', progress: { repositories: { done: IMAGES, total: IMAGES }, tags: { done: IMAGES, total: IMAGES } } });
  t.ok(last.progress.blobs.transferred < IMAGES * 3, `resumed: ${last.progress.blobs.transferred} of ${IMAGES * 3} blobs downloaded this time`);
  t.equal(last.progress.blobs.done, last.progress.blobs.total);

  const verify = await run([PROXYCTL, '--url', second.httpUrl, 'verify']);
  t.equal(verify.code, 0, verify.stderr);
  t.match(verify.stdout, new RegExp(`^${IMAGES * 3} blobs checked, 0 bad`, 'm'), 'every blob verifies, none partial');

  await request(`${second.httpUrl}/container_gateway/repository_list`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ repositories: names.map((repository) => ({ repository, auth_required: false })) }),
  });
  for (const name of names) {
    const m = JSON.parse((await request(`${upstream.url}/v2/${name}/manifests/latest`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })).body);
    const layer = (m.layers as Array<{ digest: string; size: number }>).reduce((a, b) => (a.size > b.size ? a : b));
    const res = await fetch(`${second.httpUrl}/v2/${name}/blobs/${layer.digest}`, { headers: { Authorization: 'Bearer unauthenticated' } });
    const hash = createHash('sha256');
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) hash.update(chunk);
    t.equal(`sha256:${hash.digest('hex')}`, layer.digest, `${name}: the big layer comes back intact`);
  }
});

t.test('SIGTERM mid-sync: the daemon stops cleanly and the run is recorded as interrupted', async (t) => {
  const p = await daemon(relayUrl, 'term');
  const started = await request(`${p.httpUrl}/container_gateway/sync`, { method: 'POST' });
  t.equal(started.status, 202);
  for (let i = 0; i < 3000 && !files(join(work, 'term-storage', 'uploads')).some((f) => f.size > 2 * MiB); i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(await p.stop('SIGTERM'), 0, 'exit 0');
  t.notOk(p.lines.some((l) => /could not record|unhandled|uncaught/i.test(l)), 'no error on the way out');
  const again = await daemon(`${upstream.url}/v2/`, 'term');
  t.match((await request(`${again.httpUrl}/container_gateway/sync/${started.json().id}`)).json(), { state: 'interrupted', error: /daemon stopped/ });
});
