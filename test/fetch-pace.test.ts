// A download keeps within reach of its fastest reader (store/fetch-pace.ts),
// on bodies lent by the gateway's upstream client as on-demand pulls read
// them: a reader that keeps reading holds the download within half the
// window of where it is; a reader that stops reading holds nothing back (the
// download completes and is stored); a late joiner far behind does not slow
// it either. (A reader that goes away: the BlobFetches suite.)
import type { Readable } from 'node:stream';
import t from 'tap';
import { WINDOW } from '../plugins/container_gateway/store/blob-fetches.ts';
import { STALL_MS } from '../plugins/container_gateway/store/fetch-pace.ts';
import { collect, content, fetchesOf, MiB, sha, storeIn, type Tap, until, upstream } from './helpers/blob-upstream.ts';

const SIZE = 64 * MiB;

async function upstreamOf(t: Tap, body: Buffer) {
  return upstream(t, async (_req, res) => {
    res.writeHead(200, { 'Content-Length': body.length });
    for (let at = 0; at < body.length; at += MiB) {
      if (!res.write(body.subarray(at, at + MiB))) await new Promise((r) => res.once('drain', r));
    }
    res.end();
  }, { lent: true });
}

/** Read `r` a chunk at a time, `pauseMs` between chunks; `consumed()` says how far it got. */
function slowly(r: Readable, pauseMs: number): { consumed: () => number; done: Promise<Buffer> } {
  const chunks: Buffer[] = [];
  let consumed = 0;
  const done = new Promise<Buffer>((resolve, reject) => {
    r.on('data', (c: Buffer) => {
      chunks.push(c);
      consumed += c.length;
      r.pause();
      setTimeout(() => r.resume(), pauseMs);
    });
    r.on('end', () => resolve(Buffer.concat(chunks)));
    r.on('error', reject);
  });
  return { consumed: () => consumed, done };
}

t.test('a reader that keeps reading holds the download within half the window of it', async (t) => {
  const body = content(SIZE, 41);
  const up = await upstreamOf(t, body);
  const store = storeIn(t);
  const { blob } = fetchesOf(store, { lent: true }).fetch(sha(body), up.open());
  // 1 MiB every 10 ms (about 100 MiB/s): well below what loopback delivers, never a stall.
  const reader = slowly(blob.read(), 10);
  let most = 0;
  const sampler = setInterval(() => (most = Math.max(most, blob.received - reader.consumed())), 2);
  t.teardown(() => clearInterval(sampler));
  t.ok((await reader.done).equals(body), 'the reader gets the whole blob, right');
  clearInterval(sampler);
  // Half the window, plus what the reader's stream and its current chunk hold, plus one upstream chunk
  // (about 7 MiB; left room for a reader that a busy machine makes look stalled once; unpaced, the
  // download was 40 MiB or more ahead).
  t.ok(most <= WINDOW / 2 + 12 * MiB, `the download ran at most ${(most / MiB).toFixed(1)} MiB ahead of the reader`);
  t.ok(most >= MiB, 'and did run ahead (the bound is not vacuous)');
  t.equal((await blob.done).size, SIZE, 'stored');
});

t.test('a reader that stops reading holds nothing back: the download completes and is stored', async (t) => {
  const body = content(SIZE, 42);
  const up = await upstreamOf(t, body);
  const store = storeIn(t);
  const { blob } = fetchesOf(store, { lent: true }).fetch(sha(body), up.open());
  const r = blob.read();
  await new Promise((resolve) => r.once('readable', resolve)); // it reads its first buffer, then nobody consumes it
  t.equal((await blob.done).size, SIZE, 'the download completed');
  t.equal((await store.stat(sha(body)))?.size, SIZE, 'stored');
  t.ok((await collect(r)).body.equals(body), 'the stopped reader, resumed, still gets the whole blob');
});

t.test('a late joiner far behind does not slow the download for a reader at its head', async (t) => {
  const body = content(SIZE, 44);
  const up = await upstreamOf(t, body);
  const store = storeIn(t);
  const fetches = fetchesOf(store, { lent: true });
  const { blob } = fetches.fetch(sha(body), up.open());
  const head = collect(blob.read());
  await until(() => blob.received >= 32 * MiB, 20_000);
  // Joins 32 MiB behind and keeps reading, slowly (1 MiB per 100 ms, never a stall): were it to set
  // the pace, the head reader would wait until it came within reach, 50 MiB or more.
  const late = slowly(fetches.fetch(sha(body), up.open()).blob.read(), STALL_MS / 2.5);
  t.ok((await head).body.equals(body), 'the reader at the head completes');
  t.ok(late.consumed() < 40 * MiB, `while the late joiner had ${(late.consumed() / MiB).toFixed(0)} MiB`);
  t.equal((await blob.done).size, SIZE);
  t.ok((await late.done).equals(body), 'the late joiner completes too');
});
