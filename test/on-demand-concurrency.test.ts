// Many clients pulling the same cold image at once through an on-demand proxy
// (issue #12): the main server (docker-registry with token auth behind the
// Katello double) sees each manifest and each blob asked for exactly once,
// and every client gets the right bytes. Two kinds of crowd: 20 concurrent
// HTTP pulls (manifest, then every blob at once) with the client's own token
// on a private repository, and 20 concurrent `skopeo copy` anonymously on a
// public one. proxyd runs with one process (workers: 1, the default): the
// sharing of an upstream fetch is per process.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { countRequests, describe, markAccessLog, ofRepository } from './helpers/access-log.ts';
import { request } from './helpers/http.ts';
import { buildImage, layoutBlobs, layoutManifest, pullImage, pushImage, type BuiltImage } from './helpers/images.ts';
import type { MainServer } from './helpers/main-server.ts';
import { ACCEPT, ALICE, listRepositories, missingFromStore, PUSHER, proxyToken, startProxy, startScene, storedBlobs } from './helpers/on-demand.ts';
import type { RunningProxyd } from './helpers/proxyd.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const CLIENTS = 20;
const CROWD = 'acme/web/crowd';
const SKOPEO_CROWD = 'acme/web/skopeo-crowd';

const work = mkdtempSync(join(tmpdir(), 'gw-on-demand-crowd-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

let main: MainServer;
let proxy: RunningProxyd;
let crowd: BuiltImage;
let skopeoCrowd: BuiltImage;

t.before(async () => {
  main = await startScene([CROWD, SKOPEO_CROWD], [CROWD]);
  const src = join(work, 'src');
  // Layers big enough that the 20 clients overlap while the proxy still downloads them.
  crowd = await buildImage(src, { name: 'crowd', files: { '/etc/crowd.txt': 'twenty at once\n' }, layers: 3, randomBytes: 24 * 1024 * 1024 });
  skopeoCrowd = await buildImage(src, { name: 'skopeo-crowd', files: { '/etc/crowd.txt': 'twenty skopeo copies\n' }, layers: 3, randomBytes: 8 * 1024 * 1024 });
  await pushImage(crowd.ref, `${main.registry.host}/${CROWD}:v1`, { creds: PUSHER });
  await pushImage(skopeoCrowd.ref, `${main.registry.host}/${SKOPEO_CROWD}:v1`, { creds: PUSHER });
  proxy = await startProxy(main, join(work, 'proxy'), {}, { workers: 1 });
  await listRepositories(proxy, [{ repository: CROWD, auth_required: true }, { repository: SKOPEO_CROWD, auth_required: false }]);
});
t.teardown(async () => {
  await proxy?.stop();
  await main?.stop();
});

interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  bytes: number;
  digest: string;
  body: Buffer;
}

/** GET from the proxy, hashing the body as it arrives (the body is kept only when small). */
function get(path: string, headers: Record<string, string>): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${proxy.httpUrl}${path}`, { headers, agent: false }, (res) => {
      const hash = createHash('sha256');
      const small: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        hash.update(c);
        if (bytes <= 1024 * 1024) small.push(c);
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`${path}: connection closed after ${bytes} bytes`)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes, digest: `sha256:${hash.digest('hex')}`, body: Buffer.concat(small) }));
    });
    req.setTimeout(120_000, () => req.destroy(new Error(`${path}: no progress in 120 s`)));
    req.on('error', reject);
  });
}

/** The blobs of the image, each checked by `pull`. */
function blobsOf(img: BuiltImage): Array<{ digest: string; size: number }> {
  const m = layoutManifest(img.layout, img.tag).manifest;
  return [m.config, ...m.layers].map((d) => ({ digest: d.digest, size: d.size }));
}

/** Exactly one GET of the tag and of each blob reached the main server, and nothing else of the repository. */
function exactlyOnce(tt: Tap, entries: Parameters<typeof ofRepository>[0], name: string, blobs: string[]): void {
  const mine = ofRepository(entries, name);
  const want = Object.fromEntries([`GET /v2/${name}/manifests/v1`, ...blobs.map((d) => `GET /v2/${name}/blobs/${d}`)].map((k) => [k, 1]));
  tt.same(Object.fromEntries(countRequests(mine)), want, `each manifest and blob requested from the main server exactly once:\n${describe(mine)}`);
}

t.test(`${CLIENTS} concurrent HTTP pulls of one cold image with the client's token: one upstream fetch each, correct bytes for all`, async (t) => {
  const built = layoutManifest(crowd.layout, crowd.tag);
  const blobs = blobsOf(crowd);
  const token = await proxyToken(proxy, ALICE, CROWD);
  const auth = { Authorization: `Bearer ${token}` };
  t.same(storedBlobs(join(work, 'proxy', 'storage')), [], 'the store starts empty');
  const mark = await markAccessLog(main);

  const results = await Promise.all(Array.from({ length: CLIENTS }, async (_, i) => {
    const manifest = await get(`/v2/${CROWD}/manifests/v1`, { ...auth, Accept: ACCEPT });
    const got = await Promise.all(blobs.map((b) => get(`/v2/${CROWD}/blobs/${b.digest}`, auth)));
    return { i, manifest, got };
  }));

  for (const { i, manifest, got } of results) {
    t.equal(manifest.status, 200, `client ${i}: manifest 200`);
    t.equal(manifest.digest, built.digest, `client ${i}: the manifest's bytes`);
    t.equal(manifest.headers['docker-content-digest'], built.digest);
    const wrong = got.map((g, j) => ({ g, b: blobs[j]! })).filter(({ g, b }) => g.status !== 200 || g.bytes !== b.size || g.digest !== b.digest);
    t.same(wrong.map(({ b, g }) => `${b.digest.slice(0, 19)}: ${g.status}, ${g.bytes}/${b.size} bytes, ${g.digest.slice(0, 19)}`), [], `client ${i}: every blob whole and correct`);
  }
  exactlyOnce(t, await mark.since(), CROWD, blobs.map((b) => b.digest));
  t.same(await missingFromStore(join(work, 'proxy', 'storage'), blobs.map((b) => b.digest)), [], 'every blob kept in the store');

  // Bytes fetched upstream / image size = 1.0 (the counters proxyctl status shows).
  const imageSize = built.raw.length + blobs.reduce((sum, b) => sum + b.size, 0);
  let counted: { bytes_fetched?: number } = {};
  for (let i = 0; i < 50 && counted.bytes_fetched !== imageSize; i++) {
    if (i) await new Promise((r) => setTimeout(r, 100));
    counted = (await request(`${proxy.httpUrl}/container_gateway/admin/on_demand`)).json();
  }
  t.equal(counted.bytes_fetched, imageSize, `bytes fetched from the main server = the image's size (${imageSize}): ratio 1.0`);
});

t.test(`${CLIENTS} concurrent skopeo copies of one cold image, anonymously: one upstream fetch each, identical copies`, async (t) => {
  const blobs = blobsOf(skopeoCrowd);
  const gw = new URL(proxy.httpUrl).host;
  const mark = await markAccessLog(main);
  const outs = Array.from({ length: CLIENTS }, (_, i) => join(work, `skopeo-${i}`));
  await Promise.all(outs.map((out) => pullImage(`${gw}/${SKOPEO_CROWD}:v1`, `oci:${out}:v1`, { timeoutMs: 300_000 })));
  const want = layoutBlobs(skopeoCrowd.layout);
  for (const [i, out] of outs.entries()) {
    t.equal(layoutManifest(out, 'v1').digest, layoutManifest(skopeoCrowd.layout, skopeoCrowd.tag).digest, `copy ${i}: the same manifest`);
    t.same(layoutBlobs(out), want, `copy ${i}: the same blobs (skopeo checks each digest)`);
  }
  exactlyOnce(t, await mark.since(), SKOPEO_CROWD, blobs.map((b) => b.digest));
});
