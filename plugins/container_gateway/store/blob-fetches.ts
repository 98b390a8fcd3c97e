// One upstream download per blob digest in this process, however many ask at
// once (on-demand reads and sync alike). The bytes go to a temporary file of
// the store as they arrive, and every requester reads that file as it grows
// (blob-follow.ts): a late joiner gets what is already written at disk speed,
// then follows. Memory stays bounded whatever the size: nothing but the
// write pipeline's queue and each reader's own buffer is held. At the end the
// store verifies the digest and places the file atomically (BlobStore.fill);
// a failure stores nothing and destroys every reader with the error. A
// reader going away never stops the download: the blob is kept for the
// others and the next pull. Downloads run within a bound (the rest queue).
// Across processes nothing is shared: each has its own temporary file (a
// random name), and the store's atomic placement makes a double download
// harmless; a killed process leaves at most a temporary file the purge takes.
import type http from 'node:http';
import { open as openFile, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { BlobStore } from './blob-store.ts';
import { BlobFollower, type GrowingBlob } from './blob-follow.ts';
import { errno, hexOf } from './store-files.ts';

/** Starts the upstream request of a blob: resolves with the response head (body not read). */
export type OpenBlob = () => Promise<http.IncomingMessage>;

/** The upstream did not give the blob: `status` is its answer when it answered something other than 200. */
export class BlobFetchError extends Error {
  override readonly name = 'BlobFetchError';
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** Upstream downloads at once, unless told otherwise. */
export const DEFAULT_FETCH_LIMIT = 8;

/** At most `limit` holders at once; the others wait in order. */
class Slots {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async acquire(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

type State = 'waiting' | 'running' | 'done' | 'failed';

function settled<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => undefined); // nobody may be listening: not an unhandled rejection
  return { promise, resolve, reject };
}

/** One blob coming from upstream (or found in the store), shared by whoever reads it. */
export class BlobFetch implements GrowingBlob {
  state: State = 'waiting';
  /** The blob's size once known (Content-Length, or at the end). */
  size: number | undefined;
  /** Bytes the file holds from offset 0. */
  landed = 0;
  error: unknown;
  /** Resolves with the size (when known) once bytes are coming; rejects when the fetch could not start. */
  readonly ready: Promise<{ size: number | undefined }>;
  /** Resolves once verified and placed in the store (`downloaded`: 0 when the store had it); rejects on any failure. */
  readonly done: Promise<{ size: number; downloaded: number }>;
  private readonly readyP = settled<{ size: number | undefined }>();
  private readonly doneP = settled<{ size: number; downloaded: number }>();
  private fh: FileHandle | undefined;
  /** Holders of `fh`: the writer and each reader on it; closed at 0. */
  private refs = 0;
  private readonly followers = new Set<BlobFollower>();
  private readonly watchers = new Set<(landed: number) => void>();
  private wake = settled<void>();
  private body: http.IncomingMessage | undefined;
  private aborted: Error | undefined;

  constructor(
    readonly digest: string,
    private readonly blobs: BlobStore,
  ) {
    this.ready = this.readyP.promise;
    this.done = this.doneP.promise;
  }

  /**
   * The blob's bytes, or `range` of them (inclusive, within the size), as they
   * arrive. The end of the blob is given only once it is verified (its last
   * byte is held back until then), so a client never sees a complete body
   * that is wrong. A failure destroys the stream with the error.
   */
  read(range?: { start: number; end: number }): Readable {
    return new BlobFollower(this, range);
  }

  /** Hear the bytes landed so far after each write; returns the unsubscribe. */
  watch(fn: (landed: number) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  /** Bytes a reader may be given now (see read). */
  available(): number {
    if (this.state === 'done') return this.landed;
    if (this.state !== 'running') return 0;
    return this.size !== undefined ? Math.min(this.landed, this.size - 1) : this.landed;
  }

  /** Resolves at the next change (bytes landed, done, failed). */
  changed(): Promise<void> {
    return this.wake.promise;
  }

  // --- for BlobFollower ---

  /** The shared file handle, counted, or undefined once it is closed (the blob is then at its final path). */
  acquire(follower: BlobFollower): FileHandle | undefined {
    if (!this.fh || this.state === 'failed') return undefined;
    this.refs++;
    this.followers.add(follower);
    return this.fh;
  }

  release(follower: BlobFollower): void {
    if (this.followers.delete(follower)) this.unref();
  }

  /** Open the placed blob (for a reader that came after the shared handle closed). */
  openPlaced(): Promise<FileHandle> {
    return openFile(this.blobs.path(this.digest), 'r');
  }

  // --- for BlobFetches ---

  /** Stop a download in flight (the daemon stops): it fails like a broken upstream. */
  abort(err: Error): void {
    this.aborted ??= err;
    this.body?.destroy(err);
  }

  async run(open: OpenBlob, slots: Slots, expected: number | undefined): Promise<void> {
    try {
      if (await this.fromStore()) return;
      await slots.acquire();
      try {
        if (await this.fromStore()) return;
        if (this.aborted) throw this.aborted;
        await this.download(open, expected);
      } finally {
        slots.release();
      }
    } catch (err) {
      this.fail(err);
    }
  }

  /** The store has the blob (another process or an earlier fetch placed it): serve that, download nothing. */
  private async fromStore(): Promise<boolean> {
    let fh: FileHandle;
    try {
      fh = await this.openPlaced();
    } catch (err) {
      if (errno(err) === 'ENOENT') return false;
      throw err;
    }
    const { size } = await fh.stat();
    this.fh = fh;
    this.refs++;
    this.size = size;
    this.landed = size;
    this.state = 'done';
    this.readyP.resolve({ size });
    this.doneP.resolve({ size, downloaded: 0 });
    this.notify();
    this.unref();
    return true;
  }

  private async download(open: OpenBlob, expected: number | undefined): Promise<void> {
    const res = await open();
    if (this.aborted) {
      res.destroy();
      throw this.aborted;
    }
    if (res.statusCode !== 200) {
      res.resume();
      throw new BlobFetchError(`the upstream answered ${res.statusCode} for ${this.digest}`, res.statusCode);
    }
    const header = res.headers['content-length'];
    const length = header === undefined ? undefined : Number(header);
    if (length !== undefined && (!Number.isSafeInteger(length) || (expected !== undefined && length !== expected))) {
      res.destroy();
      throw new BlobFetchError(`the upstream sends ${header} bytes of ${this.digest}, ${expected ?? 'a number'} expected`);
    }
    this.body = res;
    const temp = await this.blobs.tempFile().catch((err: unknown) => {
      res.destroy();
      throw err;
    });
    this.fh = temp.fh;
    this.refs++;
    this.size = expected ?? length;
    this.state = 'running';
    this.readyP.resolve({ size: this.size });
    try {
      const size = this.size;
      const { size: got } = await this.blobs.fill(temp, this.digest, res, {
        ...(size !== undefined ? { size } : {}),
        onLanded: (n) => {
          this.landed = n;
          for (const w of this.watchers) w(n);
          this.notify();
        },
      });
      this.size = got;
      this.landed = got;
      this.state = 'done';
      this.doneP.resolve({ size: got, downloaded: got });
      this.notify();
    } catch (err) {
      res.destroy();
      throw err;
    } finally {
      this.body = undefined;
      this.unref();
    }
  }

  private fail(err: unknown): void {
    if (this.state === 'done' || this.state === 'failed') return;
    this.state = 'failed';
    this.error = err;
    this.readyP.reject(err);
    this.doneP.reject(err);
    const error = err instanceof Error ? err : new Error(String(err));
    for (const f of [...this.followers]) f.destroy(error);
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = settled<void>();
    w.resolve();
  }

  private unref(): void {
    if (--this.refs > 0) return;
    const fh = this.fh;
    this.fh = undefined;
    void fh?.close().catch(() => undefined);
  }
}

/** The downloads of one store in this process. */
export class BlobFetches {
  private readonly inflight = new Map<string, BlobFetch>();
  private readonly slots: Slots;
  private closed = false;

  constructor(
    readonly blobs: BlobStore,
    readonly limit = DEFAULT_FETCH_LIMIT,
  ) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`fetch limit must be a positive integer, not ${limit}`);
    this.slots = new Slots(limit);
  }

  /**
   * Join the fetch of `digest` in flight here, or start one with `open` (only
   * called when the store lacks the blob, within the bound). `size`, when
   * known (a manifest's descriptor), is enforced. `started` says whether
   * this call started it.
   */
  fetch(digest: string, open: OpenBlob, opts: { size?: number } = {}): { blob: BlobFetch; started: boolean } {
    hexOf(digest);
    const running = this.inflight.get(digest);
    if (running) return { blob: running, started: false };
    const blob = new BlobFetch(digest, this.blobs);
    if (this.closed) {
      void blob.run(() => Promise.reject(new BlobFetchError('the daemon is stopping')), this.slots, undefined);
      return { blob, started: true };
    }
    this.inflight.set(digest, blob);
    void blob.run(open, this.slots, opts.size).finally(() => {
      if (this.inflight.get(digest) === blob) this.inflight.delete(digest);
    });
    return { blob, started: true };
  }

  /** The fetch of `digest` in flight here, if any. */
  current(digest: string): BlobFetch | undefined {
    return this.inflight.get(digest);
  }

  /** Stop every download in flight (their readers get the error); later fetches fail at once. */
  close(): void {
    this.closed = true;
    for (const blob of this.inflight.values()) blob.abort(new BlobFetchError('the daemon is stopping'));
  }
}
