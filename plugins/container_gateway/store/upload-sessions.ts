// Upload sessions of the content store: a temporary file per session under
// uploads/, named by its UUID, appended to in order (write-pipeline.ts), with
// a note beside it saying how much of it is in order and on disk
// (upload-notes.ts), then committed into a blob: claimed (renamed away),
// verified against its digest, and placed by the store.
//
// Operations on one session run one at a time: queued within this process,
// and, across processes that share the storage (nodes behind a load
// balancer), under a lock the gateway passes in (an advisory lock of the
// shared database). An operation that finds the session locked by another
// process fails at once (UploadBusyError): waiting would hold the request,
// and the database session the locks are taken on, for as long as the
// other's body takes to arrive.
import { createHash, type Hash } from 'node:crypto';
import type fs from 'node:fs';
import { mkdir, open, rename, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { BlobStoreError, BodyTooLargeError, DigestMismatchError, InvalidUploadIdError, SizeMismatchError, UploadBusyError, UploadExistsError, UploadRangeError, UploadUnknownError } from './blob-errors.ts';
import { errno, hexOf, randomSuffix, seal, unlinkQuiet } from './store-files.ts';
import { fileId, sameFile, UploadNotes, type FileId } from './upload-notes.ts';
import { hashHandle, writeBody } from './write-pipeline.ts';

export const UPLOAD_ID = /^[0-9a-f-]{36}$/;
/** At most this many in-memory upload hashes are kept (oldest dropped first). */
const MAX_HASH_STATES = 4096;

/**
 * Runs `fn` holding the lock of upload `uuid` across the processes sharing
 * the storage, unless another holds it: then `{locked: false}` at once.
 */
export type UploadLock = <T>(uuid: string, fn: () => Promise<T>) => Promise<{ readonly locked: true; readonly value: T } | { readonly locked: false }>;

/**
 * The in-memory sha256 of an upload, valid only for the file it was computed
 * on (device, inode, birth time) as it was then (size, mtime).
 */
interface HashState extends FileId {
  hash: Hash;
}

export class UploadSessions {
  private readonly notes: UploadNotes;
  /** Incremental hashes of uploads appended by this process (an optimisation only). */
  private readonly hashes = new Map<string, HashState>();
  /** Operations on one upload run one at a time within this process. */
  private readonly locks = new Map<string, Promise<unknown>>();

  /** `place`: move a verified, fsynced temporary file to the blob `hex`; `lock`: see UploadLock (none: this process only). */
  constructor(
    private readonly uploadsDir: string,
    private readonly place: (tmp: string, hex: string) => Promise<void>,
    private readonly lock?: UploadLock,
  ) {
    this.notes = new UploadNotes(uploadsDir);
  }

  /** Open an upload session: an empty temporary file named by the UUID. */
  async create(uuid: string): Promise<void> {
    if (!UPLOAD_ID.test(uuid)) throw new InvalidUploadIdError(uuid);
    await mkdir(this.uploadsDir, { recursive: true });
    await this.exclusive(uuid, async () => {
      this.hashes.delete(uuid);
      await this.notes.remove(uuid);
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

  /**
   * Bytes an upload holds in order and on disk (what a resumed PATCH must
   * start from); undefined when there is no such upload. After a crash this
   * may be less than the file's size: the rest is dropped by the next append.
   */
  async size(uuid: string): Promise<number | undefined> {
    if (!UPLOAD_ID.test(uuid)) return undefined;
    let st: fs.BigIntStats;
    try {
      st = await stat(this.uploadPath(uuid), { bigint: true });
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined;
      throw err;
    }
    return (await this.notes.settle(uuid, st)).size;
  }

  /**
   * Stream `body` to the end of the upload. With `start`, it must equal the
   * upload's size (uploadSize; else UploadRangeError carrying that size,
   * nothing written). `maxBytes` bounds this body (BodyTooLargeError). On any
   * failure the upload is truncated back to its size before this call, and
   * the error rethrown. Returns the new size, flushed to disk.
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
        let before = await fh.stat({ bigint: true });
        const { size } = await this.notes.settle(uuid, before);
        if (opts.start !== undefined && opts.start !== size) throw new UploadRangeError(size, opts.start);
        if (BigInt(size) !== before.size) {
          // Bytes past what is known to be in order (a crash mid-append): dropped.
          await fh.truncate(size);
          before = await fh.stat({ bigint: true });
        }
        // Continue the in-memory hash only if it covers exactly this file as it
        // is now (an empty file is trivially covered); else commit re-hashes from disk.
        const state = this.hashes.get(uuid);
        const base = state !== undefined && sameFile(state, before) ? state.hash : size === 0 ? createHash('sha256') : undefined;
        if (base === undefined) this.hashes.delete(uuid);
        const hash = base?.copy();
        let written: number;
        try {
          written = await writeBody(fh, body, size, {
            ...(hash ? { hash } : {}),
            ...(opts.maxBytes !== undefined ? { limit: opts.maxBytes } : {}),
            tooLarge: () => new BodyTooLargeError(opts.maxBytes ?? 0),
            onDurable: (bytes) => this.notes.write(uuid, { durable: size + bytes }),
          });
          await fh.datasync();
        } catch (err) {
          try {
            await fh.truncate(size);
            await fh.datasync();
          } catch {
            this.hashes.delete(uuid);
            throw err; // the body's error is the one to report; the note still bounds what counts
          }
          const after = await fh.stat({ bigint: true });
          // The file holds the same bytes as before again; a saved hash still covers it.
          if (base !== undefined) this.remember(uuid, { hash: base, ...fileId(after) });
          await this.notes.write(uuid, { durable: size, file: fileId(after), ...(base ? { hex: base.copy().digest('hex') } : {}) });
          throw err;
        }
        const after = await fh.stat({ bigint: true });
        const whole = after.size === BigInt(size + written);
        if (hash !== undefined && whole) this.remember(uuid, { hash, ...fileId(after) });
        else this.hashes.delete(uuid); // someone else wrote too: re-hash from disk at commit
        await this.notes.write(uuid, { durable: size + written, file: fileId(after), ...(hash && whole ? { hex: hash.copy().digest('hex') } : {}) });
        return size + written;
      } finally {
        await fh.close();
      }
    });
  }

  /**
   * Turn the upload into the blob `digest`. The upload is claimed first (renamed
   * away, so no other request can append to it), what it holds in order (its
   * note) is hashed (in memory if this process hashed all of it, else from
   * disk) and compared; on a mismatch of digest or `expectedSize` the upload
   * is deleted (the session is over) and DigestMismatchError /
   * SizeMismatchError thrown. Otherwise it is fsynced and renamed into place
   * (or dropped if the blob already exists).
   */
  async commit(uuid: string, digest: string, opts: { expectedSize?: number } = {}): Promise<{ size: number }> {
    const hex = hexOf(digest);
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
          const settled = await this.notes.settle(uuid, st);
          const inMemory = state !== undefined && sameFile(state, st) ? state.hash : undefined;
          // Claimed now: its mtime too, so no purge elsewhere takes it for abandoned mid-commit.
          const now = new Date();
          await fh.utimes(now, now);
          await this.notes.remove(uuid);
          size = settled.size;
          if (BigInt(size) !== st.size) await fh.truncate(size); // bytes not known to be in order: not part of the blob
          if (opts.expectedSize !== undefined && opts.expectedSize !== size) throw new SizeMismatchError(opts.expectedSize, size);
          let actual: string;
          if (inMemory !== undefined) {
            actual = inMemory.digest('hex');
          } else if (settled.hex !== undefined) {
            actual = settled.hex;
          } else {
            const hashed = await hashHandle(fh);
            if (hashed.size !== size) throw new BlobStoreError(`upload ${uuid} changed while it was committed`);
            actual = hashed.hex;
          }
          if (actual !== hex) throw new DigestMismatchError(digest, `sha256:${actual}`);
          await seal(fh);
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
      await this.notes.remove(uuid);
    });
  }

  /** An operation of this process is on this session right now. */
  busy(uuid: string): boolean {
    return this.locks.has(uuid);
  }

  /** The session is gone: drop what this process remembers of it. */
  forget(uuid: string): void {
    this.hashes.delete(uuid);
  }

  /**
   * Run `fn` after every earlier operation on `key` in this process has
   * settled, holding the upload's lock across processes (UploadBusyError when
   * another process holds it).
   */
  async exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    const guarded = this.lock ? () => this.acrossProcesses(key, fn) : fn;
    const run = previous.then(guarded, guarded);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }

  private async acrossProcesses<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const held = await this.lock!(key, fn);
    if (!held.locked) throw new UploadBusyError(key);
    return held.value;
  }

  private uploadPath(uuid: string): string {
    return join(this.uploadsDir, uuid);
  }

  private remember(uuid: string, state: HashState): void {
    this.hashes.delete(uuid);
    this.hashes.set(uuid, state);
    if (this.hashes.size > MAX_HASH_STATES) {
      const oldest = this.hashes.keys().next().value;
      if (oldest !== undefined) this.hashes.delete(oldest);
    }
  }
}
