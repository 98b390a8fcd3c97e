// Clients that move bytes slowly, or stop: a paced chunked upload, a paced
// download, and a request that goes silent. Each resolves with what the
// client saw (an answer, or the connection closed without one).
import { createHash } from 'node:crypto';
import http from 'node:http';

export interface SlowOutcome {
  /** The answer's status, or undefined when the connection closed without one. */
  status?: number;
  headers?: http.IncomingHttpHeaders;
  /** sha256 of the answer's body, and its length. */
  digest?: string;
  received: number;
  /** Seconds from the first byte sent to the outcome. */
  seconds: number;
}

interface Target {
  url: string;
  method: string;
  headers: Record<string, string>;
}

function exchange(target: Target, drive: (req: http.ClientRequest) => void, onBody?: (res: http.IncomingMessage) => void): Promise<SlowOutcome> {
  const started = Date.now();
  return new Promise((resolve) => {
    let settled = false;
    const done = (o: Omit<SlowOutcome, 'seconds'>) => {
      if (settled) return;
      settled = true;
      resolve({ ...o, seconds: (Date.now() - started) / 1000 });
    };
    let answered = false;
    const req = http.request(target.url, { method: target.method, headers: target.headers, agent: false }, (res) => {
      answered = true;
      const hash = createHash('sha256');
      let received = 0;
      res.on('data', (c: Buffer) => {
        hash.update(c);
        received += c.length;
      });
      res.on('end', () => done({ status: res.statusCode, headers: res.headers, digest: `sha256:${hash.digest('hex')}`, received }));
      res.on('close', () => done({ status: res.statusCode, headers: res.headers, received }));
      onBody?.(res);
    });
    // Without an answer, an error or a close is the outcome; with one, the body's end or close is.
    req.on('error', () => answered || done({ received: 0 }));
    req.on('close', () => answered || done({ received: 0 }));
    drive(req);
  });
}

/** A chunked body of `pieces` pieces, one every `intervalMs`; then the end of the body. */
export function pacedUpload(target: Target, pieces: Buffer[], intervalMs: number): Promise<SlowOutcome> {
  return exchange({ ...target, headers: { ...target.headers, 'Transfer-Encoding': 'chunked' } }, (req) => {
    let i = 0;
    const next = () => {
      if (req.destroyed) return;
      if (i === pieces.length) return void req.end();
      req.write(pieces[i++]);
      setTimeout(next, intervalMs);
    };
    next();
  });
}

/** Send `first`, then nothing more: never end the body. */
export function silentUpload(target: Target, first: Buffer): Promise<SlowOutcome> {
  return exchange({ ...target, headers: { ...target.headers, 'Transfer-Encoding': 'chunked' } }, (req) => {
    req.write(first);
  });
}

/** Read the answer's body at no more than `bytesPerSecond`. */
export function pacedDownload(target: Target, bytesPerSecond: number): Promise<SlowOutcome> {
  return exchange(target, (req) => req.end(), (res) => {
    const started = Date.now();
    let taken = 0;
    res.on('data', (c: Buffer) => {
      taken += c.length;
      const ahead = (taken / bytesPerSecond) * 1000 - (Date.now() - started);
      if (ahead > 0) {
        res.pause();
        setTimeout(() => res.resume(), ahead);
      }
    });
  });
}
