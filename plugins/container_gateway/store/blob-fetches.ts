// One upstream download per blob digest in this process, however many ask at
// once (on-demand reads and sync alike). The bytes go to a temporary file of
// the store as they arrive, hashed in the same pass (BlobStore.fill), and
// every requester reads them as they come (blob-follow.ts):
// - the fetch keeps the upstream's own chunks of the last WINDOW bytes it
//   received (no copies; lent memory when the body is lent, given back as
//   they leave the window), and a reader within them copies from those: a
//   client that keeps up never costs a read of the file;
// - a reader behind the window (a late joiner, a Range far back, a slow
//   client) reads the file by position, up to what has landed, then catches
//   up with the window.
// Invariants: the window always starts at or before the landed end of the
// file (so any byte before the window can be read from the file), and holds
// at most WINDOW bytes beyond what the write pipeline itself still holds;
// nothing else is buffered whatever the size or the readers' speed (each
// reader holds at most its own highWaterMark). The last byte is given to no
// reader before the digest is verified and the file placed atomically; a
// failure stores nothing and destroys every reader with the error. A reader
// going away never stops the download: the blob is kept for the others and
// the next pull. Downloads run within a bound (the rest queue).
// Across processes nothing is shared: each has its own temporary file (a
// random name), and the store's atomic placement makes a double download
// harmless; a killed process leaves at most a temporary file the purge takes.
import type http from 'node:http';
import { open as openFile, type FileHandle } from 'node:fs/promises';
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import type { BlobStore } from './blob-store.ts';
import { BlobCursor, BlobFollower, type FetchState, type GrowingBlob } from './blob-follow.ts';
import { settled, Slots } from './fetch-slots.ts';
import { errno, hexOf } from './store-files.ts';

/** Starts the upstream request of a blob: resolves with the response head (body not read). */
export type OpenBlob = () => Promise<http.IncomingMessage>;

/** A body whose chunks are lent memory: each is given back once the fetch no longer holds it. */
export interface LentChunks extends Readable {
  release(chunk: Buffer): void;
}

/** Takes a response's body in lent chunks, when it can (else undefined: the response is read as it is). */
export type LendBody = (res: http.IncomingMessage) => LentChunks | undefined;

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

/** Bytes of upstream chunks a fetch keeps in memory for its readers (beyond what is not yet written). */
export const WINDOW = 8 * 1024 * 1024;

/** Buffering of the tap between the upstream response and the file writer. */
const TAP_BYTES = 1024 * 1024;
/** Its reading side, in chunks: one at a time to the writer (a byte stream joins all it holds into a new buffer: 7% of a cold pull's CPU). */
const TAP_CHUNKS = 4;

/** Upstream downloads at once, unless told otherwise. */
export const DEFAULT_FETCH_LIMIT = 8;

/** One blob coming from upstream (or found in the store), shared by whoever reads it. */
export class BlobFetch implements GrowingBlob {
  state: FetchState = 'waiting';
  /** The blob's size once known (Content-Length, or at the end). */
  size: number | undefined;
  /** Bytes the file holds from offset 0. */
  landed = 0;
  /** Bytes received from upstream so far (landed or on their way to the file). */
  received = 0;
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
  /** Holders of `fh` among the readers. */
  private readonly followers = new Set<object>();
  private readonly watchers = new Set<(landed: number) => void>();
  private wake = settled<void>();
  private body: Readable | undefined;
  /** The body, when its chunks are lent: each is given back once it leaves the window. */
  private lent: LentChunks | undefined;
  /** The latest upstream chunks, in order, contiguous, ending at `received` (see WINDOW). */
  private window: Buffer[] = [];
  /** Offset of window[0]'s first byte. */
  private windowStart = 0;
  private aborted: Error | undefined;

  constructor(
    readonly digest: string,
    private readonly blobs: BlobStore,
    private readonly lend?: LendBody,
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
    const reader = new BlobFollower(this, range);
    // At the failure, not at its next read: a reader whose consumer stopped reading is cut too.
    this.done.catch((err: unknown) => reader.destroy(err instanceof Error ? err : new Error(String(err))));
    return reader;
  }

