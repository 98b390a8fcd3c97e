// A reader of a blob that is still arriving (BlobFetch): it takes the bytes
// from the fetch's window of recent upstream chunks while it keeps up (views
// of them, nothing copied, nothing read back), and reads the shared temporary
// file by position when it is behind the window, up to what has landed, then
// waits for more. So a slow client never holds the download back nor makes it
// buffer in memory (the file absorbs the difference; each reader holds at
// most its own highWaterMark). It ends only once the fetch is verified, and
// is destroyed with the fetch's error when it fails.
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

/** What a follower reads of a fetch in flight (BlobFetch in blob-fetches.ts). */
export interface GrowingBlob {
  readonly digest: string;
  readonly state: 'waiting' | 'running' | 'done' | 'failed';
  readonly error: unknown;
  /** Bytes the file holds from offset 0 (all of them once the fetch is done). */
  readonly landed: number;
  readonly size: number | undefined;
  /** Bytes that can be read now. */
  available(): number;
  /** Received bytes from `position` on, from memory; undefined when they are to be read from the file. */
  windowAt(position: number): Buffer | undefined;
  /** Resolves when more bytes landed or the state changed. */
  changed(): Promise<void>;
  /** The shared handle of the file being written, or undefined once it closed. */
  acquire(follower: BlobFollower): FileHandle | undefined;
  release(follower: BlobFollower): void;
  /** A handle on the placed blob, once done. */
  openPlaced(): Promise<FileHandle>;
}

/** Bytes read from the file at once, and each reader's highWaterMark. */
const CHUNK = 1024 * 1024;

export class BlobFollower extends Readable {
  private position: number;
  /** Last byte wanted (inclusive), or undefined: to the end of the blob. */
  private readonly last: number | undefined;
  private busy = false;
  private fh: FileHandle | undefined;
  /** `fh` is our own (opened on the placed blob), not the fetch's shared one. */
  private own = false;

  constructor(
    private readonly fetch: GrowingBlob,
    range?: { start: number; end: number },
  ) {
    super({ highWaterMark: CHUNK });
    if (range && (!Number.isSafeInteger(range.start) || !Number.isSafeInteger(range.end) || range.start < 0 || range.end < range.start)) {
      throw new RangeError(`invalid byte range ${range.start}-${range.end}`);
    }
    this.position = range?.start ?? 0;
    this.last = range?.end;
  }

  override _read(): void {
    void this.pump();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // A read in flight lets go of the handle itself when it returns.
    if (!this.busy) this.letGo();
    callback(err);
  }

  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      for (;;) {
        if (this.destroyed) return;
        const f = this.fetch;
        if (f.state === 'failed') {
          this.destroy(f.error instanceof Error ? f.error : new Error(String(f.error)));
          return;
        }
        const stop = this.last !== undefined ? this.last + 1 : f.state === 'done' ? f.landed : Infinity;
        if (this.position >= stop && (this.last === undefined || f.state === 'done' || this.last + 1 < (f.size ?? Infinity))) {
          this.push(null);
          return;
        }
        const available = Math.min(f.available(), stop);
        if (this.position >= available) {
          await f.changed();
          continue;
        }
        const recent = f.windowAt(this.position);
        if (recent) {
          const n = Math.min(recent.length, available - this.position);
          this.position += n;
          if (!this.push(n < recent.length ? recent.subarray(0, n) : recent)) return;
          continue;
        }
        const fh = await this.handle();
        if (!fh) continue; // failed meanwhile: said at the top
        // Not in the window: it is in the file (the window never starts after the landed end).
        const n = Math.min(CHUNK, available - this.position, f.landed - this.position);
        const buf = Buffer.allocUnsafe(n);
        const { bytesRead } = await fh.read(buf, 0, n, this.position);
        if (this.destroyed) return;
        if (bytesRead === 0) throw new Error(`${f.digest}: the file ended at ${this.position}, before the ${available} bytes landed`);
        this.position += bytesRead;
        if (!this.push(bytesRead < n ? buf.subarray(0, bytesRead) : buf)) return;
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.busy = false;
      if (this.destroyed) this.letGo();
    }
  }

  /** The fetch's shared handle, or the placed blob once that one closed. */
  private async handle(): Promise<FileHandle | undefined> {
    if (this.fh) return this.fh;
    this.fh = this.fetch.acquire(this);
    if (this.fh || this.fetch.state !== 'done') return this.fh;
    this.fh = await this.fetch.openPlaced();
    this.own = true;
    if (this.destroyed) this.letGo();
    return this.fh;
  }

  private letGo(): void {
    const fh = this.fh;
    this.fh = undefined;
    if (this.own) void fh?.close().catch(() => undefined);
    else this.fetch.release(this);
  }
}
