// Streaming an upstream body to the client with backpressure. If the upstream
// ends early, errors, or sends fewer bytes than its Content-Length, the
// client's response is destroyed: the client sees a closed connection, never
// a hang waiting for bytes that will not come.
import type http from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';

class LengthCheck extends Transform {
  private seen = 0;
  constructor(private readonly expected: number | undefined) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.expected !== undefined && this.seen > this.expected) cb(new Error(`upstream sent more than its Content-Length ${this.expected}`));
    else cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    if (this.expected !== undefined && this.seen !== this.expected) cb(new Error(`upstream ended after ${this.seen} of ${this.expected} bytes`));
    else cb();
  }
}

/** Pipe `upstream` into `res`; resolves when done, destroys `res` (and upstream) on any failure. */
export async function streamTo(upstream: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const header = upstream.headers['content-length'];
  // HEAD, 204 and 304 answers have no body whatever their Content-Length says.
  const bodiless = (res as http.ServerResponse & { req?: http.IncomingMessage }).req?.method === 'HEAD' || upstream.statusCode === 204 || upstream.statusCode === 304;
  const expected = bodiless ? 0 : header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined;
  try {
    await pipeline(upstream, new LengthCheck(expected), res);
  } catch (err) {
    upstream.destroy();
    res.destroy(err as Error);
    throw err;
  }
}
