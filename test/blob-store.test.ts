// Unit tests of the embedded store's files (store/blob-store.ts), on a
// temporary directory: ingest and read back, ranges, chunked uploads and
// their failure modes, commits by another instance (another process, or after
// a restart), concurrent commits, gc and verify.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync, openSync, writeSync, closeSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import {
  BlobStore,
  BodyTooLargeError,
  DigestMismatchError,
  InvalidDigestError,
  InvalidUploadIdError,
  SizeMismatchError,
  UploadExistsError,
  UploadRangeError,
  UploadUnknownError,
} from '../plugins/container_gateway/store/blob-store.ts';

/** The `t` a test callback receives. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const MiB = 1024 * 1024;
const HOUR = 60 * 60 * 1000;

const digestOf = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** A fresh store on a temporary directory, removed after the test. */
function tempStore(t: Test): { root: string; store: BlobStore } {
  const root = mkdtempSync(join(tmpdir(), 'blob-store-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  return { root, store: new BlobStore(root) };
}

/** A body streaming `data` in chunks of `chunk` bytes. */
function body(data: Buffer, chunk = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, i + chunk);
    })(),
    { objectMode: false },
  );
}

/** A body that sends `data`, then fails. */
function failingBody(data: Buffer, message = 'client went away'): Readable {
  return Readable.from(
    (async function* () {
      yield data;
      await new Promise((r) => setImmediate(r));
      throw new Error(message);
    })(),
    { objectMode: false },
  );
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Every file under `dir`, relative, sorted ([] when dir does not exist). */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as Array<{ isFile(): boolean; name: string; parentPath?: string; path?: string }>)
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath ?? e.path ?? '', e.name).slice(dir.length + 1))
    .sort();
}

/** Asserts that `promise` rejects with an instance of `cls`; returns the error. */
async function rejectsWith<E extends Error>(tt: Test, promise: Promise<unknown>, cls: new (...args: never[]) => E): Promise<E | undefined> {
  try {
    await promise;
  } catch (err) {
    tt.ok(err instanceof cls, `rejects with ${cls.name} (got ${(err as Error)?.constructor?.name}: ${(err as Error)?.message})`);
    return err instanceof cls ? err : undefined;
  }
  tt.fail(`expected ${cls.name}, it resolved`);
  return undefined;
}

t.test('layout, digest and upload id validation', async (t) => {
  const { root, store } = tempStore(t);
  const hex = 'ab'.padEnd(64, '0');
  t.equal(store.path(`sha256:${hex}`), join(root, 'blobs', 'sha256', 'ab', hex));
  for (const bad of [`sha512:${hex}${hex}`, `sha256:${hex.toUpperCase()}`, `sha256:${hex.slice(1)}`, 'sha256:../../etc/passwd', hex, '']) {
    t.throws(() => store.path(bad), InvalidDigestError, `path('${bad}') throws`);
  }
  await rejectsWith(t, store.stat('sha256:nope'), InvalidDigestError);
  await rejectsWith(t, store.ingest('md5:d41d8cd98f00b204e9800998ecf8427e', body(Buffer.alloc(0))), InvalidDigestError);
  t.equal(await store.stat(`sha256:${hex}`), undefined, 'unknown blob: undefined');
  t.equal(await store.delete(`sha256:${hex}`), false);
  t.notOk(existsSync(join(root, 'blobs')), 'nothing created by reads');
  await rejectsWith(t, store.createUpload('../../../etc/passwd-0000000000000000000'), InvalidUploadIdError);
  await rejectsWith(t, store.createUpload('not-a-uuid'), InvalidUploadIdError);
  t.equal(await store.uploadSize('../x'), undefined);
  const uuid = randomUUID();
  t.equal(await store.uploadSize(uuid), undefined, 'no such upload');
  await store.createUpload(uuid);
  t.equal(await store.uploadSize(uuid), 0, 'created empty');
  t.ok(statSync(join(root, 'uploads', uuid)).isFile(), 'the temp file is uploads/<uuid>');
  await rejectsWith(t, store.createUpload(uuid), UploadExistsError);
  await rejectsWith(t, store.append(randomUUID(), body(Buffer.from('x'))), UploadUnknownError);
  await rejectsWith(t, store.commit(randomUUID(), digestOf(Buffer.alloc(0))), UploadUnknownError);
  await store.cancel(uuid);
  await store.cancel(uuid);
  t.equal(await store.uploadSize(uuid), undefined, 'cancelled (twice: no error)');
});

