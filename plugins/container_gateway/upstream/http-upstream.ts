// An upstream HTTP(S) server (or unix socket) behind the gateway: a keep-alive
// pool, connect / response / idle timeouts, and failures turned into typed
// errors. Bodies are streamed, never buffered whole (except bounded reads).
// Callers tell failures apart by kind, never by message text.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { READ_SINK, type SinkSocket } from './lent-body.ts';

export interface UpstreamTimeouts {
  connectMs: number;
  responseMs: number;
  idleMs: number;
}

export interface UpstreamTls {
  /** A CA file; it replaces the system roots unless `systemRoots` is set. */
  ca?: string;
  /** Trust the system roots as well as `ca`. */
  systemRoots?: boolean;
  cert?: string;
  key?: string;
}

/**
 * Why a request failed: the upstream was not reached, was too slow, or broke
 * the connection; or the client the request was made for went away (its
 * signal aborted), which is nobody's fault to report.
 */
export type UpstreamFailure = 'connect' | 'timeout' | 'reset' | 'aborted';

export class UpstreamError extends Error {
  constructor(
    readonly kind: UpstreamFailure,
    message: string,
    /** The system error code behind it (ECONNREFUSED...), when there is one. */
    readonly code?: string,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

/**
 * Bytes read from a plain upstream connection at once (at most: a read takes
 * what the kernel holds). 1 MiB cost the same CPU relaying a blob, and is what
 * a response paused by a slow reader may hold: 256 KiB keeps that small.
 */
const READ_BYTES = 256 * 1024;

/**
 * A pool of plain (http, unix socket) connections that read into one buffer
 * of the pool, reused for every read, instead of a new 64 KiB buffer per
 * read: node's http parser copies each body chunk out of what it is given and
 * keeps no view of it past the read (a parse error's rawPacket aside; no upgrade
 * or CONNECT is ever sent upstream), and reads are synchronous on the one
 * thread, so one buffer serves every connection of the pool. A blob then
 * arrives in fewer, larger chunks (whatever the kernel holds, up to
 * READ_BYTES) and allocates half the memory: relaying a 1 GiB blob on demand
 * took 0.9 s less CPU (7.9 -> 7.0 s), most of it the collector's. A large
 * body can be taken off the parser altogether (lendBody in lent-body.ts).
 */
class ReadBufferAgent extends http.Agent {
  private readonly buffer = Buffer.allocUnsafe(READ_BYTES);

  override createConnection(options: http.ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex {
    // node asks for the memory of each read after the previous one (the first
    // one while the socket is being made): a body lent meanwhile (lent-body.ts) gets the next.
    let made: SinkSocket | undefined;
    const socket: SinkSocket = net.createConnection(
      {
        ...(options as net.NetConnectOpts),
        onread: {
          buffer: () => made?.[READ_SINK]?.nextBuffer() ?? this.buffer,
          callback: (n: number, buf: Uint8Array) => {
            const sink = socket[READ_SINK];
            if (sink) sink.onRead(n, buf);
            else socket.emit('data', Buffer.from(buf.buffer, buf.byteOffset, n));
            return true;
          },
        },
      } as unknown as net.NetConnectOpts,
      callback && (() => callback(null, socket)),
    );
    socket[READ_SINK] = undefined; // may lend its bodies
    made = socket;
    return socket;
  }
}

/** The request went out on a kept-alive connection that turned out to be closed. */
class StaleSocketError extends Error {}

export interface UpstreamRequest {
  method: string;
  /** Path and query, starting with '/'. */
  path: string;
  headers?: http.OutgoingHttpHeaders;
  body?: Readable;
  /** Aborted when the client goes away. */
  signal?: AbortSignal;
}

export class HttpUpstream {
  readonly origin: string;
  private readonly agent: http.Agent;
  /** False for a view made by at(): the pool belongs to the upstream it was made from. */
  private readonly ownsAgent: boolean;
  private readonly base: { protocol: string; hostname?: string; port?: string; socketPath?: string; basePath: string };

  /** `target`: an http(s) URL, or 'unix:/path/to.sock'. `shared`: the pool of another upstream (see at()). */
  constructor(
    target: string,
    private readonly timeouts: UpstreamTimeouts,
    tls: UpstreamTls = {},
    maxSockets = 128,
    shared?: http.Agent,
  ) {
    const agentOptions = { keepAlive: true, maxSockets, maxFreeSockets: 32, timeout: timeouts.idleMs };
    this.ownsAgent = !shared;
    if (target.startsWith('unix:')) {
      this.base = { protocol: 'http:', socketPath: target.slice('unix:'.length), basePath: '' };
      this.origin = 'http://localhost';
      this.agent = shared ?? new ReadBufferAgent(agentOptions);
      return;
    }
    const url = new URL(target);
    this.origin = url.origin;
    this.base = { protocol: url.protocol, hostname: url.hostname.replace(/^\[|\]$/g, ''), port: url.port, basePath: url.pathname.replace(/\/$/, '') };
    const ca = tls.ca ? readFileSync(tls.ca, 'utf8') : undefined;
    this.agent =
      shared ??
      (url.protocol === 'https:'
        ? new https.Agent({
            ...agentOptions,
            ...(ca ? { ca: tls.systemRoots ? [...rootCertificates, ca] : ca } : {}),
            ...(tls.cert && tls.key ? { cert: readFileSync(tls.cert), key: readFileSync(tls.key) } : {}),
          })
        : new ReadBufferAgent(agentOptions));
  }

  /** The same origin and connection pool, with request paths under `basePath` (e.g. '/v2'). */
  at(basePath: string): HttpUpstream {
    if (this.base.socketPath) throw new Error('a unix-socket upstream has no other base path');
    return new HttpUpstream(new URL(basePath, this.origin).href, this.timeouts, {}, 0, this.agent);
  }

  /** Send a request; resolves with the response head (body not yet read). */
  async request(r: UpstreamRequest): Promise<http.IncomingMessage> {
    try {
      return await this.attempt(r);
    } catch (err) {
      // A kept-alive socket the server closed meanwhile: a request without a body is sent again, once, on a new connection.
      if (err instanceof StaleSocketError && !r.body) return this.attempt(r);
      throw err instanceof StaleSocketError ? new UpstreamError('reset', err.message) : err;
    }
  }

  private attempt(r: UpstreamRequest): Promise<http.IncomingMessage> {
    const options: http.RequestOptions = {
      agent: this.agent,
      method: r.method,
      path: this.base.basePath + r.path,
      headers: r.headers,
      ...(this.base.socketPath ? { socketPath: this.base.socketPath } : { protocol: this.base.protocol, hostname: this.base.hostname, port: this.base.port }),
    };
    return new Promise((resolve, reject) => {
      const req = (this.base.protocol === 'https:' ? https : http).request(options);
      let settled = false;
      let response: http.IncomingMessage | undefined;
      const fail = (kind: UpstreamFailure, message: string, code?: string) => {
        clearTimeout(responseTimer);
        detach();
        if (!settled) {
          settled = true;
          reject(new UpstreamError(kind, message, code));
        }
        // Mid-body, the reader of the response learns why it was cut (and logs it).
        response?.destroy(new UpstreamError(kind, message, code));
        req.destroy();
      };
      const responseTimer = setTimeout(() => fail('timeout', `no response from ${this.origin} within ${this.timeouts.responseMs} ms`, 'ETIMEDOUT'), this.timeouts.responseMs);
      req.on('socket', (socket) => {
        if (!socket.connecting) return;
        const connectTimer = setTimeout(() => fail('timeout', `connecting to ${this.origin} took over ${this.timeouts.connectMs} ms`, 'ETIMEDOUT'), this.timeouts.connectMs);
        socket.once('connect', () => clearTimeout(connectTimer));
        socket.once('close', () => clearTimeout(connectTimer));
      });
      // Idle: no bytes either way for idleMs, while waiting or while streaming.
      req.setTimeout(this.timeouts.idleMs, () => fail('timeout', `${this.origin} went idle for ${this.timeouts.idleMs} ms`, 'ETIMEDOUT'));
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(responseTimer);
        if (err.code === 'ECONNRESET' && req.reusedSocket && !settled) {
          settled = true;
          detach();
          reject(new StaleSocketError(`${this.origin}: ${err.message}`));
          return;
        }
        const kind: UpstreamFailure = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENOENT', 'EHOSTUNREACH', 'ENETUNREACH'].includes(err.code ?? '') ? 'connect' : 'reset';
        fail(kind, `${this.origin}: ${err.message}`, err.code);
      });
      req.on('response', (res) => {
        clearTimeout(responseTimer);
        settled = true;
        response = res;
        // A long-lived signal (a sync run) sees thousands of requests: each lets go of it when done.
        res.once('close', detach);
        resolve(res);
      });
      const signal = r.signal;
      const onAbort = () => fail('aborted', 'client went away');
      function detach(): void {
        signal?.removeEventListener('abort', onAbort);
      }
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      if (r.body) r.body.pipe(req);
      else req.end();
    });
  }

  /** The path of the target URL, prepended to every request path. */
  get basePath(): string {
    return this.base.basePath;
  }

  close(): void {
    if (this.ownsAgent) this.agent.destroy();
  }
}

/** Read a response body up to `limit` bytes; a body that ends early resolves with what arrived. */
export function readBounded(res: http.IncomingMessage, limit: number): Promise<{ body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        res.destroy();
        reject(new UpstreamError('reset', `upstream body larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    res.on('end', () => resolve({ body: Buffer.concat(chunks), complete: true }));
    res.on('error', () => resolve({ body: Buffer.concat(chunks), complete: false }));
    res.on('close', () => resolve({ body: Buffer.concat(chunks), complete: res.complete }));
  });
}
