// The content store's files: every blob once, by digest, under
// <root>/blobs/sha256/<first 2 hex>/<hex>, and upload sessions as temporary
// files under <root>/uploads/. A blob reaches its final name only whole:
// written to a temporary file, its digest verified, fsynced, then renamed
// (atomic), and its directory fsynced. Nothing under blobs/ is ever partial.
//
// Several processes (cluster workers, proxyctl) may share one root. Nothing
// here needs in-process state to be correct: the incremental hash kept per
// upload is an optimisation, used only when it provably covers the whole file
// (same inode, size and mtime as when it was last updated); otherwise the
// temporary file is re-hashed from disk. Temporary names are unique, renames
// are atomic, and two commits of the same digest both succeed.
import { createHash, randomBytes, type Hash } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, open, readdir, readFile, rename, stat, unlink, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';

const MiB = 1024 * 1024;
/** Upload temp files untouched this long are abandoned; gc removes them. */
const ABANDONED_MS = 24 * 60 * 60 * 1000;
const SHA256_DIGEST = /^sha256:([0-9a-f]{64})$/;
const HEX64 = /^[0-9a-f]{64}$/;
const UPLOAD_ID = /^[0-9a-f-]{36}$/;
const DIGEST_NOTE = /^[0-9a-f-]{36}\.sha256$/;
/** Temporary files that are not upload sessions: one-shot ingests, claimed commits, gc's trash. */
const INGEST_TMP = /^\.ingest-[0-9a-f]{32}$/;
const COMMIT_TMP = /^\.commit-[0-9a-f-]{36}-[0-9a-f]{16}$/;
const GC_TRASH = /^\.gc-([0-9a-f]{64})-[0-9a-f]{16}$/;
/** At most this many in-memory upload hashes are kept (oldest dropped first). */
const MAX_HASH_STATES = 4096;

export class BlobStoreError extends Error {
  override readonly name: string = 'BlobStoreError';
}

/** A digest that is not `sha256:<64 lowercase hex>`. */
export class InvalidDigestError extends BlobStoreError {
  override readonly name: string = 'InvalidDigestError';
  constructor(readonly digest: string) {
    super(`unsupported or malformed digest '${digest}' (expected sha256:<64 lowercase hex>)`);
  }
}

/** createUpload with an id that is not a UUID. */
export class InvalidUploadIdError extends BlobStoreError {
  override readonly name: string = 'InvalidUploadIdError';
  constructor(readonly uuid: string) {
    super(`invalid upload id '${uuid}'`);
  }
}

/** No upload session of that id (never created, cancelled, committed or collected). */
export class UploadUnknownError extends BlobStoreError {
  override readonly name: string = 'UploadUnknownError';
  constructor(readonly uuid: string) {
    super(`upload ${uuid} is unknown`);
  }
}

/** createUpload of an id that already has a session. */
export class UploadExistsError extends BlobStoreError {
  override readonly name: string = 'UploadExistsError';
  constructor(readonly uuid: string) {
    super(`upload ${uuid} already exists`);
  }
}

/** An append whose `start` is not the upload's current size; `size` is that size (for a 416 and its Range). */
export class UploadRangeError extends BlobStoreError {
  override readonly name: string = 'UploadRangeError';
  constructor(
    readonly size: number,
    readonly start: number,
  ) {
    super(`chunk starts at ${start} but the upload holds ${size} bytes`);
  }
}

/** The content's digest is not the one claimed. */
export class DigestMismatchError extends BlobStoreError {
  override readonly name: string = 'DigestMismatchError';
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`content digest is ${actual}, not ${expected}`);
  }
}

/** The content's size is not the one claimed (`actual` is a lower bound when the body overran). */
export class SizeMismatchError extends BlobStoreError {
  override readonly name: string = 'SizeMismatchError';
  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super(`content is ${actual} bytes, not ${expected}`);
  }
}

/** An append body longer than its `maxBytes`. */
export class BodyTooLargeError extends BlobStoreError {
  override readonly name: string = 'BodyTooLargeError';
  constructor(readonly limit: number) {
    super(`body exceeds ${limit} bytes`);
  }
}

export interface BlobInfo {
  digest: string;
  size: number;
  mtimeMs: number;
}

export interface VerifyResult {
  digest: string;
  ok: boolean;
  size: number;
}

/**
 * The in-memory sha256 of an upload, valid only for the file it was computed
 * on (device, inode, birth time) as it was then (size, mtime).
 */
