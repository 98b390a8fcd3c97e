// The content store's files: every blob once, by digest, under
// <root>/blobs/sha256/<first 2 hex>/<hex>, and upload sessions as temporary
// files under <root>/uploads/. A blob reaches its final name only whole:
// written to a temporary file, its digest verified, fsynced, then renamed
// (atomic), and its directory fsynced. Nothing under blobs/ is ever partial.
//
// Several processes (cluster workers, proxyctl) may share one root. Nothing
// here needs in-process state to be correct: what an upload holds is what
// its note (upload-notes.ts) says is in the file in order and on disk, and
// the incremental hash kept per upload is an optimisation, used only when it
// provably covers the whole file (same inode, size and mtime as when it was
// last updated); otherwise the upload is re-hashed from disk at commit.
// Temporary names are unique, renames are atomic, and two commits of the same
// digest both succeed. Collection and verification: blob-gc.ts.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink, utimes, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { collectBlobs, purgeUploads, staleTemps, verifyBlobs, type BlobInfo, type PurgeResult, type StoreLayout, type VerifyResult } from './blob-gc.ts';
import { DigestMismatchError, SizeMismatchError } from './blob-errors.ts';
import { errno, fsyncDir, hexOf, MiB, seal, unlinkQuiet } from './store-files.ts';
import { UPLOAD_ID, UploadSessions, type UploadLock } from './upload-sessions.ts';
import { writeBody } from './write-pipeline.ts';

export * from './blob-errors.ts';

/** A one-shot temporary file of this store (see BlobStore.tempFile). */
export interface TempFile {
  name: string;
  path: string;
  fh: FileHandle;
}
export type { BlobInfo, PurgeResult, VerifyResult } from './blob-gc.ts';
export type { UploadLock } from './upload-sessions.ts';

const HEX64 = /^[0-9a-f]{64}$/;
/** Upload sessions and temporary files idle this long are abandoned, unless said otherwise. */
export const DEFAULT_UPLOAD_PURGE_MS = 60 * 60 * 1000;

export class BlobStore implements StoreLayout {
  readonly blobsDir: string;
  readonly uploadsDir: string;
  private readonly sessions: UploadSessions;
  /** One-shot temporary files (ingests) this process is writing. */
  private readonly temps = new Set<string>();

  /** `uploadLock`: makes each upload's operations exclusive across the processes sharing `root` (see UploadSessions). */
  constructor(
    readonly root: string,
    opts: { uploadLock?: UploadLock } = {},
  ) {
    this.blobsDir = join(root, 'blobs');
    this.uploadsDir = join(root, 'uploads');
    this.sessions = new UploadSessions(this.uploadsDir, (tmp, hex) => this.place(tmp, hex), opts.uploadLock);
  }

