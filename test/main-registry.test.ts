// The main-registry client and the mirror core against small fake servers:
// token dance and token reuse, paged lists following Link, redirects that
// drop Authorization across origins, retries with backoff reported and their
// end, refused credentials; blobs downloaded once for concurrent callers and
// never stored when their bytes do not match the digest; a request whose
// client went away fails with the kind 'aborted', and a stopped reader on
// shared pools stops at once without closing them.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SqliteSql } from '../plugins/container_gateway/db/sqlite-sql.ts';
import { BlobStore } from '../plugins/container_gateway/store/blob-store.ts';
import { ContentIndex } from '../plugins/container_gateway/store/content-index.ts';
import { MirrorError, StoreMirror } from '../plugins/container_gateway/sync/mirror.ts';
import { HttpUpstream, UpstreamError } from '../plugins/container_gateway/upstream/http-upstream.ts';
import { MainRegistry, MainRegistryError, MainRegistryUnavailable, type RetryNotice } from '../plugins/container_gateway/upstream/main-registry.ts';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

async function serve(t: Tap, handler: Handler): Promise<{ url: string; seen: http.IncomingMessage[] }> {
  const seen: http.IncomingMessage[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req);
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => server.close(() => r(undefined))));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const timeouts = { connectMs: 2000, responseMs: 5000, idleMs: 5000 };
const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

t.test('token dance, token reuse per scope, paged catalog and tags via Link', async (t) => {
  const tokens: string[] = [];
  const { url, seen } = await serve(t, (req, res) => {
    const u = new URL(req.url!, 'http://x');
    if (u.pathname === '/token') {
      tokens.push(u.searchParams.get('scope') ?? '');
      t.equal(req.headers.authorization, `Basic ${Buffer.from('capsule:pw').toString('base64')}`);
      t.equal(u.searchParams.get('account'), 'capsule');
      res.end(JSON.stringify({ token: `tok ${u.searchParams.get('scope')}`, expires_in: 300, issued_at: new Date().toISOString() }));
      return;
    }
    if (!req.headers.authorization?.startsWith('Bearer tok ')) {
      res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="http://${req.headers.host}/token",service="reg"` }).end();
      return;
    }
    if (u.pathname === '/v2/_catalog') {
      const page = u.searchParams.get('last') === null ? ['a/one', 'a/two'] : ['b/three'];
      // First page: a relative Link; the next has none.
      if (u.searchParams.get('last') === null) res.setHeader('Link', '</v2/_catalog?last=a%2Ftwo&n=2>; rel="next"');
      res.end(JSON.stringify({ repositories: page }));
      return;
    }
    if (u.pathname === '/v2/a/one/tags/list') {
      const last = u.searchParams.get('last');
      if (last === null) res.setHeader('Link', `<http://${req.headers.host}/v2/a/one/tags/list?last=v1&n=1>; rel="next"`);
      res.end(JSON.stringify({ name: 'a/one', tags: last === null ? ['v1'] : ['v2'] }));
      return;
    }
    res.writeHead(404).end();
  });
  const reg = new MainRegistry({ url: `${url}/v2/`, credentials: { username: 'capsule', password: 'pw' }, timeouts, retries: 0, pageSize: 2 });
  t.teardown(() => reg.close());
  t.same(await reg.catalog(), ['a/one', 'a/two', 'b/three'], 'every page');
  t.same(await reg.tags('a/one'), ['v1', 'v2']);
  t.same(await reg.tags('a/one'), ['v1', 'v2']);
  t.same(tokens, ['registry:catalog:*', 'repository:a/one:pull'], 'one token per scope, reused');
  t.equal(seen.filter((r) => r.url === '/v2/').length, 1, 'one ping to learn the challenge');
  await t.rejects(reg.tags('nope/x'), MainRegistryError);
});

t.test('redirects: followed, Authorization dropped across origins only', async (t) => {
  const body = Buffer.from('blob bytes');
  const content = await serve(t, (_req, res) => res.end(body));
  const { url, seen } = await serve(t, (req, res) => {
    if (req.url === '/token?service=reg&scope=repository%3Aa%2Fone%3Apull') {
      res.end(JSON.stringify({ token: 'T' }));
      return;
    }
    if (req.headers.authorization !== 'Bearer T') {
      res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="/token",service="reg"` }).end();
      return;
    }
    if (req.url === '/v2/a/one/blobs/sha256:1') res.writeHead(307, { Location: '/content/1' }).end();
    else if (req.url === '/content/1') res.writeHead(302, { Location: `${content.url}/pulp/1?validate_token=x` }).end();
    else res.writeHead(404).end();
  });
  const reg = new MainRegistry({ url, timeouts, retries: 0 });
  t.teardown(() => reg.close());
  const res = await reg.request('GET', '/a/one/blobs/sha256:1');
  t.equal(res.statusCode, 200);
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  t.same(Buffer.concat(chunks), body);
  t.equal(seen.find((r) => r.url === '/content/1')?.headers.authorization, 'Bearer T', 'same origin: kept');
  t.equal(content.seen[0]?.url, '/pulp/1?validate_token=x');
  t.equal(content.seen[0]?.headers.authorization, undefined, 'another origin: dropped');
});

t.test('retries: 503 and 429 with backoff, each reported, then the recovery; exhausted → unavailable', async (t) => {
  let failures = 3;
  const { url } = await serve(t, (req, res) => {
    if (failures-- > 0) res.writeHead(failures === 0 ? 429 : 503, failures === 0 ? { 'Retry-After': '0' } : {}).end();
    else res.end(JSON.stringify({ repositories: ['x/y'] }));
  });
  const notices: Array<RetryNotice | undefined> = [];
  const reg = new MainRegistry({ url, timeouts, retries: 3, backoffMs: 10, onRetry: (n) => notices.push(n) });
  t.teardown(() => reg.close());
  t.same(await reg.catalog(), ['x/y']);
  t.same(notices.map((n) => n?.attempt), [1, 2, 3, undefined], 'three retries, then recovered');
  t.match(notices[0]!.message, /main server failing \(GET \/_catalog\?n=1000 answered 503\), retrying in 10 ms \(attempt 1\/3\)/);
  t.equal(notices[1]!.delayMs, 20, 'exponential');

  const dead = new MainRegistry({ url: 'http://127.0.0.1:1/v2/', timeouts, retries: 1, backoffMs: 5 });
  t.teardown(() => dead.close());
  await t.rejects(dead.catalog(), MainRegistryUnavailable);
});

t.test('refused credentials: a clear error, not retried', async (t) => {
  const { url, seen } = await serve(t, (req, res) => {
    if (req.url!.startsWith('/token')) res.writeHead(401).end('{}');
    else res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="${'http://' + req.headers.host}/token",service="reg"` }).end();
  });
  const reg = new MainRegistry({ url, credentials: { username: 'capsule', password: 'bad' }, timeouts, retries: 3, backoffMs: 5 });
  t.teardown(() => reg.close());
  await t.rejects(reg.catalog(), { message: /refused the sync credentials of 'capsule'/ });
  t.equal(seen.filter((r) => r.url!.startsWith('/token')).length, 1);
});