interface HashState extends FileId {
  hash: Hash;
}

type FileId = Pick<fs.BigIntStats, 'dev' | 'ino' | 'birthtimeNs' | 'size' | 'mtimeNs'>;

function fileId(st: fs.BigIntStats): FileId {
  return { dev: st.dev, ino: st.ino, birthtimeNs: st.birthtimeNs, size: st.size, mtimeNs: st.mtimeNs };
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Ignore ENOENT: the file is gone, which is what we wanted or what another process already did. */
async function unlinkQuiet(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (errno(err) !== 'ENOENT') throw err;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** sha256 of an open file from offset 0 to its end, read 1 MiB at a time. */
async function hashHandle(fh: FileHandle): Promise<{ hex: string; size: number }> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(MiB);
  let size = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, buf.length, size);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    size += bytesRead;
  }
  return { hex: hash.digest('hex'), size };
}

/**
 * Write `body` to `fh` from `position` on, feeding `hash`; never more than
 * `limit` bytes (`tooLarge` is thrown before writing past it). Returns the
 * number of bytes written. A body error is rethrown as is. When this fails for
 * another reason the body is left as it is, not destroyed: its owner decides
 * (an HTTP handler still has to answer 416/413/400 on that connection).
 */
async function writeBody(fh: FileHandle, body: Readable, position: number, hash: Hash | undefined, limit: number | undefined, tooLarge: () => Error): Promise<number> {
  let written = 0;
  // Positional writes of successive chunks run in the thread pool while the
  // next chunk is hashed here: at most WRITES_IN_FLIGHT_BYTES outstanding.
  const inflight: Array<{ done: Promise<void>; bytes: number }> = [];
  let inflightBytes = 0;
  let failure: unknown;
  const settleOldest = async () => {
    const first = inflight.shift()!;
    inflightBytes -= first.bytes;
    await first.done;
  };
  // Write-behind: flush what has arrived while the rest is still coming, so
  // the fsync at commit is short instead of writing a whole blob back at once.
  let flushing: Promise<void> | undefined;
  let unflushed = 0;
  const chunks: AsyncIterable<Buffer | string> = typeof body.iterator === 'function' ? body.iterator({ destroyOnReturn: false }) : body;
  try {
    for await (const chunk of chunks) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (limit !== undefined && written + buf.length > limit) throw tooLarge();
      const done = writeFully(fh, buf, position + written);
      // Observed now so a failure is never unhandled; rethrown in order below.
      done.catch((err: unknown) => (failure ??= err));
      inflight.push({ done, bytes: buf.length });
      inflightBytes += buf.length;
      hash?.update(buf);
      written += buf.length;
      unflushed += buf.length;
      while (inflightBytes > WRITES_IN_FLIGHT_BYTES) await settleOldest();
      if (unflushed >= WRITE_BEHIND_BYTES && !flushing) {
        unflushed = 0;
        flushing = fh.datasync().finally(() => (flushing = undefined));
      }
    }
    while (inflight.length > 0) await settleOldest();
  } finally {
    // Never leave a write or a flush running on a handle the caller is about to close.
    await Promise.allSettled(inflight.map((w) => w.done));
    await flushing?.catch(() => undefined);
  }
  if (failure !== undefined) throw failure;
  return written;
}

async function writeFully(fh: FileHandle, buf: Buffer, at: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, at + off);
    off += bytesWritten;
  }
}

/** Bytes written between two write-behind flushes. */
const WRITE_BEHIND_BYTES = 32 * MiB;
/** Bytes handed to the thread pool and not yet written. */
const WRITES_IN_FLIGHT_BYTES = 4 * MiB;

function sameFile(a: FileId, b: FileId): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.birthtimeNs === b.birthtimeNs && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

function randomSuffix(): string {
  return randomBytes(8).toString('hex');
}

export class BlobStore {
  private readonly blobsDir: string;
  private readonly uploadsDir: string;
  /** Incremental hashes of uploads appended by this process (an optimisation only). */
  private readonly hashes = new Map<string, HashState>();
  /** Operations on one upload run one at a time within this process. */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(readonly root: string) {
    this.blobsDir = join(root, 'blobs');
    this.uploadsDir = join(root, 'uploads');
  }

  /** Final path of a blob. Only `sha256:<64 lowercase hex>` digests are accepted. */
  path(digest: string): string {
    return this.blobPath(this.hexOf(digest));
  }