t.test('ingest and read back byte-identical, whole and by range', async (t) => {
  const { root, store } = tempStore(t);

  const small = Buffer.from('hello, blob\n');
  const d = digestOf(small);
  t.same(await store.ingest(d, body(small, 3), small.length), { size: small.length });
  t.same(await store.stat(d), { size: small.length });
  t.ok((await readAll(store.read(d))).equals(small), 'small blob read back');
  t.same(filesUnder(join(root, 'blobs')), [`sha256/${d.slice(7, 9)}/${d.slice(7)}`], 'stored once by digest');
  t.same(filesUnder(join(root, 'uploads')), [], 'no temporary file left');

  const empty = Buffer.alloc(0);
  t.same(await store.ingest(digestOf(empty), body(empty)), { size: 0 }, 'the empty blob');
  t.equal((await readAll(store.read(digestOf(empty)))).length, 0);

  // 50 MiB of random bytes, in odd-sized chunks, through streams both ways.
  const big = randomBytes(50 * MiB);
  const bd = digestOf(big);
  t.same(await store.ingest(bd, body(big, 100_003)), { size: big.length });
  const stream = store.read(bd);
  t.equal(stream.readableHighWaterMark, MiB, 'reads in 1 MiB chunks');
  t.ok((await readAll(stream)).equals(big), '50 MiB blob read back byte-identical');

  // Ranges are inclusive.
  t.ok((await readAll(store.read(bd, { start: 0, end: 0 }))).equals(big.subarray(0, 1)), 'first byte');
  t.ok((await readAll(store.read(bd, { start: big.length - 1, end: big.length - 1 }))).equals(big.subarray(big.length - 1)), 'last byte');
  t.ok((await readAll(store.read(bd, { start: 12_345, end: 3 * MiB + 7 }))).equals(big.subarray(12_345, 3 * MiB + 8)), 'a middle range');
  t.ok((await readAll(store.read(d, { start: 7, end: small.length - 1 }))).equals(Buffer.from('blob\n')), 'a tail');
  t.throws(() => store.read(d, { start: 5, end: 4 }), RangeError);
  t.throws(() => store.read(d, { start: -1, end: 4 }), RangeError);

  // A missing blob: an error on the stream.
  const missing = digestOf(Buffer.from('missing'));
  await t.rejects(readAll(store.read(missing)), { code: 'ENOENT' });

  // A second ingest of the same content succeeds and changes nothing.
  t.same(await store.ingest(d, body(small)), { size: small.length });
  t.same(filesUnder(join(root, 'uploads')), []);

  t.same(
    (await collect(store.list())).map((b) => [b.digest, b.size]).sort(),
    [
      [d, small.length],
      [digestOf(empty), 0],
      [bd, big.length],
    ].sort(),
    'list() shows every complete blob',
  );

  t.ok(await store.delete(d));
  t.equal(await store.stat(d), undefined, 'deleted');
});

