// serveBlobOnDemand through a real HTTP server (express) over a real store
// and a scripted upstream: a cold GET streams, is stored and linked and
// counted once; concurrent GETs make one upstream request; HEAD asks upstream
// without a body; Range → 206; 404 → BLOB_UNKNOWN; an unreachable main server
// → 503 UNAVAILABLE at once; the streamed policy relays and stores nothing,
// and cuts the connection on wrong bytes.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import t from 'tap';
import type { Access } from '../plugins/container_gateway/access/access.ts';
import { serveBlobOnDemand, type OnDemandBlobDeps } from '../plugins/container_gateway/backends/on-demand-blobs.ts';
import { OnDemandStats } from '../plugins/container_gateway/backends/on-demand-stats.ts';
import { SqliteSql } from '../plugins/container_gateway/db/sqlite-sql.ts';
import { sendOciError, RegistryError } from '../plugins/container_gateway/oci/errors.ts';
import { BlobFetches } from '../plugins/container_gateway/store/blob-fetches.ts';
import { BlobStore } from '../plugins/container_gateway/store/blob-store.ts';
import { ContentIndex } from '../plugins/container_gateway/store/content-index.ts';
import { MainRegistryUnavailable } from '../plugins/container_gateway/upstream/main-registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function listen(t: Tap, handler: http.RequestListener): Promise<number> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(() => r(undefined)));
  });
  return (server.address() as AddressInfo).port;
}

interface Setup {
  port: number;
  deps: OnDemandBlobDeps;
  repo: number;
  upstream: Array<{ method: string; url: string }>;
}

/** An upstream holding `blobs` (or answering with `script`), and a gateway serving on demand from it. */
async function setup(t: Tap, blobs: Map<string, Buffer>, opts: { keep?: boolean; unreachable?: boolean; lie?: boolean } = {}): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'on-demand-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sql = new SqliteSql(join(dir, 'gw.db'), 5000);
  t.teardown(() => sql.close());
  const store = { blobs: new BlobStore(join(dir, 'storage')), index: new ContentIndex(sql) };
  const repo = await store.index.ensureRepository('org/app', undefined);
  const upstream: Array<{ method: string; url: string }> = [];
  const upPort = await listen(t, (req, res) => {
    upstream.push({ method: req.method!, url: req.url! });
    const b = blobs.get(req.url!.split('/').pop()!);
    if (!b) return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Length': b.length });
    if (req.method === 'HEAD') return void res.end();
    res.write(b.subarray(0, b.length >> 1));
    setTimeout(() => res.end(opts.lie ? Buffer.alloc(b.length - (b.length >> 1)) : b.subarray(b.length >> 1)), 50);
  });
  const deps: OnDemandBlobDeps = {
    store,
    fetches: new BlobFetches(store.blobs, 4),
    keep: opts.keep ?? true,
    stats: new OnDemandStats(),
    open: (name, digest, method) => {
      if (opts.unreachable) return Promise.reject(new MainRegistryUnavailable('main server unreachable after 1 attempts: connect ECONNREFUSED'));
      return new Promise((resolve, reject) => {
        http.request({ host: '127.0.0.1', port: upPort, method, path: `/v2/${name}/blobs/${digest}`, agent: false }, resolve).on('error', reject).end();
      });
    },
  };
  const app = express();
  app.use((req, _res, next) => {
    (req as unknown as { log: unknown }).log = { warn: () => undefined, error: () => undefined, info: () => undefined };
    next();
  });
  app.all('/v2/org/app/blobs/:digest', (req, res) => {
    const access = { name: 'org/app', repositoryId: repo } as Access;
    serveBlobOnDemand({ req, res, access }, req.params.digest!, deps).catch((err: unknown) => {
      if (err instanceof RegistryError) sendOciError(res, err);
      else res.status(500).end(String(err));
    });
  });
  const port = await listen(t, app);
  return { port, deps, repo, upstream };
}

function get(port: number, digest: string, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; error?: Error }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no answer in 10 s')), 10_000);
    const req = http.request({ host: '127.0.0.1', port, method, path: `/v2/org/app/blobs/${digest}`, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (clearTimeout(timer), resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) })));
      res.on('error', (error) => (clearTimeout(timer), resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), error })));
    });
    req.on('error', (error) => (clearTimeout(timer), resolve({ status: 0, headers: {}, body: Buffer.alloc(0), error })));
    req.end();
  });
}

const layer = Buffer.alloc(3 * 1024 * 1024 + 7);
for (let i = 0; i < layer.length; i++) layer[i] = (i * 31 + (i >> 10)) & 0xff;
const D = sha(layer);

