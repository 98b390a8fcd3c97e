// The suite of BlobFetches (store/blob-fetches.ts), run twice: on bodies read
// through node's http parser (blob-fetches.test.ts), and on bodies lent by the
// gateway's own upstream client (blob-fetches-lent.test.ts). One upstream
// request however many read at once, late joiners, ranges on a blob still
// arriving, readers that leave, failures that store nothing and end every
// reader with an error (each wait bounded), the concurrency bound, two
// "workers" on one store, and a 256 MiB blob in bounded memory.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import t from 'tap';
import { BlobFetchError, type BlobFetches } from '../../plugins/container_gateway/store/blob-fetches.ts';
import { BlobStore, DigestMismatchError } from '../../plugins/container_gateway/store/blob-store.ts';
import { collect, content, fetchesOf, gate, halves, leftovers, MiB, type Script, sha, storeIn, type Tap, until, upstream } from './blob-upstream.ts';

export function blobFetchesSuite(mode: { lent: boolean }): void {
  const scripted = (t: Tap, script: Script) => upstream(t, script, mode);
  const downloads = (store: BlobStore, limit?: number): BlobFetches => fetchesOf(store, { ...mode, ...(limit !== undefined ? { limit } : {}) });

  t.test('20 concurrent readers of a cold blob: one upstream request, identical correct bytes', async (t) => {
    const store = storeIn(t);
    const body = content(4 * MiB);
    const g = gate();
    const up = await scripted(t, halves(body, g.wait));
    const fetches = downloads(store, 4);
    const joins = Array.from({ length: 20 }, () => fetches.fetch(sha(body), up.open()));
    t.equal(joins.filter((j) => j.started).length, 1, 'one starts, 19 join');
    const reads = joins.map((j) => j.blob.ready.then(() => collect(j.blob.read())));
    setTimeout(g.open, 100);
    const results = await Promise.all(reads);
    for (const r of results) t.ok(!r.error && r.body.equals(body), 'correct bytes');
    t.equal(up.requests.length, 1, 'one upstream request');
    t.same(await joins[0]!.blob.done, { size: body.length, downloaded: body.length });
    t.ok(readFileSync(store.path(sha(body))).equals(body), 'stored');
    t.same(leftovers(store), [], 'no temporary file left');
    // Asked again once stored: from the store, no request.
    const again = fetches.fetch(sha(body), up.open());
    t.same(await again.blob.done, { size: body.length, downloaded: 0 });
    t.ok((await collect(again.blob.read())).body.equals(body));
    t.equal(up.requests.length, 1, 'still one upstream request');
  });

  t.test('a late joiner gets what landed at once, then follows', async (t) => {
    const store = storeIn(t);
    const body = content(2 * MiB, 2);
    const g = gate();
    const up = await scripted(t, halves(body, g.wait));
    const fetches = downloads(store);
    const first = fetches.fetch(sha(body), up.open());
    const early = collect(first.blob.read());
    await until(() => first.blob.landed >= body.length / 2);
    const late = fetches.fetch(sha(body), up.open());
    t.equal(late.started, false);
    const r = late.blob.read();
    let got = 0;
    r.on('data', (c: Buffer) => (got += c.length));
    const lateDone = collect(r);
    await until(() => got >= body.length / 2);
    t.equal(got, body.length / 2, 'the first half while upstream still holds the second');
    g.open();
    t.ok((await lateDone).body.equals(body) && (await early).body.equals(body), 'both complete and correct');
    t.equal(up.requests.length, 1);
  });

  t.test('a Range on an in-flight blob is served once its bytes arrived; the last byte waits for verification', async (t) => {
    const store = storeIn(t);
    const body = content(MiB, 3);
    const g = gate();
    const up = await scripted(t, halves(body, g.wait));
    const fetches = downloads(store);
    const { blob } = fetches.fetch(sha(body), up.open());
    await until(() => blob.landed >= body.length / 2);
    const head = await collect(blob.read({ start: 10, end: 1000 }));
    t.ok(head.body.equals(body.subarray(10, 1001)), 'a range within the landed half, before the rest came');
    let tailDone = false;
    const tail = collect(blob.read({ start: body.length - 100, end: body.length - 1 })).finally(() => (tailDone = true));
    await new Promise((r) => setTimeout(r, 100));
    t.notOk(tailDone, 'a range past what landed waits');
    g.open();
    t.ok((await tail).body.equals(body.subarray(body.length - 100)), 'then comes');
  });

  t.test('a reader that goes away does not stop the fetch for the others', async (t) => {
    const store = storeIn(t);
    const body = content(2 * MiB, 4);
    const g = gate();
    const up = await scripted(t, halves(body, g.wait));
    const fetches = downloads(store);
    const { blob } = fetches.fetch(sha(body), up.open());
    const leaving = blob.read();
    const staying = collect(blob.read());
    leaving.once('data', () => leaving.destroy());
    await until(() => leaving.destroyed);
    g.open();
    t.ok((await staying).body.equals(body), 'the other completes');
    await blob.done;
    t.ok(readFileSync(store.path(sha(body))).equals(body), 'stored once');
    // Even with nobody left reading, the fetch finishes and is kept.
    const body2 = content(MiB, 5);
    const g2 = gate();
    const up2 = await scripted(t, halves(body2, g2.wait));
    const alone = fetches.fetch(sha(body2), up2.open());
    const r = alone.blob.read();
    r.once('data', () => r.destroy());
    await until(() => r.destroyed);
    g2.open();
    t.same(await alone.blob.done, { size: body2.length, downloaded: body2.length });
    t.ok(await store.stat(sha(body2)));
  });

  const failures: Array<[string, (body: Buffer, g: Promise<void>) => Script, (err: unknown) => boolean]> = [
    [
      'ends early',
      (body, g) => async (_req, res) => {
        res.writeHead(200, { 'Content-Length': body.length });
        res.write(body.subarray(0, body.length / 2));
        await g;
        res.destroy();
      },
      (err) => err instanceof Error,
    ],
    [
      'sends wrong bytes',
      (body, g) => halves(Buffer.concat([body.subarray(0, body.length - 1), Buffer.from([body[body.length - 1]! ^ 1])]), g),
      (err) => err instanceof DigestMismatchError,
    ],
    [
      'resets (no Content-Length)',
      (body, g) => async (_req, res) => {
        res.writeHead(200);
        res.write(body.subarray(0, body.length / 2));
        await g;
        res.socket?.resetAndDestroy();
      },
      (err) => err instanceof Error,
    ],
  ];

  for (const [what, script, isError] of failures) {
    t.test(`an upstream that ${what}: nothing stored, every reader errors, none hangs`, async (t) => {
      const store = storeIn(t);
      const body = content(MiB, 6);
      const g = gate();
      const up = await scripted(t, script(body, g.wait));
      const fetches = downloads(store);
      const joins = Array.from({ length: 5 }, () => fetches.fetch(sha(body), up.open()));
      await joins[0]!.blob.ready;
      const reads = joins.map((j) => collect(j.blob.read()));
      await until(() => joins[0]!.blob.landed >= body.length / 2);
      g.open();
      const results = await Promise.all(reads);
      for (const r of results) {
        t.ok(r.error, 'the reader errors');
        t.ok(r.body.length < body.length, 'never a complete body');
      }
      await t.rejects(joins[0]!.blob.done);
      t.ok(isError(await joins[0]!.blob.done.catch((e: unknown) => e)), 'the cause');
      t.equal(await store.stat(sha(body)), undefined, 'nothing stored');
      await until(() => leftovers(store).length === 0);
      t.equal(up.requests.length, 1);
      // A reader that comes after the failure errors at once too.
      t.ok((await collect(joins[1]!.blob.read(), 1000)).error);
    });
  }

  t.test('a reader that stopped reading (its buffer full) is cut at once when the fetch fails', async (t) => {
    const store = storeIn(t);
    const body = content(8 * MiB, 9);
    const g = gate();
    const up = await scripted(t, async (_req, res) => {
      res.writeHead(200, { 'Content-Length': body.length });
      res.write(body.subarray(0, body.length / 2));
      await g.wait;
      res.destroy();
    });
    const fetches = downloads(store);
    const { blob } = fetches.fetch(sha(body), up.open());
    await blob.ready;
    const r = blob.read();
    let error: Error | undefined;
    r.on('error', (e) => (error = e));
    // Never consumed: the reader fills its own buffer from the bytes received, then waits for its consumer.
    r.read(0);
    await until(() => r.readableLength >= MiB);
    g.open();
    await t.rejects(blob.done);
    await until(() => error !== undefined, 2000);
    t.ok(error, 'the paused reader errors without being read');
    t.equal(await store.stat(sha(body)), undefined, 'nothing stored');
  });

  t.test('upstream 404: ready rejects with the status, nothing stored', async (t) => {
    const store = storeIn(t);
    const up = await scripted(t, (_req, res) => void res.writeHead(404).end('{}'));
    const fetches = downloads(store);
    const { blob } = fetches.fetch(sha(Buffer.from('x')), up.open());
    const err = await blob.ready.catch((e: unknown) => e);
    t.ok(err instanceof BlobFetchError && err.status === 404);
    t.same(leftovers(store), []);
  });

  t.test('at most `limit` upstream fetches at once; the rest queue', async (t) => {
    const store = storeIn(t);
    const g = gate();
    const bodies = [1, 2, 3, 4].map((i) => content(64 * 1024, 10 + i));
    const up = await scripted(t, async (req, res) => {
      const b = bodies[Number(req.url!.slice(1))]!;
      await g.wait;
      res.writeHead(200, { 'Content-Length': b.length }).end(b);
    });
    const fetches = downloads(store, 3);
    const joins = bodies.map((b, i) => fetches.fetch(sha(b), up.open(`/${i}`)));
    await until(() => up.requests.length === 3);
    await new Promise((r) => setTimeout(r, 100));
    t.equal(up.requests.length, 3, 'the fourth waits');
    g.open();
    await Promise.all(joins.map((j) => j.blob.done));
    t.equal(up.requests.length, 4);
    t.equal(up.maxActive(), 3, 'never more than 3 at once');
  });

  t.test('two workers on one store fetch the same digest: own temporary files, one blob', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'blob-fetches-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const a = new BlobStore(join(dir, 'storage'));
    const b = new BlobStore(join(dir, 'storage'));
    const body = content(MiB, 20);
    const g = gate();
    const up = await scripted(t, halves(body, g.wait));
    const ja = downloads(a).fetch(sha(body), up.open());
    const jb = downloads(b).fetch(sha(body), up.open());
    await until(() => ja.blob.landed > 0 && jb.blob.landed > 0);
    t.equal(leftovers(a).length, 2, 'two temporary files');
    g.open();
    const [ra, rb] = await Promise.all([collect(ja.blob.read()), collect(jb.blob.read())]);
    t.ok(ra.body.equals(body) && rb.body.equals(body));
    t.ok(readFileSync(a.path(sha(body))).equals(body));
    t.same(leftovers(a), []);
  });

  t.test('close() stops the downloads in flight: readers error, nothing stored', async (t) => {
    const store = storeIn(t);
    const body = content(MiB, 21);
    const g = gate();
    t.teardown(g.open);
    const up = await scripted(t, halves(body, g.wait));
    const fetches = downloads(store);
    const { blob } = fetches.fetch(sha(body), up.open());
    await until(() => blob.landed > 0);
    const r = collect(blob.read());
    fetches.close();
    t.ok((await r).error);
    t.equal(await store.stat(sha(body)), undefined);
    t.ok((await fetches.fetch(sha(content(10, 22)), up.open()).blob.ready.catch((e: unknown) => e)) instanceof BlobFetchError, 'later fetches fail at once');
  });

  t.test('a 256 MiB blob streams with bounded memory (one fast and one slow reader)', async (t) => {
    const store = storeIn(t);
    const SIZE = 256 * MiB;
    const base = content(MiB, 7);
    const piece = (i: number) => {
      const b = Buffer.from(base);
      b.writeUInt32LE(i, 0);
      return b;
    };
    // Hashed through one reused buffer: the baseline below is not inflated by it.
    const hash = createHash('sha256');
    const scratch = Buffer.from(base);
    for (let i = 0; i < SIZE / MiB; i++) hash.update((scratch.writeUInt32LE(i, 0), scratch));
    const digest = `sha256:${hash.digest('hex')}`;
    const up = await scripted(t, async (_req, res) => {
      res.writeHead(200, { 'Content-Length': SIZE });
      for (let i = 0; i < SIZE / MiB; i++) {
        if (!res.write(piece(i))) await new Promise((r) => res.once('drain', r));
      }
      res.end();
    });
    global.gc?.();
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    t.teardown(() => clearInterval(sampler));
    const fetches = downloads(store);
    const { blob } = fetches.fetch(digest, up.open());
    const read = (r: Readable, pauseMs: number) =>
      new Promise<string>((resolve, reject) => {
        const h = createHash('sha256');
        r.on('data', (c: Buffer) => {
          h.update(c);
          if (pauseMs > 0) {
            r.pause();
            setTimeout(() => r.resume(), pauseMs);
          }
        });
        r.on('end', () => resolve(`sha256:${h.digest('hex')}`));
        r.on('error', reject);
      });
    const fast = read(blob.read(), 0);
    const slow = read(blob.read(), 1);
    t.equal(await fast, digest, 'fast reader: correct');
    t.equal(await slow, digest, 'slow reader: correct');
    clearInterval(sampler);
    const growth = (peak - before) / MiB;
    t.ok(growth < 128, `RSS grew ${growth.toFixed(0)} MiB for a 256 MiB blob`);
    t.equal(up.requests.length, 1);
  });
}