t.test('ingest of wrong content leaves nothing behind', async (t) => {
  const { root, store } = tempStore(t);
  const data = randomBytes(300_000);
  const d = digestOf(data);
  const wrong = Buffer.from(data);
  wrong[1000] = wrong[1000]! ^ 1;
  const err = await rejectsWith(t, store.ingest(d, body(wrong)), DigestMismatchError);
  t.equal(err?.expected, d);
  t.equal(err?.actual, digestOf(wrong));
  await rejectsWith(t, store.ingest(d, body(data), data.length - 1), SizeMismatchError);
  await rejectsWith(t, store.ingest(d, body(data), data.length + 1), SizeMismatchError);
  await rejectsWith(t, store.ingest(d, failingBody(data.subarray(0, 1000))), Error);
  t.same(filesUnder(join(root, 'blobs')), [], 'nothing under blobs/');
  t.same(filesUnder(join(root, 'uploads')), [], 'no temporary file left');
  t.same(await collect(store.list()), []);
});

t.test('chunked uploads: appends with and without start, then commit', async (t) => {
  const { root, store } = tempStore(t);
  const data = randomBytes(3 * MiB + 17);
  const d = digestOf(data);
  const uuid = randomUUID();
  await store.createUpload(uuid);
  const a = MiB;
  const b = 2 * MiB + 5;
  t.equal(await store.append(uuid, body(data.subarray(0, a))), a, 'first chunk without start');
  t.equal(await store.append(uuid, body(data.subarray(a, b)), { start: a }), b, 'second chunk with start');
  t.equal(await store.uploadSize(uuid), b);
  t.equal(await store.append(uuid, body(Buffer.alloc(0)), { start: b }), b, 'an empty chunk changes nothing');
  t.equal(await store.append(uuid, body(data.subarray(b))), data.length, 'last chunk without start');
  t.same(filesUnder(join(root, 'blobs')), [], 'nothing under blobs/ before the commit');
  t.same(await store.commit(uuid, d, { expectedSize: data.length }), { size: data.length });
  t.equal(await store.uploadSize(uuid), undefined, 'the session is over');
  t.same(filesUnder(join(root, 'uploads')), [], 'no temporary file left');
  t.ok((await readAll(store.read(d))).equals(data), 'read back byte-identical');
  await rejectsWith(t, store.commit(uuid, d), UploadUnknownError);
});

t.test('an out-of-order chunk: UploadRangeError with the current size, nothing written', async (t) => {
  const { store } = tempStore(t);
  const data = randomBytes(10_000);
  const uuid = randomUUID();
  await store.createUpload(uuid);
  await store.append(uuid, body(data.subarray(0, 4000)), { start: 0 });
  for (const start of [0, 3999, 4001, 9000]) {
    const chunk = body(data.subarray(start, start + 1000));
    const err = await rejectsWith(t, store.append(uuid, chunk, { start }), UploadRangeError);
    t.equal(err?.size, 4000, `start ${start}: the error carries the current size`);
    t.notOk(chunk.destroyed, 'the body is left to its owner (an HTTP handler still answers 416)');
    t.equal(await store.uploadSize(uuid), 4000, 'upload unchanged');
  }
  await store.append(uuid, body(data.subarray(4000)), { start: 4000 });
  t.same(await store.commit(uuid, digestOf(data)), { size: data.length });
});

t.test('a body failing mid-append leaves the upload at its previous size', async (t) => {
  const { root, store } = tempStore(t);
  const data = randomBytes(2 * MiB);
  const d = digestOf(data);

  // Same instance: the in-memory hash must survive the failed append intact.
  const u1 = randomUUID();
  await store.createUpload(u1);
  await store.append(u1, body(data.subarray(0, MiB)));
  await t.rejects(store.append(u1, failingBody(randomBytes(300_000)), { start: MiB }), { message: 'client went away' });
  t.equal(await store.uploadSize(u1), MiB, 'truncated back to the size before the append');
  t.equal(await store.append(u1, body(data.subarray(MiB)), { start: MiB }), data.length, 'the chunk can be sent again');
  t.same(await store.commit(u1, d), { size: data.length }, 'and the blob verifies');

  // Failing on the very first chunk, and over maxBytes.
  const u2 = randomUUID();
  await store.createUpload(u2);
  await t.rejects(store.append(u2, failingBody(data.subarray(0, 1000))), { message: 'client went away' });
  t.equal(await store.uploadSize(u2), 0, 'back to empty');
  await store.append(u2, body(data.subarray(0, 500)));
  await rejectsWith(t, store.append(u2, body(data.subarray(500, 1500)), { maxBytes: 999 }), BodyTooLargeError);
  t.equal(await store.uploadSize(u2), 500, 'a body over maxBytes is not kept either');
  t.equal(await store.append(u2, body(data.subarray(500)), { maxBytes: data.length - 500 }), data.length, 'exactly maxBytes is fine');
  // Commit from another instance: re-hashed from disk, so the truncation really happened.
  t.same(await new BlobStore(root).commit(u2, d), { size: data.length });
  t.same(filesUnder(join(root, 'uploads')), []);
});

