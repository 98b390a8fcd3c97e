// A stored file (or a range of it) to the client with backpressure, read into
// a few reused buffers: a new Buffer per chunk (fs.createReadStream) makes
// V8's collector the bottleneck of a 1 GiB download. A buffer goes back to
// the pool only once its write was flushed. A read error, or a file shorter
// than announced, cuts the connection rather than sending a short body.
import { open } from 'node:fs/promises';
import type { Response } from 'express';

const CHUNK = 1024 * 1024;
const BUFFERS = 4;

export async function sendFile(path: string, range: { start: number; end: number }, res: Response): Promise<void> {
  const file = await open(path, 'r');
  const free: Buffer[] = Array.from({ length: BUFFERS }, () => Buffer.allocUnsafe(CHUNK));
  let waiting: (() => void) | undefined;
  const wake = () => {
    const w = waiting;
    waiting = undefined;
    w?.();
  };
  res.on('close', wake);
  res.on('drain', wake);
  try {
    let position = range.start;
    while (position <= range.end) {
      if (res.destroyed) return;
      while (free.length === 0 || res.writableNeedDrain) {
        await new Promise<void>((resolve) => (waiting = resolve));
        if (res.destroyed) return;
      }
      const buffer = free.pop()!;
      const { bytesRead } = await file.read(buffer, 0, Math.min(CHUNK, range.end - position + 1), position);
      if (bytesRead === 0) throw new Error(`${path} ended ${range.end - position + 1} bytes early`);
      position += bytesRead;
      res.write(buffer.subarray(0, bytesRead), () => {
        free.push(buffer);
        wake();
      });
    }
    res.end();
  } catch (err) {
    res.destroy(err as Error);
  } finally {
    res.off('close', wake);
    res.off('drain', wake);
    await file.close();
  }
}