  /**
   * The same bytes as read() gives, into buffers of the caller's (no memory
   * per chunk): for a sender that reuses its buffers. It fails at its next
   * read after the fetch failed; `done` rejects at once.
   */
  cursor(range?: { start: number; end: number }): BlobCursor {
    return new BlobCursor(this, range);
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
    return this.size !== undefined ? Math.min(this.received, this.size - 1) : this.received;
  }

  /**
   * The received bytes from `position` on, as far as one upstream chunk goes
   * (a view, not a copy, valid until control returns to the event loop: it
   * may be lent memory), or undefined when `position` is before the window
   * (then it is in the file: the window never starts after the landed end).
   */
  windowAt(position: number): Buffer | undefined {
    if (position < this.windowStart || position >= this.received) return undefined;
    // Readers are mostly near the end: search from there.
    let end = this.received;
    for (let i = this.window.length - 1; i >= 0; i--) {
      const chunk = this.window[i]!;
      const start = end - chunk.length;
      if (position >= start) return position === start ? chunk : chunk.subarray(position - start);
      end = start;
    }
    return undefined;
  }

  /** Resolves at the next change (bytes landed, done, failed). */
  changed(): Promise<void> {
    return this.wake.promise;
  }

  // --- for BlobFollower ---

  /** The shared file handle, counted, or undefined once it is closed (the blob is then at its final path). */
  acquire(follower: object): FileHandle | undefined {
    if (!this.fh || this.state === 'failed') return undefined;
    this.refs++;
    this.followers.add(follower);
    return this.fh;
  }

  release(follower: object): void {
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
    const lent = this.lend?.(res);
    const body: Readable = lent ?? res;
    const cut = () => {
      lent?.destroy();
      res.destroy();
    };
    this.body = body;
    this.lent = lent;
    // Every chunk passes through here on its way to the file: readers within the window get it from memory.
    const tap = new Transform({
      readableObjectMode: true,
      readableHighWaterMark: TAP_CHUNKS,
      writableHighWaterMark: TAP_BYTES,
      transform: (chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) => {
        this.take(chunk);
        done(null, chunk);
      },
    });
    pipeline(body, tap, () => undefined); // an upstream failure destroys the tap with it: fill() rethrows it
    const temp = await this.blobs.tempFile().catch((err: unknown) => {
      cut();
      throw err;
    });
    this.fh = temp.fh;
    this.refs++;
    this.size = expected ?? length;
    this.state = 'running';
    this.readyP.resolve({ size: this.size });
    this.notify(); // chunks may have come while the file was being created
    try {
      const size = this.size;
      const { size: got } = await this.blobs.fill(temp, this.digest, tap, {
        ...(size !== undefined ? { size } : {}),
        onLanded: (n) => {
          this.landed = n;
          this.trim();
          for (const w of this.watchers) w(n);
        },
      });
      this.size = got;
      this.landed = got;
      this.state = 'done';
      this.doneP.resolve({ size: got, downloaded: got });
      this.notify();
    } catch (err) {
      cut();
      throw err;
    } finally {
      this.body = undefined;
      this.unref();
    }
  }

  /** A chunk from upstream, on its way to the file. */
  private take(chunk: Buffer): void {
    this.window.push(chunk);
    this.received += chunk.length;
    this.trim();
    this.notify();
  }

  /** Drop the oldest chunks that have landed and fall out of the window. */
  private trim(): void {
    for (;;) {
      const first = this.window[0];
      if (!first) return;
      const end = this.windowStart + first.length;
      if (end > this.landed || this.received - end < WINDOW) return;
      this.window.shift();
      this.windowStart = end;
      // Landed (the writer is done with it) and out of the window: nobody holds it now.
      this.lent?.release(first);
    }
  }

  private fail(err: unknown): void {
    if (this.state === 'done' || this.state === 'failed') return;
    this.state = 'failed';
    this.error = err;
    this.window = [];
    this.windowStart = this.received;
    this.readyP.reject(err);
    this.doneP.reject(err);
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

  /** `lend`: how a download may take its body in lent chunks (plain upstream connections); without it, bodies are read as they are. */
  constructor(
    readonly blobs: BlobStore,
    readonly limit = DEFAULT_FETCH_LIMIT,
    private readonly lend?: LendBody,
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
    const blob = new BlobFetch(digest, this.blobs, this.lend);
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