t.test('commit with the wrong digest or size: error, upload deleted, nothing under blobs/', async (t) => {
  const { root, store } = tempStore(t);
  const data = randomBytes(200_000);
  const u1 = randomUUID();
  await store.createUpload(u1);
  await store.append(u1, body(data));
  const other = digestOf(Buffer.from('something else'));
  const err = await rejectsWith(t, store.commit(u1, other), DigestMismatchError);
  t.equal(err?.expected, other);
  t.equal(err?.actual, digestOf(data), 'the error names the actual digest');
  t.same(filesUnder(join(root, 'blobs')), [], 'nothing under blobs/');
  t.equal(await store.uploadSize(u1), undefined, 'the session is over');
  t.same(filesUnder(join(root, 'uploads')), [], 'its temporary file is gone');

  const u2 = randomUUID();
  await store.createUpload(u2);
  await store.append(u2, body(data));
  const serr = await rejectsWith(t, store.commit(u2, digestOf(data), { expectedSize: data.length + 1 }), SizeMismatchError);
  t.same([serr?.expected, serr?.actual], [data.length + 1, data.length]);
  t.same(filesUnder(join(root, 'blobs')), []);
  t.same(filesUnder(join(root, 'uploads')), []);
  await rejectsWith(t, store.commit(u2, 'sha512:abc'), InvalidDigestError);
});

t.test('commit by a new BlobStore (another process, or a restart) re-hashes from disk', async (t) => {
  const { root, store } = tempStore(t);
  const data = randomBytes(5 * MiB + 3);
  const d = digestOf(data);

  const u1 = randomUUID();
  await store.createUpload(u1);
  await store.append(u1, body(data.subarray(0, 2 * MiB)));
  await store.append(u1, body(data.subarray(2 * MiB)), { start: 2 * MiB });
  t.same(await new BlobStore(root).commit(u1, d), { size: data.length }, 'a new instance verifies the right digest');

  const u2 = randomUUID();
  await store.createUpload(u2);
  await store.append(u2, body(data));
  const bad = Buffer.from(data);
  bad[0] = bad[0]! ^ 0xff;
  await rejectsWith(t, new BlobStore(root).commit(u2, digestOf(bad)), DigestMismatchError);

  // Chunks of one upload through two workers, committed by the first: its
  // in-memory hash covers only its own chunk, so it must read the file again.
  const worker1 = new BlobStore(root);
  const worker2 = new BlobStore(root);
  const u3 = randomUUID();
  await worker1.createUpload(u3);
  await worker1.append(u3, body(data.subarray(0, MiB)), { start: 0 });
  await worker2.append(u3, body(data.subarray(MiB, 3 * MiB)), { start: MiB });
  await worker1.append(u3, body(data.subarray(3 * MiB)), { start: 3 * MiB });
  t.same(await worker1.commit(u3, d), { size: data.length }, 'interleaved workers: right digest accepted');

  const u4 = randomUUID();
  await worker1.createUpload(u4);
  await worker1.append(u4, body(data.subarray(0, MiB)));
  const badTail = Buffer.from(data.subarray(MiB));
  badTail[MiB] = badTail[MiB]! ^ 0x10;
  await worker2.append(u4, body(badTail), { start: MiB });
  await rejectsWith(t, worker1.commit(u4, d), DigestMismatchError);

  // A file changed behind the store's back (same size) is caught too.
  const u5 = randomUUID();
  await store.createUpload(u5);
  await store.append(u5, body(data));
  const changed = join(root, 'uploads', u5);
  const fd = openSync(changed, 'r+');
  writeSync(fd, Buffer.from([bad[0]!]), 0, 1, 0);
  closeSync(fd);
  // The write's mtime, as a later clock would set it (no waiting for the clock to tick).
  const written = statSync(changed);
  utimesSync(changed, written.atime, new Date(written.mtimeMs + 1000));
  await rejectsWith(t, store.commit(u5, d), DigestMismatchError);

  t.same((await collect(store.list())).map((b) => b.digest), [d]);
  t.same(filesUnder(join(root, 'uploads')), []);
});