  async stat(digest: string): Promise<{ size: number } | undefined> {
    try {
      const st = await stat(this.path(digest));
      return st.isFile() ? { size: st.size } : undefined;
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined;
      throw err;
    }
  }

  /**
   * The blob's bytes, or `range.start`..`range.end` (inclusive) of them. A
   * missing blob is reported as an ENOENT error on the stream; the caller
   * checks `stat()` first and keeps the range within the size.
   */
  read(digest: string, range?: { start: number; end: number }): fs.ReadStream {
    const path = this.path(digest);
    if (range !== undefined) {
      const { start, end } = range;
      if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
        throw new RangeError(`invalid byte range ${start}-${end}`);
      }
      return fs.createReadStream(path, { start, end, highWaterMark: MiB });
    }
    return fs.createReadStream(path, { highWaterMark: MiB });
  }

  /** Open an upload session: an empty temporary file named by the UUID. */
  async createUpload(uuid: string): Promise<void> {
    if (!UPLOAD_ID.test(uuid)) throw new InvalidUploadIdError(uuid);
    await mkdir(this.uploadsDir, { recursive: true });
    await this.exclusive(uuid, async () => {
      this.hashes.delete(uuid);
      await unlinkQuiet(this.digestNotePath(uuid));
      let fh: FileHandle;
      try {
        fh = await open(this.uploadPath(uuid), 'wx');
      } catch (err) {
        if (errno(err) === 'EEXIST') throw new UploadExistsError(uuid);
        throw err;
      }
      try {
        const st = await fh.stat({ bigint: true });
        this.remember(uuid, { hash: createHash('sha256'), ...fileId(st) });
      } finally {
        await fh.close();
      }
    });
  }

  /** Bytes received so far by an upload; undefined when there is no such upload. */
  async uploadSize(uuid: string): Promise<number | undefined> {
    if (!UPLOAD_ID.test(uuid)) return undefined;
    try {
      return (await stat(this.uploadPath(uuid))).size;
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined;
      throw err;
    }
  }

  /**
   * Stream `body` to the end of the upload. With `start`, it must equal the
   * current size (else UploadRangeError carrying that size, nothing written).
   * `maxBytes` bounds this body (BodyTooLargeError). On any failure the
   * upload is truncated back to its size before this call, and the error
   * rethrown. Returns the new size.
   */
  async append(uuid: string, body: Readable, opts: { start?: number; maxBytes?: number } = {}): Promise<number> {
    if (!UPLOAD_ID.test(uuid)) throw new UploadUnknownError(uuid);
    return this.exclusive(uuid, async () => {
      let fh: FileHandle;
      try {
        fh = await open(this.uploadPath(uuid), 'r+');
      } catch (err) {
        if (errno(err) === 'ENOENT') throw new UploadUnknownError(uuid);
        throw err;
      }
      try {
        const before = await fh.stat({ bigint: true });
        const size = Number(before.size);
        if (opts.start !== undefined && opts.start !== size) throw new UploadRangeError(size, opts.start);
        // Continue the in-memory hash only if it covers exactly this file as it
        // is now (an empty file is trivially covered); else commit re-hashes from disk.
        const state = this.hashes.get(uuid);
        const base = state !== undefined && sameFile(state, before) ? state.hash : size === 0 ? createHash('sha256') : undefined;
        if (base === undefined) this.hashes.delete(uuid);
        const hash = base?.copy();
        let written: number;
        try {
          written = await writeBody(fh, body, size, hash, opts.maxBytes, () => new BodyTooLargeError(opts.maxBytes ?? 0));
        } catch (err) {
          try {
            await fh.truncate(size);
          } catch {
            this.hashes.delete(uuid);
            throw err; // the body's error is the one to report; commit re-hashes whatever is left
          }
          if (base !== undefined) {
            // The file holds the same bytes as before again; the saved hash still covers it.
            const after = await fh.stat({ bigint: true });
            this.remember(uuid, { hash: base, ...fileId(after) });
          }
          throw err;
        }
        if (hash !== undefined) {
          const after = await fh.stat({ bigint: true });
          if (after.size === BigInt(size + written)) {
            this.remember(uuid, { hash, ...fileId(after) });
            await this.writeDigestNote(uuid, hash, after);
          } else this.hashes.delete(uuid); // someone else wrote too: re-hash from disk at commit
        }
        return size + written;
      } finally {
        await fh.close();
      }
    });
  }

  /**
   * Turn the upload into the blob `digest`. The upload is claimed first (renamed
   * away, so no other request can append to it), its whole content hashed (in
   * memory if this process hashed all of it, else from disk) and compared; on
   * a mismatch of digest or `expectedSize` the upload is deleted (the session
   * is over) and DigestMismatchError / SizeMismatchError thrown. Otherwise it
   * is fsynced and renamed into place (or dropped if the blob already exists).
   */
  async commit(uuid: string, digest: string, opts: { expectedSize?: number } = {}): Promise<{ size: number }> {
    const hex = this.hexOf(digest);
    if (!UPLOAD_ID.test(uuid)) throw new UploadUnknownError(uuid);
    return this.exclusive(uuid, async () => {
      const claimed = join(this.uploadsDir, `.commit-${uuid}-${randomSuffix()}`);
      try {
        await rename(this.uploadPath(uuid), claimed);
      } catch (err) {
        if (errno(err) === 'ENOENT') throw new UploadUnknownError(uuid);
        throw err;
      }
      const state = this.hashes.get(uuid);
      this.hashes.delete(uuid);
      try {
        const fh = await open(claimed, 'r+');
        let size: number;
        try {
          const st = await fh.stat({ bigint: true });
          size = Number(st.size);
          const noted = await this.readDigestNote(uuid, st);
          if (opts.expectedSize !== undefined && opts.expectedSize !== size) throw new SizeMismatchError(opts.expectedSize, size);
          let actual: string;
          if (state !== undefined && sameFile(state, st)) {
            actual = state.hash.digest('hex');
          } else if (noted !== undefined) {
            actual = noted;
          } else {
            const hashed = await hashHandle(fh);
            if (hashed.size !== size) throw new BlobStoreError(`upload ${uuid} changed while it was committed`);
            actual = hashed.hex;
          }
          if (actual !== hex) throw new DigestMismatchError(digest, `sha256:${actual}`);
          await this.seal(fh);
          if (Number((await fh.stat()).size) !== size) throw new BlobStoreError(`upload ${uuid} changed while it was committed`);
        } finally {
          await fh.close();
        }
        await this.place(claimed, hex);
        return { size };
      } catch (err) {
        await unlinkQuiet(claimed);
        throw err;
      }
    });
  }

  /** Drop an upload session (no error if there is none). */
  async cancel(uuid: string): Promise<void> {
    if (!UPLOAD_ID.test(uuid)) return;
    await this.exclusive(uuid, async () => {
      this.hashes.delete(uuid);
      await unlinkQuiet(this.uploadPath(uuid));
      await unlinkQuiet(this.digestNotePath(uuid));
    });
  }

  /** Delete a blob; false when there was none. */
  async delete(digest: string): Promise<boolean> {
    try {
      await unlink(this.path(digest));
      return true;
    } catch (err) {
      if (errno(err) === 'ENOENT') return false;
      throw err;
    }
  }

  /**
   * Store `body` as the blob `digest` in one go (monolithic uploads, blobs
   * streamed through from an upstream): temporary file, verify size and
   * digest, fsync, rename. On any failure nothing is left behind.
   */
  async ingest(digest: string, body: Readable, size?: number): Promise<{ size: number }> {
    const hex = this.hexOf(digest);
    await mkdir(this.uploadsDir, { recursive: true });
    const tmp = join(this.uploadsDir, `.ingest-${randomBytes(16).toString('hex')}`);
    const fh = await open(tmp, 'wx');
    try {
      let written: number;
      try {
        const hash = createHash('sha256');
        written = await writeBody(fh, body, 0, hash, size, () => new SizeMismatchError(size ?? 0, (size ?? 0) + 1));
        if (size !== undefined && written !== size) throw new SizeMismatchError(size, written);
        const actual = hash.digest('hex');
        if (actual !== hex) throw new DigestMismatchError(digest, `sha256:${actual}`);
        await this.seal(fh);
      } finally {
        await fh.close();
      }
      await this.place(tmp, hex);
      return { size: written };
    } catch (err) {
      await unlinkQuiet(tmp);
      throw err;
    }
  }

  /** Every complete blob, in digest order. Blobs removed while listing are skipped. */
  async *list(): AsyncIterable<BlobInfo> {
    const algDir = join(this.blobsDir, 'sha256');
    let prefixes: string[];
    try {
      prefixes = await readdir(algDir);
    } catch (err) {
      if (errno(err) === 'ENOENT') return;
      throw err;
    }
    for (const prefix of prefixes.sort()) {
      if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
      let names: string[];
      try {
        names = await readdir(join(algDir, prefix));
      } catch (err) {
        if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') continue;
        throw err;
      }
      for (const name of names.sort()) {
        if (!HEX64.test(name) || !name.startsWith(prefix)) continue;
        try {
          const st = await stat(join(algDir, prefix, name));
          if (st.isFile()) yield { digest: `sha256:${name}`, size: st.size, mtimeMs: st.mtimeMs };
        } catch (err) {
          if (errno(err) !== 'ENOENT') throw err;
        }
      }
    }
  }

  /**
   * Delete the blobs that are not referenced and were last written or
   * committed more than `graceMs` ago, and the upload temporary files nobody
   * touched for 24 hours. Safe while uploads run and while other processes
   * commit: a candidate is first renamed into uploads/ and checked again; a
   * commit that touched it meanwhile (or a reference that appeared) puts it
   * back. Counts removed blobs and their bytes.
   */
  async gc(isReferenced: (digest: string) => boolean, opts: { graceMs: number }): Promise<{ removed: number; bytes: number }> {
    await mkdir(this.uploadsDir, { recursive: true });
    await this.restoreTrash();
    const cutoff = Date.now() - opts.graceMs;
    let removed = 0;
    let bytes = 0;
    for await (const blob of this.list()) {
      if (blob.mtimeMs >= cutoff || isReferenced(blob.digest)) continue;
      const hex = blob.digest.slice('sha256:'.length);
      const final = this.blobPath(hex);
      const trash = join(this.uploadsDir, `.gc-${hex}-${randomSuffix()}`);
      try {
        await rename(final, trash);
      } catch (err) {
        if (errno(err) === 'ENOENT') continue;
        throw err;
      }
      let st: fs.Stats;
      try {
        st = await stat(trash);
      } catch (err) {
        if (errno(err) === 'ENOENT') continue; // another gc put it back
        throw err;
      }
      let keep: boolean;
      try {
        keep = st.mtimeMs >= cutoff || isReferenced(blob.digest);
      } catch (err) {
        await this.untrash(trash, final);
        throw err;
      }
      if (keep) {
        await this.untrash(trash, final);
        continue;
      }
      try {
        await unlink(trash);
      } catch (err) {
        if (errno(err) === 'ENOENT') continue;
        throw err;
      }
      removed++;
      bytes += st.size;
    }
    await this.removeAbandoned(ABANDONED_MS);
    return { removed, bytes };
  }

  /** Re-hash every stored blob; `ok` is false when its content does not match its name. */
  async *verify(): AsyncIterable<VerifyResult> {
    for await (const blob of this.list()) {
      let fh: FileHandle;
      try {
        fh = await open(this.blobPath(blob.digest.slice('sha256:'.length)), 'r');
      } catch (err) {
        if (errno(err) === 'ENOENT') continue;
        throw err;
      }
      try {
        const { hex, size } = await hashHandle(fh);
        yield { digest: blob.digest, ok: `sha256:${hex}` === blob.digest, size };
      } finally {
        await fh.close();
      }
    }
  }

  /** Upload sessions not written to for `olderThanMs`. */
  async abandonedUploads(olderThanMs: number): Promise<string[]> {
    return (await this.staleTemps(olderThanMs)).filter((name) => UPLOAD_ID.test(name)).sort();
  }

  // --- helpers ---

  private hexOf(digest: string): string {
    const m = SHA256_DIGEST.exec(digest);
    if (!m) throw new InvalidDigestError(digest);
    return m[1]!;
  }

  private blobPath(hex: string): string {
    return join(this.blobsDir, 'sha256', hex.slice(0, 2), hex);
  }

  private uploadPath(uuid: string): string {
    return join(this.uploadsDir, uuid);
  }

  private digestNotePath(uuid: string): string {
    return join(this.uploadsDir, `${uuid}.sha256`);
  }

  /**
   * Workers share uploads but not memory: a PATCH on one and the PUT on
   * another would re-hash the whole upload at commit. So the digest of the
   * upload as this process left it is noted next to it, with the file's
   * identity; commit trusts the note only for exactly that file.
   */
  private async writeDigestNote(uuid: string, hash: Hash, st: fs.BigIntStats): Promise<void> {
    const id = fileId(st);
    const note = { hex: hash.copy().digest('hex'), ...Object.fromEntries(Object.entries(id).map(([k, v]) => [k, String(v)])) };
    await writeFile(this.digestNotePath(uuid), JSON.stringify(note)).catch(() => undefined);
  }

  /** The noted digest of the claimed upload, if the note describes this very file. */
  private async readDigestNote(uuid: string, st: fs.BigIntStats): Promise<string | undefined> {
    const path = this.digestNotePath(uuid);
    try {
      const note = JSON.parse(await readFile(path, 'utf8')) as Record<string, string>;
      const id = fileId(st);
      const same = Object.entries(id).every(([k, v]) => note[k] === String(v));
      return same && /^[a-f0-9]{64}$/.test(note.hex ?? '') ? note.hex : undefined;
    } catch {
      return undefined;
    } finally {
      await unlinkQuiet(path);
    }
  }

  private remember(uuid: string, state: HashState): void {
    this.hashes.delete(uuid);
    this.hashes.set(uuid, state);
    if (this.hashes.size > MAX_HASH_STATES) {
      const oldest = this.hashes.keys().next().value;
      if (oldest !== undefined) this.hashes.delete(oldest);
    }
  }

  /** Run `fn` after every earlier operation on `key` in this process has settled. */
  private async exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }

  /** A verified temporary file: mtime now (the gc grace period starts at commit), then fsync. */
  private async seal(fh: FileHandle): Promise<void> {
    const now = new Date();
    await fh.utimes(now, now);
    await fh.sync();
  }

  /**
   * Move a verified, fsynced temporary file to the blob's final name and
   * fsync the directory. If the blob exists, its mtime is set to now (so gc's
   * grace period protects it as a fresh commit) and the temporary file is
   * dropped; if gc moved it away meanwhile, ours takes its place.
   */
  private async place(tmp: string, hex: string): Promise<void> {
    const final = this.blobPath(hex);
    const dir = dirname(final);
    const created = await mkdir(dir, { recursive: true });
    const now = new Date();
    try {
      await utimes(final, now, now);
      await unlinkQuiet(tmp);
      return;
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
    await rename(tmp, final);
    await fsyncDir(dir);
    if (created !== undefined) {
      // New directories must survive a power loss too: fsync their parents.
      await fsyncDir(join(this.blobsDir, 'sha256'));
      await fsyncDir(this.blobsDir);
      await fsyncDir(this.root);
    }
  }

  /** Put a blob gc moved away back in place (or drop the copy if the blob is there again). */
  private async untrash(trash: string, final: string): Promise<void> {
    try {
      await stat(final);
      await unlinkQuiet(trash);
      return;
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
    await mkdir(dirname(final), { recursive: true });
    try {
      await rename(trash, final); // same content: replacing a copy committed meanwhile is harmless
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
  }

  /** Blobs left in uploads/ by a gc that was killed before deciding go back in place to be judged again. */
  private async restoreTrash(): Promise<void> {
    for (const name of await readdir(this.uploadsDir)) {
      const m = GC_TRASH.exec(name);
      if (m) await this.untrash(join(this.uploadsDir, name), this.blobPath(m[1]!));
    }
  }

  /** Names in uploads/ of temporary files (sessions, ingests, claimed commits) untouched for `olderThanMs`. */
  private async staleTemps(olderThanMs: number): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.uploadsDir);
    } catch (err) {
      if (errno(err) === 'ENOENT') return [];
      throw err;
    }
    const cutoff = Date.now() - olderThanMs;
    const stale: string[] = [];
    for (const name of names) {
      if (!UPLOAD_ID.test(name) && !DIGEST_NOTE.test(name) && !INGEST_TMP.test(name) && !COMMIT_TMP.test(name)) continue;
      // A digest note lives and dies with its upload.
      const judged = DIGEST_NOTE.test(name) ? name.slice(0, -'.sha256'.length) : name;
      try {
        if ((await stat(join(this.uploadsDir, judged))).mtimeMs < cutoff) stale.push(name);
      } catch (err) {
        if (errno(err) !== 'ENOENT') throw err;
        if (judged !== name) stale.push(name);
      }
    }
    return stale;
  }

  private async removeAbandoned(olderThanMs: number): Promise<void> {
    for (const name of await this.staleTemps(olderThanMs)) {
      if (UPLOAD_ID.test(name)) this.hashes.delete(name);
      await unlinkQuiet(join(this.uploadsDir, name));
    }
  }
}
