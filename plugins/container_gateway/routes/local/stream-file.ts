// A stored file to the client with backpressure; a read error cuts the
// connection rather than sending a short body under a full Content-Length.
import type { ReadStream } from 'node:fs';
import type { Response } from 'express';
import { pipeline } from 'node:stream/promises';

export async function streamFile(file: ReadStream, res: Response): Promise<void> {
  try {
    await pipeline(file, res);
  } catch (err) {
    file.destroy();
    res.destroy(err as Error);
  }
}
