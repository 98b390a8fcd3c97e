// Streaming a body into a file: hashing overlaps with writing, and the file
// only ever grows in order. One write is in flight at a time (the chunks that
// arrive meanwhile go out together in the next writev), so whatever a crash
// interrupts, the file is a prefix of the body: never a later chunk written
// before an earlier one, which would leave a hole counted in the file's size.
// Write-behind flushes make what has landed durable while the rest arrives,
// and report how far that is.
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { MiB } from './store-files.ts';

/** Bytes landed between two write-behind flushes. */
const WRITE_BEHIND_BYTES = 32 * MiB;
/** Bytes received and not yet written (then the body waits). */
const QUEUED_BYTES = 4 * MiB;

export interface WriteOptions {
  /** Fed with every byte, in order. */
  hash?: Hash;
  /** Never write more than this (`tooLarge()` is thrown before). */
  limit?: number;
  tooLarge: () => Error;
  /** Bytes from `position` on that are written and flushed: called after each write-behind flush, one call at a time. */
  onDurable?: (bytes: number) => Promise<void>;
  /** Bytes from `position` on that are written (readable by others through the file), after each write completes. */
  onLanded?: (bytes: number) => void;
}

/** Write `bufs` at `at`, whatever the kernel takes per call. */
async function writevFully(fh: FileHandle, bufs: Buffer[], at: number): Promise<void> {
  let rest = bufs;
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest, at);
    at += bytesWritten;
    let skip = bytesWritten;
    const left: Buffer[] = [];
    for (const b of rest) {
      if (skip >= b.length) {
        skip -= b.length;
        continue;
      }
      left.push(skip > 0 ? b.subarray(skip) : b);
      skip = 0;
    }
    rest = left;
  }
}

/**
 * Write `body` to `fh` from `position` on. Returns the number of bytes
 * written. A body error is rethrown as is. When this fails for another reason
 * the body is left as it is, not destroyed: its owner decides (an HTTP handler
 * still has to answer 416/413/400 on that connection). Nothing is left
 * running on `fh` when this settles.
 */
export async function writeBody(fh: FileHandle, body: Readable, position: number, opts: WriteOptions): Promise<number> {
  let received = 0;
  /** Bytes whose write has completed: the file holds body[0, landed) at position. */
  let landed = 0;
  let queue: Buffer[] = [];
  let queued = 0;
  let writing: Promise<void> | undefined;
  let failure: unknown;
  let flushing: Promise<void> | undefined;
  let flushedUpTo = 0;

  const flushIfDue = () => {
    if (flushing || failure !== undefined || landed - flushedUpTo < WRITE_BEHIND_BYTES) return;
    const upTo = landed;
    // Every write below `upTo` has completed, so this flush covers it.
    flushing = fh
      .datasync()
      .then(async () => {
        flushedUpTo = upTo;
        await opts.onDurable?.(upTo);
      })
      .catch((err: unknown) => void (failure ??= err))
      .finally(() => (flushing = undefined));
  };
  const pump = () => {
    if (writing || queue.length === 0 || failure !== undefined) return;
    const bufs = queue;
    const bytes = queued;
    queue = [];
    queued = 0;
    writing = writevFully(fh, bufs, position + landed).then(
      () => {
        landed += bytes;
        writing = undefined;
        opts.onLanded?.(landed);
        flushIfDue();
        pump();
      },
      (err: unknown) => {
        failure ??= err;
        writing = undefined;
      },
    );
  };

  const chunks: AsyncIterable<Buffer | string> = typeof body.iterator === 'function' ? body.iterator({ destroyOnReturn: false }) : body;
  try {
    for await (const chunk of chunks) {
      if (failure !== undefined) break;
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (opts.limit !== undefined && received + buf.length > opts.limit) throw opts.tooLarge();
      queue.push(buf);
      queued += buf.length;
      received += buf.length;
      pump();
      // Hashed here while the thread pool writes.
      opts.hash?.update(buf);
      while (queued > QUEUED_BYTES && writing) await writing;
    }
    while ((writing || queue.length > 0) && failure === undefined) {
      pump();
      await writing;
    }
  } finally {
    // Never leave a write or a flush running on a handle the caller is about to close.
    while (writing) await writing;
    while (flushing) await flushing;
  }
  if (failure !== undefined) throw failure;
  return received;
}

/** sha256 of an open file from offset 0 to `end` (default: its end), read 1 MiB at a time. */
export async function hashHandle(fh: FileHandle, end = Infinity): Promise<{ hex: string; size: number }> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(MiB);
  let size = 0;
  while (size < end) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - size), size);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    size += bytesRead;
  }
  return { hex: hash.digest('hex'), size };
}