t.test('mirror: one download for concurrent callers; a bad digest stores nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mirror-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sql = new SqliteSql(join(dir, 'gw.db'), 5000);
  t.teardown(() => sql.close());
  const store = { blobs: new BlobStore(join(dir, 'storage')), index: new ContentIndex(sql) };
  const mirror = new StoreMirror(store);
  const layer = Buffer.alloc(256 * 1024, 7);
  const config = Buffer.from('{}');
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
  }));
  const blobs = new Map([[sha(layer), layer], [sha(config), config]]);
  const gets: string[] = [];
  const { url } = await serve(t, (req, res) => {
    gets.push(req.url!);
    const m = /^\/v2\/(.+)\/(blobs|manifests)\/(.+)$/.exec(req.url!);
    if (m?.[2] === 'manifests') {
      res.writeHead(200, { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json', 'Docker-Content-Digest': sha(manifest) }).end(manifest);
      return;
    }
    const b = m && blobs.get(m[3]!);
    if (b) setTimeout(() => res.end(b), 50);
    else if (m?.[3] === sha('right')) res.end('wrong');
    else res.writeHead(404).end();
  });
  const reg = new MainRegistry({ url, timeouts, retries: 0 });
  t.teardown(() => reg.close());
  const a = await store.index.ensureRepository('org/a', undefined);
  const b = await store.index.ensureRepository('org/b', undefined);
  const sizes = await Promise.all([mirror.blob(reg.fetch, 'org/a', a, sha(layer)), mirror.blob(reg.fetch, 'org/b', b, sha(layer), layer.length)]);
  t.same(sizes.sort(), [0, layer.length], 'one caller downloads, the other gets it deduplicated');
  t.equal(gets.filter((g) => g.includes(sha(layer))).length, 1, 'one GET');
  t.ok((await store.index.blobInRepository(a, sha(layer))) && (await store.index.blobInRepository(b, sha(layer))), 'linked to both');

  await t.rejects(mirror.blob(reg.fetch, 'org/a', a, sha('right')), MirrorError);
  t.equal(await store.blobs.stat(sha('right')), undefined, 'nothing stored under the digest');

  const r = await mirror.manifest(reg.fetch, 'org/a', a, 'v1');
  t.same(r, { digest: sha(manifest), blobs: 1, bytes: config.length }, 'only the config was missing');
  t.same((await store.index.tagged(a, 'v1'))?.content, manifest, 'stored byte for byte, tagged');
});

t.test("the client's signal: 'aborted', before the response and mid-body; shared pools survive a stopped reader", async (t) => {
  const { url } = await serve(t, (req, res) => {
    if (req.url === '/v2/slow') return void setTimeout(() => res.end('late'), 2000);
    if (req.url === '/v2/body') {
      res.writeHead(200, { 'Content-Length': '10' });
      res.write('12345');
      return;
    }
    res.end('{}');
  });
  const pool = new HttpUpstream(url, timeouts);
  t.teardown(() => pool.close());
  const gone = new AbortController();
  const waiting = pool.request({ method: 'GET', path: '/v2/slow', signal: gone.signal });
  setTimeout(() => gone.abort(), 50);
  await t.rejects(waiting, { name: 'UpstreamError', kind: 'aborted' }, 'waiting for the head');

  const midBody = new AbortController();
  const res = await pool.request({ method: 'GET', path: '/v2/body', signal: midBody.signal });
  const cut = new Promise<unknown>((resolve) => res.on('error', resolve));
  res.resume();
  midBody.abort();
  const err = await cut;
  t.ok(err instanceof UpstreamError && err.kind === 'aborted', 'the body reader learns the kind');

  await t.rejects(pool.request({ method: 'GET', path: '/v2/x', signal: AbortSignal.abort() }), { name: 'UpstreamError', kind: 'aborted' }, 'an aborted signal sends nothing');

  const stop = new AbortController();
  const reader = new MainRegistry({ url: `${url}/v2/`, timeouts, retries: 0, upstreamFor: () => pool, signal: stop.signal });
  const slow = reader.request('GET', '/slow');
  setTimeout(() => stop.abort(), 50);
  await t.rejects(slow, MainRegistryError, 'the stopped reader stops at once');
  const after = await pool.request({ method: 'GET', path: '/v2/ok' });
  t.equal(after.statusCode, 200, 'the shared pool still serves');
  after.resume();
});