t.test('two concurrent commits of the same content both succeed', async (t) => {
  const { root } = tempStore(t);
  const data = randomBytes(4 * MiB);
  const d = digestOf(data);
  const stores = [new BlobStore(root), new BlobStore(root), new BlobStore(root), new BlobStore(root)];
  const uuids = stores.map(() => randomUUID());
  await Promise.all(stores.map(async (s, i) => {
    await s.createUpload(uuids[i]!);
    await s.append(uuids[i]!, body(data));
  }));
  const results = await Promise.all(stores.map((s, i) => s.commit(uuids[i]!, d)));
  t.same(results, stores.map(() => ({ size: data.length })), 'every commit succeeded');
  // And concurrent one-shot ingests of it as well.
  const ingests = await Promise.all(stores.map((s) => s.ingest(d, body(data, 77_777), data.length)));
  t.same(ingests, stores.map(() => ({ size: data.length })));
  t.same(filesUnder(join(root, 'blobs')), [`sha256/${d.slice(7, 9)}/${d.slice(7)}`], 'stored once');
  t.same(filesUnder(join(root, 'uploads')), [], 'no temporary file left');
  t.ok((await readAll(stores[0]!.read(d))).equals(data));

  // Two commits of the same upload: one wins, the other finds no session.
  const u = randomUUID();
  await stores[0]!.createUpload(u);
  await stores[0]!.append(u, body(data));
  const both = await Promise.allSettled([stores[1]!.commit(u, d), stores[2]!.commit(u, d)]);
  t.equal(both.filter((r) => r.status === 'fulfilled').length, 1, 'one commit of a session wins');
  const lost = both.find((r) => r.status === 'rejected');
  t.ok(lost && lost.reason instanceof UploadUnknownError, 'the other: UploadUnknownError');
});

