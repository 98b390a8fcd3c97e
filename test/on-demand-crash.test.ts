// Failures in the middle of an on-demand blob fetch (issue #12), with real
// components: docker-registry with token auth behind the Katello double as
// the main server, proxyd (workers: 1) with the embedded store and
// download_policy on_demand. (1) SIGKILL of proxyd while a client pulls a
// cold ~500 MiB layer: that client never gets a body that passes for
// complete, and after a restart on the same store and database no partial
// blob is visible, the layer comes back whole, skopeo copies the image byte
// for byte, the killed fetch's temporary file is purged and `proxyctl
// verify` finds 0 bad. (2) The client that started a cold fetch goes away
// mid-layer while another keeps pulling: the other gets the right bytes, the
// main server is asked for the blob once, and the store holds it once, with
// no temporary file left. Blobs are random bytes (incompressible).
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { countRequests, describe, markAccessLog, ofRepository } from './helpers/access-log.ts';
import { buildImage, fileDigest, layoutBlobs, layoutManifest, pullImage, pushImage, type BuiltImage } from './helpers/images.ts';
import type { MainServer } from './helpers/main-server.ts';
import { ALICE, listRepositories, missingFromStore, PUSHER, proxyToken, startProxy, startScene, storedBlobs } from './helpers/on-demand.ts';
import { PROXYCTL, run, type RunningProxyd } from './helpers/proxyd.ts';
import { startThrottleRelay, type ThrottleRelay } from './helpers/throttle-relay.ts';

const MiB = 1024 * 1024;
const BIG = 'acme/web/big';
const TWO = 'acme/web/two';