  /** Final path of a blob. Only `sha256:<64 lowercase hex>` digests are accepted. */
  path(digest: string): string {
    return this.blobPath(hexOf(digest));
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
  createUpload(uuid: string): Promise<void> {
    return this.sessions.create(uuid);
  }

  /** Bytes an upload holds in order and on disk (where a resumed PATCH starts); undefined when there is no such upload. */
  uploadSize(uuid: string): Promise<number | undefined> {
    return this.sessions.size(uuid);
  }

  /** Stream `body` to the end of the upload (see UploadSessions.append). Returns the new size. */
  append(uuid: string, body: Readable, opts: { start?: number; maxBytes?: number } = {}): Promise<number> {
    return this.sessions.append(uuid, body, opts);
  }

  /** Turn the upload into the blob `digest`, verified (see UploadSessions.commit). */
  commit(uuid: string, digest: string, opts: { expectedSize?: number } = {}): Promise<{ size: number }> {
    return this.sessions.commit(uuid, digest, opts);
  }

  /** Drop an upload session (no error if there is none). */
  cancel(uuid: string): Promise<void> {
    return this.sessions.cancel(uuid);
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
    hexOf(digest);
    const temp = await this.tempFile();
    try {
      return await this.fill(temp, digest, body, size === undefined ? {} : { size });
    } finally {
      await temp.fh.close();
    }
  }

  /**
   * A new one-shot temporary file under uploads/, open for reading and
   * writing, that the purge leaves alone while this process fills it. The
   * name is random: two processes fetching one digest never share a file.
   * The caller closes `fh` (after `fill`; others may read through it meanwhile).
   */
  async tempFile(): Promise<TempFile> {
    await mkdir(this.uploadsDir, { recursive: true });
    const name = `.ingest-${randomBytes(16).toString('hex')}`;
    const path = join(this.uploadsDir, name);
    this.temps.add(name);
    try {
      return { name, path, fh: await open(path, 'wx+') };
    } catch (err) {
      this.temps.delete(name);
      throw err;
    }
  }

  /**
   * Write `body` into a fresh temporary file, verify size and digest, fsync
   * and place it as the blob `digest`. `onLanded` hears how many bytes the
   * file holds after each write (readers may follow through `fh`). On any
   * failure the temporary file is removed; either way the purge may take it
   * once this settles. `fh` stays open.
   */
  async fill(temp: TempFile, digest: string, body: Readable, opts: { size?: number; onLanded?: (bytes: number) => void } = {}): Promise<{ size: number }> {
    const { size } = opts;
    try {
      const hex = hexOf(digest);
      const hash = createHash('sha256');
      const written = await writeBody(temp.fh, body, 0, {
        hash,
        ...(size !== undefined ? { limit: size } : {}),
        ...(opts.onLanded ? { onLanded: opts.onLanded } : {}),
        tooLarge: () => new SizeMismatchError(size ?? 0, (size ?? 0) + 1),
      });
      if (size !== undefined && written !== size) throw new SizeMismatchError(size, written);
      const actual = hash.digest('hex');
      if (actual !== hex) throw new DigestMismatchError(digest, `sha256:${actual}`);
      await seal(temp.fh);
      await this.place(temp.path, hex);
      return { size: written };
    } catch (err) {
      await unlinkQuiet(temp.path);
      throw err;
    } finally {
      this.temps.delete(temp.name);
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
   * committed more than `graceMs` ago, and the upload sessions and temporary
   * files idle for `uploadPurgeMs` (default 1 h) that no operation of this
   * process is on. Counts removed blobs and their bytes, and what was purged.
   */
  async gc(isReferenced: (digest: string) => boolean | Promise<boolean>, opts: { graceMs: number; uploadPurgeMs?: number }): Promise<{ removed: number; bytes: number; purged: PurgeResult }> {
    const blobs = await collectBlobs(this, isReferenced, opts.graceMs);
    const purged = await this.purgeUploads(opts.uploadPurgeMs ?? DEFAULT_UPLOAD_PURGE_MS);
    return { ...blobs, purged };
  }

  /** Remove upload sessions and temporary files idle for `olderThanMs` (the background purge; gc does it too). */
  purgeUploads(olderThanMs: number): Promise<PurgeResult> {
    return purgeUploads(this, olderThanMs);
  }

  /** Re-hash every stored blob; `ok` is false when its content does not match its name. */
  verify(): AsyncIterable<VerifyResult> {
    return verifyBlobs(this);
  }

  /** Upload sessions not written to for `olderThanMs`. */
  async abandonedUploads(olderThanMs: number): Promise<string[]> {
    return (await staleTemps(this, olderThanMs)).filter((name) => UPLOAD_ID.test(name));
  }

  // --- for blob-gc.ts ---

  blobPath(hex: string): string {
    return join(this.blobsDir, 'sha256', hex.slice(0, 2), hex);
  }

  sessionBusy(uuid: string): boolean {
    return this.sessions.busy(uuid);
  }

  tempBusy(name: string): boolean {
    return this.temps.has(name);
  }

  forget(uuid: string): void {
    this.sessions.forget(uuid);
  }

  exclusive<T>(uuid: string, fn: () => Promise<T>): Promise<T> {
    return this.sessions.exclusive(uuid, fn);
  }

  // --- helpers ---

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
}
