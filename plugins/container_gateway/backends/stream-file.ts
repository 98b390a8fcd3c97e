// A stored file (or a range of it), or a blob still arriving, to the client
// with backpressure, through a few reused buffers: a new Buffer per chunk
// (fs.createReadStream, or a stream per reader) makes V8's collector the
// bottleneck of a 1 GiB download. A buffer goes back to the pool only once its
// write was flushed, and that is the backpressure: all BUFFERS may be queued
// on the socket at once, so the kernel always has the next one (waiting for
// 'drain' instead left one buffer in flight and the socket idle while the
// next one was filled). A read error, or a file shorter than announced, cuts
// the connection rather than sending a short body.
import { open } from 'node:fs/promises';
import type { Response } from 'express';
import type { BlobFetch } from '../store/blob-fetches.ts';

const CHUNK = 1024 * 1024;
const BUFFERS = 4;

/** Sends what `fill` puts in each buffer (its byte count; 0: the end) until the end, or until `res` closes. */
async function sendFilled(res: Response, fill: (into: Buffer) => Promise<number>): Promise<void> {
  const free: Buffer[] = Array.from({ length: BUFFERS }, () => Buffer.allocUnsafe(CHUNK));
  let waiting: (() => void) | undefined;
  const wake = () => {
    const w = waiting;
    waiting = undefined;
    w?.();
  };
  res.on('close', wake);
  try {
    for (;;) {
      if (res.destroyed) return;
      while (free.length === 0) {
        await new Promise<void>((resolve) => (waiting = resolve));
        if (res.destroyed) return;
      }
      const buffer = free.pop()!;
      const n = await fill(buffer);
      if (res.destroyed) return;
      if (n === 0) return void res.end();
      res.write(buffer.subarray(0, n), () => {
        free.push(buffer);
        wake();
      });
    }
  } catch (err) {
    res.destroy(err as Error);
  } finally {
    res.off('close', wake);
  }
}

export async function sendFile(path: string, range: { start: number; end: number }, res: Response): Promise<void> {
  const file = await open(path, 'r');
  let position = range.start;
  try {
    await sendFilled(res, async (into) => {
      if (position > range.end) return 0;
      const { bytesRead } = await file.read(into, 0, Math.min(into.length, range.end - position + 1), position);
      if (bytesRead === 0) throw new Error(`${path} ended ${range.end - position + 1} bytes early`);
      position += bytesRead;
      return bytesRead;
    });
  } finally {
    await file.close();
  }
}

/**
 * A blob as it arrives (or a range of it): its end only once verified. A
 * failed fetch cuts the connection at once, even while the client is not
 * reading (a client never waits on a download that is over).
 */
export async function sendArriving(blob: BlobFetch, range: { start: number; end: number } | undefined, res: Response): Promise<void> {
  const cursor = blob.cursor(range);
  let sending = true;
  // Only while this answer is being sent: the connection may carry the client's next request after it.
  blob.done.catch((err: unknown) => sending && res.destroy(err as Error));
  try {
    await sendFilled(res, (into) => cursor.next(into));
  } finally {
    sending = false;
    cursor.close();
  }
}
