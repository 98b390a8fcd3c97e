// A reader of a blob that is still arriving (BlobFetch): it copies the bytes
// from the fetch's window of recent upstream chunks while it keeps up (the
// window's memory is lent: it is reused once the window lets go of it, so
// a reader never keeps a view of it), and reads the shared temporary file by
// position when it is behind the window, up to what has landed, then waits
// for more. So a slow client never holds the download back nor makes it
// buffer in memory (the file absorbs the difference; each reader holds only
// the buffers it is given). It ends only once the fetch is verified, and
// fails with the fetch's error.
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

export type FetchState = 'waiting' | 'running' | 'done' | 'failed';

/** What a cursor reads of a fetch in flight (BlobFetch in blob-fetches.ts). */
export interface GrowingBlob {
  readonly digest: string;
  readonly state: FetchState;
  readonly error: unknown;
  /** Bytes the file holds from offset 0 (all of them once the fetch is done). */
  readonly landed: number;
  readonly size: number | undefined;
  /** Bytes that can be read now. */
  available(): number;
  /** Received bytes from `position` on, from memory, valid until control returns to the event loop; undefined when they are to be read from the file. */
  windowAt(position: number): Buffer | undefined;
  /** Resolves when more bytes landed or the state changed. */
  changed(): Promise<void>;
  /** The shared handle of the file being written, or undefined once it closed. */
  acquire(holder: object): FileHandle | undefined;
  release(holder: object): void;
  /** A handle on the placed blob, once done. */
  openPlaced(): Promise<FileHandle>;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** A position in a growing blob (or a range of it) that fills the caller's buffers. */
export class BlobCursor {
  private position: number;
  /** Last byte wanted (inclusive), or undefined: to the end of the blob. */
  private readonly last: number | undefined;
  private busy = false;
  private closed = false;
  private fh: FileHandle | undefined;
  /** `fh` is our own (opened on the placed blob), not the fetch's shared one. */
  private own = false;

  constructor(
    private readonly fetch: GrowingBlob,
    range?: { start: number; end: number },
  ) {
    if (range && (!Number.isSafeInteger(range.start) || !Number.isSafeInteger(range.end) || range.start < 0 || range.end < range.start)) {
      throw new RangeError(`invalid byte range ${range.start}-${range.end}`);
    }
    this.position = range?.start ?? 0;
    this.last = range?.end;
  }

  /**
   * Fill `into` with the next bytes, as many as are there now (waiting for at
   * least one); 0 once the range, or the verified blob, is complete. Rejects
   * with the fetch's error when it fails. One call at a time.
   */
  async next(into: Buffer): Promise<number> {
    if (this.busy) throw new Error('BlobCursor.next: a read is already in flight');
    this.busy = true;
    try {
      for (;;) {
        if (this.closed) throw new Error('the reader was closed');
        const f = this.fetch;
        if (f.state === 'failed') throw asError(f.error);
        const stop = this.last !== undefined ? this.last + 1 : f.state === 'done' ? f.landed : Infinity;
        if (this.position >= stop && (this.last === undefined || f.state === 'done' || this.last + 1 < (f.size ?? Infinity))) return 0;
        const available = Math.min(f.available(), stop);
        if (this.position >= available) {
          await f.changed();
          continue;
        }
        const want = Math.min(into.length, available - this.position);
        // From memory while within the window, copied at once: the window's chunks are reused after it.
        let n = 0;
        for (let recent = f.windowAt(this.position); recent && n < want; recent = f.windowAt(this.position + n)) {
          n += recent.copy(into, n, 0, Math.min(recent.length, want - n));
        }
        if (n > 0) {
          this.position += n;
          return n;
        }
        const fh = await this.handle();
        if (!fh) continue; // failed meanwhile: said at the top
        // Not in the window: it is in the file (the window never starts after the landed end).
        const { bytesRead } = await fh.read(into, 0, Math.min(want, f.landed - this.position), this.position);
        if (this.closed) throw new Error('the reader was closed');
        if (bytesRead === 0) throw new Error(`${f.digest}: the file ended at ${this.position}, before the ${available} bytes landed`);
        this.position += bytesRead;
        return bytesRead;
      }
    } finally {
      this.busy = false;
      if (this.closed) this.letGo();
    }
  }

  /** Let go of the file (a read in flight does when it returns). */
  close(): void {
    this.closed = true;
    if (!this.busy) this.letGo();
  }

  /** The fetch's shared handle, or the placed blob once that one closed. */
  private async handle(): Promise<FileHandle | undefined> {
    if (this.fh) return this.fh;
    this.fh = this.fetch.acquire(this);
    if (this.fh || this.fetch.state !== 'done') return this.fh;
    this.fh = await this.fetch.openPlaced();
    this.own = true;
    if (this.closed) this.letGo();
    return this.fh;
  }

  private letGo(): void {
    const fh = this.fh;
    this.fh = undefined;
    if (this.own) void fh?.close().catch(() => undefined);
    else this.fetch.release(this);
  }
}

/** Bytes read at once, and each reader's highWaterMark. */
const CHUNK = 1024 * 1024;

/** A cursor as a stream: each chunk is a buffer of its own. */
export class BlobFollower extends Readable {
  private readonly cursor: BlobCursor;
  private busy = false;
  private scratch: Buffer | undefined;

  constructor(fetch: GrowingBlob, range?: { start: number; end: number }) {
    super({ highWaterMark: CHUNK });
    this.cursor = new BlobCursor(fetch, range);
  }

  override _read(): void {
    void this.pump();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.cursor.close();
    callback(err);
  }

  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    const scratch = (this.scratch ??= Buffer.allocUnsafe(CHUNK));
    try {
      for (;;) {
        if (this.destroyed) return;
        const n = await this.cursor.next(scratch);
        if (this.destroyed) return;
        if (n === 0) return void this.push(null);
        if (!this.push(Buffer.from(scratch.subarray(0, n)))) return;
      }
    } catch (err) {
      this.destroy(asError(err));
    } finally {
      this.busy = false;
    }
  }
}
