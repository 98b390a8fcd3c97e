// Streaming an upstream body to the client with backpressure. If the upstream
// ends early, errors, or sends fewer bytes than its Content-Length, the
// client's response is destroyed: the client sees a closed connection, never
// a hang waiting for bytes that will not come.
import type http from 'node:http';
import { pipeline } from 'node:stream/promises';

/** Pipe `upstream` into `res`; resolves when done, destroys `res` (and upstream) on any failure. */
export async function streamTo(upstream: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const header = upstream.headers['content-length'];
  // HEAD, 204 and 304 answers have no body whatever their Content-Length says.
  const bodiless = (res as http.ServerResponse & { req?: http.IncomingMessage }).req?.method === 'HEAD' || upstream.statusCode === 204 || upstream.statusCode === 304;
  const expected = bodiless ? 0 : header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined;
  // Counting with a listener, not a Transform: one less stream per chunk on the hot path.
  let seen = 0;
  upstream.on('data', (chunk: Buffer) => {
    seen += chunk.length;
  });
  try {
    await pipeline(upstream, res);
    if (expected !== undefined && seen !== expected) throw new Error(`upstream ended after ${seen} of ${expected} bytes`);
  } catch (err) {
    upstream.destroy();
    res.destroy(err as Error);
    throw err;
  }
}