t.test('cold GETs at once: one upstream request, the bytes to all, stored, linked, counted once', async (t) => {
  const s = await setup(t, new Map([[D, layer]]));
  const answers = await Promise.all(Array.from({ length: 10 }, () => get(s.port, D)));
  for (const a of answers) {
    t.equal(a.status, 200);
    t.ok(a.body.equals(layer) && !a.error, 'correct bytes');
    t.equal(a.headers['docker-content-digest'], D);
    t.equal(a.headers['content-length'], String(layer.length));
    t.equal(a.headers['accept-ranges'], 'bytes');
  }
  t.same(s.upstream, [{ method: 'GET', url: `/v2/org/app/blobs/${D}` }], 'one upstream request');
  await t.resolveMatch(s.deps.store.blobs.stat(D), { size: layer.length });
  t.ok(await s.deps.store.index.blobInRepository(s.repo, D), 'linked');
  for (let i = 0; i < 100 && s.deps.stats.bytesFetched === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(s.deps.stats.bytesFetched, layer.length, 'counted once');
  const warm = await get(s.port, D, 'GET', { Range: 'bytes=5-9' });
  t.equal(warm.status, 206);
  t.ok(warm.body.equals(layer.subarray(5, 10)));
  t.equal(s.upstream.length, 1);
});

t.test('a Range on a cold blob → 206 with those bytes', async (t) => {
  const s = await setup(t, new Map([[D, layer]]));
  const a = await get(s.port, D, 'GET', { Range: `bytes=100-${layer.length - 1}` });
  t.equal(a.status, 206);
  t.equal(a.headers['content-range'], `bytes 100-${layer.length - 1}/${layer.length}`);
  t.ok(a.body.equals(layer.subarray(100)));
  t.equal((await get(s.port, D, 'GET', { Range: `bytes=${layer.length}-` })).status, 416);
});

t.test('HEAD of a cold blob asks upstream for the size only', async (t) => {
  const s = await setup(t, new Map([[D, layer]]));
  const a = await get(s.port, D, 'HEAD');
  t.equal(a.status, 200);
  t.equal(a.headers['content-length'], String(layer.length));
  t.equal(a.headers['docker-content-digest'], D);
  t.same(s.upstream, [{ method: 'HEAD', url: `/v2/org/app/blobs/${D}` }]);
  t.equal(await s.deps.store.blobs.stat(D), undefined, 'nothing fetched');
});

t.test('upstream 404 → BLOB_UNKNOWN; unreachable → 503 UNAVAILABLE at once', async (t) => {
  const s = await setup(t, new Map());
  for (const method of ['GET', 'HEAD']) {
    const a = await get(s.port, D, method);
    t.equal(a.status, 404);
    if (method === 'GET') t.match(JSON.parse(a.body.toString()), { errors: [{ code: 'BLOB_UNKNOWN' }] });
  }
  const down = await setup(t, new Map([[D, layer]]), { unreachable: true });
  const started = Date.now();
  const a = await get(down.port, D);
  t.equal(a.status, 503);
  t.match(JSON.parse(a.body.toString()), { errors: [{ code: 'UNAVAILABLE' }] });
  t.ok(Date.now() - started < 1000, 'at once');
});

t.test('a blob stored for another repository is linked here and served without upstream', async (t) => {
  const s = await setup(t, new Map());
  await s.deps.store.blobs.ingest(D, (await import('node:stream')).Readable.from([layer]), layer.length);
  const a = await get(s.port, D);
  t.equal(a.status, 200);
  t.ok(a.body.equals(layer));
  t.ok(await s.deps.store.index.blobInRepository(s.repo, D));
  t.same(s.upstream, []);
});

t.test('wrong bytes upstream: the client gets a cut connection, nothing stored', async (t) => {
  for (const keep of [true, false]) {
    const s = await setup(t, new Map([[D, layer]]), { keep, lie: true });
    const a = await get(s.port, D);
    t.ok(a.error || a.body.length < layer.length, `never a complete body (keep: ${keep})`);
    t.equal(await s.deps.store.blobs.stat(D), undefined);
    t.notOk(await s.deps.store.index.blobInRepository(s.repo, D));
  }
});

t.test('streamed policy: each client relayed its own request, nothing stored', async (t) => {
  const s = await setup(t, new Map([[D, layer]]), { keep: false });
  const [a, b] = await Promise.all([get(s.port, D), get(s.port, D, 'GET', { Range: 'bytes=10-19' })]);
  t.ok(a.body.equals(layer) && a.status === 200);
  t.ok(b.body.equals(layer.subarray(10, 20)) && b.status === 206);
  t.equal(s.upstream.length, 2);
  t.equal(await s.deps.store.blobs.stat(D), undefined);
  // Counted once each relay ended (just after the client saw its end); the ranged one stops once its client has its bytes.
  for (let i = 0; i < 100 && s.deps.stats.bytesFetched < layer.length + 20; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(s.deps.stats.bytesFetched >= layer.length + 20 && s.deps.stats.bytesFetched <= 2 * layer.length, 'bytes relayed counted');
});