const work = mkdtempSync(join(tmpdir(), 'gw-on-demand-crash-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

let main: MainServer;
let big: BuiltImage;
let two: BuiltImage;
const running = new Set<RunningProxyd>();
/** The main registry as the proxy reaches it: answers trickle, so that every fetch is still running when the test acts in its middle. */
let relay: ThrottleRelay;
const RATE = 32 * MiB;

t.before(async () => {
  main = await startScene([BIG, TWO], [BIG, TWO]);
  const src = join(work, 'src');
  big = await buildImage(src, { name: 'big', files: { '/etc/big.txt': 'killed mid-layer\n' }, layers: 2, randomBytes: 500 * MiB });
  two = await buildImage(src, { name: 'two', files: { '/etc/two.txt': 'one leaves, one stays\n' }, layers: 2, randomBytes: 128 * MiB });
  await pushImage(big.ref, `${main.registry.host}/${BIG}:v1`, { creds: PUSHER, timeoutMs: 300_000 });
  await pushImage(two.ref, `${main.registry.host}/${TWO}:v1`, { creds: PUSHER, timeoutMs: 300_000 });
  relay = await startThrottleRelay(main.registry.port, RATE);
});
t.teardown(async () => {
  for (const p of running) await p.stop('SIGKILL').catch(() => undefined);
  await relay?.close();
  await main?.stop();
});

async function proxy(dir: string, settings: Record<string, unknown> = {}): Promise<RunningProxyd> {
  const p = await startProxy(main, dir, { download_policy: 'on_demand', main_registry_url: `http://127.0.0.1:${relay.port}/v2/`, ...settings }, { workers: 1 });
  running.add(p);
  await listRepositories(p, [BIG, TWO].map((repository) => ({ repository, auth_required: true })));
  return p;
}

/** The largest layer of an image. */
function bigLayer(img: BuiltImage): { digest: string; size: number } {
  return layoutManifest(img.layout, img.tag).manifest.layers.reduce((a, b) => (a.size > b.size ? a : b));
}

interface Pull {
  /** Bytes received so far. */
  bytes(): number;
  /** Settles when the body ends (`complete`: a clean end) or the connection fails; never rejects. */
  end: Promise<{ status: number; complete: boolean; bytes: number; digest: string; error?: string }>;
  /** Go away (close the connection). */
  drop(): void;
}

/** A GET through the proxy, hashing the body as it arrives; bounded by `timeoutMs` without progress. */
function pull(base: string, path: string, token: string, timeoutMs = 120_000): Pull {
  let bytes = 0;
  let status = 0;
  const hash = createHash('sha256');
  let req!: http.ClientRequest;
  const end = new Promise<{ status: number; complete: boolean; bytes: number; digest: string; error?: string }>((resolve) => {
    const finish = (complete: boolean, error?: string) => resolve({ status, complete, bytes, digest: `sha256:${hash.copy().digest('hex')}`, ...(error ? { error } : {}) });
    req = http.get(`${base}${path}`, { headers: { Authorization: `Bearer ${token}` }, agent: false }, (res) => {
      status = res.statusCode ?? 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
      });
      res.on('end', () => finish(res.complete));
      res.on('aborted', () => finish(false, 'aborted'));
      res.on('error', (e) => finish(false, e.message));
      res.on('close', () => finish(res.complete, res.complete ? undefined : 'closed'));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no progress in ${timeoutMs} ms`)));
    req.on('error', (e) => finish(false, e.message));
  });
  return { bytes: () => bytes, end, drop: () => req.destroy() };
}

/** Wait (bounded) until `cond` holds; false on timeout. */
async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

/** Temporary files of the store (uploads/). */
const temps = (storage: string): string[] => (existsSync(join(storage, 'uploads')) ? readdirSync(join(storage, 'uploads')) : []);

const blobPath = (storage: string, digest: string) => join(storage, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));

t.test('SIGKILL of proxyd during a cold 500 MiB blob fetch: nothing partial, then a whole pull and 0 bad', async (t) => {
  const dir = join(work, 'crash');
  const storage = join(dir, 'storage');
  const layer = bigLayer(big);
  t.ok(layer.size > 490 * MiB, `the layer is ${layer.size} bytes`);
  const first = await proxy(dir);
  const token = await proxyToken(first, ALICE, BIG);

  const client = pull(first.httpUrl, `/v2/${BIG}/blobs/${layer.digest}`, token);
  t.ok(await until(() => client.bytes() >= MiB, 60_000), 'the client has bytes of the layer');
  first.proc.kill('SIGKILL');
  t.equal(await first.exited, null, 'killed');
  running.delete(first);
  const got = await client.end;
  t.ok(got.bytes < layer.size, `killed mid-layer: the client had ${got.bytes} of ${layer.size} bytes`);
  t.notOk(got.complete, `the client's body did not end as complete (${got.error})`);
  t.not(got.digest, layer.digest, 'nor did it get the whole blob');

  const atKill = blobPath(storage, layer.digest);
  if (existsSync(atKill)) t.equal(await fileDigest(atKill), layer.digest, 'the final path holds the exact bytes');
  else t.pass('the blob is not at its final path');
  t.notOk(storedBlobs(storage).includes(layer.digest), 'no partial blob is visible in the store');
  t.ok(temps(storage).some((n) => n.startsWith('.ingest-')), `the killed fetch left its temporary file: ${temps(storage).join(', ')}`);

  // Restarted on the same store and database; a short purge age takes the killed fetch's temporary file.
  const second = await proxy(dir, { upload_purge_age: 1 });
  const again = pull(second.httpUrl, `/v2/${BIG}/blobs/${layer.digest}`, await proxyToken(second, ALICE, BIG));
  const whole = await again.end;
  t.match(whole, { status: 200, complete: true, bytes: layer.size, digest: layer.digest }, 'the layer comes back whole through the proxy');

  const out = join(work, 'crash-copy');
  await pullImage(`${new URL(second.httpUrl).host}/${BIG}:v1`, `oci:${out}:v1`, { creds: ALICE, timeoutMs: 300_000 });
  t.equal(layoutManifest(out, 'v1').digest, layoutManifest(big.layout, big.tag).digest, 'skopeo: the same manifest');
  t.same(layoutBlobs(out), layoutBlobs(big.layout), 'skopeo: the same blobs, byte for byte');
  t.same(await missingFromStore(storage, [layer.digest]), [], 'the layer is kept');
  t.ok(await until(() => !temps(storage).some((n) => n.startsWith('.ingest-')), 15_000), `the killed fetch's temporary file is purged: ${temps(storage).join(', ') || '(none)'}`);

  const verify = await run([PROXYCTL, '--url', second.httpUrl, 'verify']);
  t.equal(verify.code, 0, verify.stderr);
  t.match(verify.stdout, /^\d+ blobs checked, 0 bad$/m, `proxyctl verify: ${verify.stdout.trim()}`);
  t.equal(await second.stop(), 0);
  running.delete(second);
});

t.test('one client leaves mid-layer, another keeps pulling the same cold blob: right bytes, one upstream fetch, stored once', async (t) => {
  const dir = join(work, 'leave');
  const storage = join(dir, 'storage');
  const layer = bigLayer(two);
  const p = await proxy(dir);
  const token = await proxyToken(p, ALICE, TWO);
  const mark = await markAccessLog(main);
  const path = `/v2/${TWO}/blobs/${layer.digest}`;

  // The one leaving started the fetch; the other joined it.
  const leaving = pull(p.httpUrl, path, token);
  t.ok(await until(() => leaving.bytes() >= MiB, 60_000), 'the first client has bytes of the layer');
  const staying = pull(p.httpUrl, path, token);
  t.ok(await until(() => staying.bytes() > 0, 60_000), 'the second client has bytes too');
  // The download is still running when the client that started it leaves.
  t.notOk(existsSync(blobPath(storage, layer.digest)), 'the blob is not yet at its final path');
  leaving.drop();
  const left = await leaving.end;
  t.ok(left.bytes < layer.size && !left.complete, `the first client left mid-layer (${left.bytes} of ${layer.size} bytes)`);

  const got = await staying.end;
  t.match(got, { status: 200, complete: true, bytes: layer.size, digest: layer.digest }, 'the second client gets the whole layer, right bytes');

  const mine = ofRepository(await mark.since(), TWO);
  t.same(Object.fromEntries(countRequests(mine)), { [`GET ${path}`]: 1 }, `the main server was asked for the blob once:\n${describe(mine)}`);
  t.same(await missingFromStore(storage, [layer.digest]), [], 'the blob is stored');
  t.same(storedBlobs(storage), [layer.digest], 'once, at its final path');
  t.equal(await fileDigest(blobPath(storage, layer.digest)), layer.digest, 'with the right bytes');
  t.ok(await until(() => temps(storage).length === 0, 10_000), `no temporary file left: ${temps(storage).join(', ') || '(none)'}`);
  t.equal(await p.stop(), 0);
  running.delete(p);
});
