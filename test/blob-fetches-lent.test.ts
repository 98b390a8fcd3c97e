// BlobFetches on bodies lent by the gateway's upstream client (lent-body.ts):
// the whole BlobFetches suite with every body lent, then what lending itself
// promises: lent memory is never overwritten while a reader holds it, the
// connection stops reading while the reader does, a lent connection is closed
// after its body (a small body's stays alive), and an upstream that goes idle
// or ends early fails the fetch.
import { createHash } from 'node:crypto';
import type http from 'node:http';
import t from 'tap';
import { BlobFetches } from '../plugins/container_gateway/store/blob-fetches.ts';
import { UpstreamError } from '../plugins/container_gateway/upstream/http-upstream.ts';
import { lendBody, LEND_MIN_BYTES, type LentBody } from '../plugins/container_gateway/upstream/lent-body.ts';
import { blobFetchesSuite } from './helpers/blob-fetches-suite.ts';
import { collect, content, gate, MiB, sha, storeIn, type Tap, until, upstream } from './helpers/blob-upstream.ts';

blobFetchesSuite({ lent: true });

/** A lent body of `body` from a scripted server, through HttpUpstream. */
async function lentFrom(t: Tap, serve: (res: http.ServerResponse) => void | Promise<void>, idleMs?: number): Promise<{ body: LentBody; up: Awaited<ReturnType<typeof upstream>> }> {
  const up = await upstream(t, (_req, res) => serve(res), { lent: true, ...(idleMs !== undefined ? { idleMs } : {}) });
  const res = await up.open()();
  const body = lendBody(res);
  if (!body) throw new Error('the body was not lent');
  return { body, up };
}

t.test('chunks held without being given back keep their bytes; given back, their memory carries later bytes correctly', async (t) => {
  const data = content(24 * MiB, 31);
  const { body } = await lentFrom(t, (res) => void res.writeHead(200, { 'Content-Length': data.length }).end(data));
  const held: Buffer[] = [];
  const copies = createHash('sha256');
  let at = 0;
  let wrong = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (!chunk.equals(data.subarray(at, at + chunk.length))) wrong++;
    at += chunk.length;
    copies.update(chunk);
    // The first 8 MiB are held to the end; the rest are given back at once.
    if (at <= 8 * MiB) held.push(chunk);
    else body.release(chunk);
  }
  t.equal(wrong, 0, 'every chunk right when it came');
  t.equal(at, data.length, 'the whole body');
  t.ok(Buffer.concat(held).equals(data.subarray(0, Buffer.concat(held).length)), 'held chunks unchanged after 16 MiB more came through reused memory');
  t.equal(`sha256:${copies.digest('hex')}`, sha(data));
});

t.test('a reader that stops reading stops the connection: the server cannot send the whole body', async (t) => {
  const data = content(64 * MiB, 32);
  let flushed = 0;
  const { body } = await lentFrom(t, async (res) => {
    res.writeHead(200, { 'Content-Length': data.length });
    // 1 MiB at a time, each counted once the kernel took it.
    for (let at = 0; at < data.length; at += MiB) {
      const piece = data.subarray(at, at + MiB);
      if (!res.write(piece, () => (flushed += piece.length))) await new Promise((r) => res.once('drain', r));
    }
    res.end();
  });
  body.pause();
  await new Promise((r) => setTimeout(r, 500));
  t.ok(flushed < 24 * MiB, `the server got ${(flushed / MiB).toFixed(0)} MiB out while nobody read`);
  const got = collect(body, 20_000);
  body.resume();
  t.ok((await got).body.equals(data), 'then the whole body, right');
});

t.test('a lent connection is closed after its body; a small body keeps its connection alive', async (t) => {
  const big = content(LEND_MIN_BYTES + MiB, 33);
  const small = content(64 * 1024, 34);
  const up = await upstream(t, (req, res) => void res.writeHead(200, { 'Content-Length': (req.url === '/big' ? big : small).length }).end(req.url === '/big' ? big : small), { lent: true });
  const fetches = new BlobFetches(storeIn(t), 4, lendBody);
  // The same digest twice in one store would come from the store: the second fetch is a second store's.
  await fetches.fetch(sha(big), up.open('/big')).blob.done;
  await until(() => up.active() === 0);
  const second = new BlobFetches(storeIn(t), 4, lendBody);
  await second.fetch(sha(big), up.open('/big')).blob.done;
  t.equal(up.connections(), 2, 'each big body on a connection of its own');
  await fetches.fetch(sha(small), up.open('/small')).blob.done;
  await second.fetch(sha(small), up.open('/small')).blob.done;
  t.equal(up.connections(), 3, 'the small bodies share one kept-alive connection');
});

t.test('an upstream that goes idle mid-body: the fetch fails as timed out, nothing stored', async (t) => {
  const data = content(8 * MiB, 35);
  const g = gate();
  t.teardown(g.open);
  const up = await upstream(
    t,
    async (_req, res) => {
      res.writeHead(200, { 'Content-Length': data.length });
      res.write(data.subarray(0, 6 * MiB));
      await g.wait;
    },
    { lent: true, idleMs: 300 },
  );
  const store = storeIn(t);
  const fetches = new BlobFetches(store, 4, lendBody);
  const { blob } = fetches.fetch(sha(data), up.open());
  const reader = collect(blob.read());
  const err = await blob.done.catch((e: unknown) => e);
  t.ok(err instanceof UpstreamError && err.kind === 'timeout', `timed out: ${String(err)}`);
  t.ok((await reader).error, 'the reader errors');
  t.equal(await store.stat(sha(data)), undefined, 'nothing stored');
});

t.test('a body that ends early fails; HttpUpstream requests after it still work', async (t) => {
  const data = content(8 * MiB, 36);
  const client = { count: 0 };
  const up = await upstream(
    t,
    (req, res) => {
      client.count++;
      if (req.url === '/ok') return void res.writeHead(200, { 'Content-Length': 2 }).end('ok');
      res.writeHead(200, { 'Content-Length': data.length });
      res.write(data.subarray(0, 5 * MiB), () => res.destroy());
    },
    { lent: true },
  );
  const store = storeIn(t);
  const { blob } = new BlobFetches(store, 4, lendBody).fetch(sha(data), up.open());
  const err = await blob.done.catch((e: unknown) => e);
  t.ok(err instanceof Error, `failed: ${String(err)}`);
  t.equal(await store.stat(sha(data)), undefined, 'nothing stored');
  const ok = await up.open('/ok')();
  t.equal((await collect(ok)).body.toString(), 'ok', 'the next request on the pool is answered');
  t.equal(client.count, 2);
});