t.test('gc removes only unreferenced blobs past the grace period, and abandoned uploads', async (t) => {
  const { root, store } = tempStore(t);
  const blob = async (text: string, ageMs: number): Promise<{ digest: string; size: number }> => {
    const data = Buffer.from(text);
    const digest = digestOf(data);
    await store.ingest(digest, body(data));
    const when = new Date(Date.now() - ageMs);
    utimesSync(store.path(digest), when, when);
    return { digest, size: data.length };
  };
  const referencedOld = await blob('referenced, old', 48 * HOUR);
  const unreferencedOld = await blob('unreferenced, old', 2 * HOUR);
  const unreferencedOld2 = await blob('unreferenced, older still', 72 * HOUR);
  const unreferencedFresh = await blob('unreferenced, committed just now', 0);
  const recommitted = await blob('unreferenced, old, but committed again just now', 5 * HOUR);
  // An upload re-committing existing content restarts its grace period.
  const again = randomUUID();
  await store.createUpload(again);
  await store.append(again, body(Buffer.from('unreferenced, old, but committed again just now')));
  await store.commit(again, recommitted.digest);

  // Uploads: one in progress (touched now), one in progress for 23 h, one abandoned (25 h).
  const inProgress = randomUUID();
  await store.createUpload(inProgress);
  await store.append(inProgress, body(Buffer.from('half of a layer')));
  const slow = randomUUID();
  await store.createUpload(slow);
  await store.append(slow, body(Buffer.from('slow')));
  utimesSync(join(root, 'uploads', slow), new Date(Date.now() - 23 * HOUR), new Date(Date.now() - 23 * HOUR));
  const abandoned = randomUUID();
  await store.createUpload(abandoned);
  await store.append(abandoned, body(Buffer.from('forgotten')));
  utimesSync(join(root, 'uploads', abandoned), new Date(Date.now() - 25 * HOUR), new Date(Date.now() - 25 * HOUR));
  // A one-shot ingest's temporary file left by a crash a day ago.
  const deadIngest = join(root, 'uploads', `.ingest-${randomBytes(16).toString('hex')}`);
  writeFileSync(deadIngest, 'partial');
  utimesSync(deadIngest, new Date(Date.now() - 25 * HOUR), new Date(Date.now() - 25 * HOUR));

  t.same(await store.abandonedUploads(24 * HOUR), [abandoned], 'abandonedUploads(24 h)');
  t.same(await store.abandonedUploads(22 * HOUR), [slow, abandoned].sort(), 'abandonedUploads(22 h)');

  const referenced = new Set([referencedOld.digest]);
  const seen: string[] = [];
  const result = await store.gc((digest) => {
    seen.push(digest);
    return referenced.has(digest);
  }, { graceMs: HOUR, uploadPurgeMs: 24 * HOUR });
  t.same(
    result,
    { removed: 2, bytes: unreferencedOld.size + unreferencedOld2.size, purged: { uploads: 2, bytes: 'forgotten'.length + 'partial'.length, sessions: [abandoned] } },
    'two unreferenced old blobs removed; the abandoned upload and the dead ingest purged, with their bytes',
  );
  t.same(
    (await collect(store.list())).map((b) => b.digest).sort(),
    [referencedOld.digest, unreferencedFresh.digest, recommitted.digest].sort(),
    'the referenced and the fresh ones stay',
  );
  t.notOk(seen.includes(unreferencedFresh.digest), 'blobs within the grace period are not even considered');
  t.equal(await store.uploadSize(inProgress), 'half of a layer'.length, 'the upload in progress is untouched');
  t.equal(await store.uploadSize(slow), 4, 'an upload idle for 23 h stays');
  t.equal(await store.uploadSize(abandoned), undefined, 'the abandoned upload is removed');
  t.notOk(existsSync(deadIngest), 'a dead ingest temp file is removed');
  t.ok(await store.append(inProgress, body(Buffer.from(' and the rest'))), 'the upload in progress goes on');

  // graceMs 0: everything unreferenced goes.
  const again2 = await store.gc(() => false, { graceMs: 0, uploadPurgeMs: 24 * HOUR });
  t.equal(again2.removed, 3);
  t.same(await collect(store.list()), []);
  const left = filesUnder(join(root, 'uploads'));
  t.same(left.filter((f) => !f.endsWith('.state')).sort(), [inProgress, slow].sort(), 'only the live uploads remain in uploads/');
  t.same(left.filter((f) => f.endsWith('.state')).map((f) => f.slice(0, -6)).filter((u) => u !== inProgress && u !== slow), [], 'and notes of live uploads only');
});

t.test('gc racing commits of the same content (stress; the exact interleaving is tested below)', async (t) => {
  const { root } = tempStore(t);
  const committer = new BlobStore(root);
  const collector = new BlobStore(root);
  const data = randomBytes(256 * 1024);
  const d = digestOf(data);
  let removedTotal = 0;
  for (let round = 0; round < 40; round++) {
    // The blob exists, unreferenced, older than the grace period: gc wants it.
    await committer.ingest(d, body(data));
    const old = new Date(Date.now() - 2 * HOUR);
    utimesSync(committer.path(d), old, old);
    const uuid = randomUUID();
    await committer.createUpload(uuid);
    await committer.append(uuid, body(data));
    const [gc, commit] = await Promise.all([
      new Promise((r) => setTimeout(r, round % 4)).then(() => collector.gc(() => false, { graceMs: HOUR })),
      new Promise((r) => setTimeout(r, (round >> 2) % 4)).then(() => committer.commit(uuid, d)),
    ]);
    removedTotal += gc.removed;
    t.same(commit, { size: data.length });
    // The commit returned: its blob must be there (the manifest linking it comes next).
    if (!(await committer.stat(d))) {
      t.fail(`round ${round}: the blob vanished after its commit`);
      return;
    }
  }
  t.pass(`40 rounds, the committed blob always survived (gc removed the old copy ${removedTotal} times first)`);
  t.same((await collect(collector.verify())).map((r) => r.ok), [true]);
  t.same(filesUnder(join(root, 'uploads')), [], 'no temporary or trash file left');
});

t.test('gc: a commit touching the blob between gc\'s look and its removal wins', async (t) => {
  const { store } = tempStore(t);
  const data = Buffer.from('old and unreferenced, until a push commits it again');
  const d = digestOf(data);
  await store.ingest(d, body(data));
  const old = new Date(Date.now() - 2 * HOUR);
  utimesSync(store.path(d), old, old);
  // isReferenced runs after gc listed the blob as old and before it moves it
  // away: the worst moment for a concurrent commit to touch the existing blob
  // (which is what commit does when the blob is already there).
  const result = await store.gc((digest) => {
    if (digest === d) {
      const now = new Date();
      utimesSync(store.path(d), now, now);
    }
    return false;
  }, { graceMs: HOUR });
  t.same(result, { removed: 0, bytes: 0, purged: { uploads: 0, bytes: 0, sessions: [] } }, 'not removed');
  t.same(await store.stat(d), { size: data.length }, 'still there, under its name');
});

t.test('gc puts back a blob a killed gc left in its trash', async (t) => {
  const { root, store } = tempStore(t);
  const data = Buffer.from('moved away by a gc that was killed');
  const d = digestOf(data);
  await store.ingest(d, body(data));
  const trash = join(root, 'uploads', `.gc-${d.slice(7)}-0123456789abcdef`);
  const { renameSync } = await import('node:fs');
  renameSync(store.path(d), trash);
  t.equal(await store.stat(d), undefined);
  t.same(await store.gc(() => true, { graceMs: 0 }), { removed: 0, bytes: 0, purged: { uploads: 0, bytes: 0, sessions: [] } });
  t.same(await store.stat(d), { size: data.length }, 'restored, then kept because referenced');
  t.notOk(existsSync(trash));
});

t.test('verify re-hashes every blob and reports the corrupted one', async (t) => {
  const { store } = tempStore(t);
  const blobs = [randomBytes(10), randomBytes(3 * MiB + 1), randomBytes(70_000), Buffer.alloc(0)];
  for (const b of blobs) await store.ingest(digestOf(b), body(b));
  const victim = digestOf(blobs[1]!);
  const fd = openSync(store.path(victim), 'r+');
  writeSync(fd, Buffer.from([blobs[1]![2 * MiB]! ^ 0x01]), 0, 1, 2 * MiB);
  closeSync(fd);
  const report = await collect(store.verify());
  t.same(
    report.map((r) => [r.digest, r.ok, r.size]).sort(),
    blobs.map((b) => [digestOf(b), digestOf(b) !== victim, b.length]).sort(),
    'the corrupted blob is ok:false, the others ok:true',
  );
  t.equal(report.filter((r) => !r.ok).length, 1);
});
