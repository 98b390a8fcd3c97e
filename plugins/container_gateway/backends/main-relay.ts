// A client's request relayed to the main server's registry, and its answer
// relayed back. Bodies stream both ways; the answer reaches the client
// unchanged except for what names the main server (absolute Locations, Link,
// the token realm), so that the client keeps talking to this proxy. Only the
// headers the registry protocol needs pass: hop-by-hop and identity headers
// never do.
import type http from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import type { Request, Response } from 'express';
import { RegistryError } from '../oci/errors.ts';
import { readBounded, UpstreamError, type HttpUpstream } from '../upstream/http-upstream.ts';
import { failedUpstream, servedFrom } from '../metrics.ts';
import { streamTo } from '../upstream/stream.ts';

const REQUEST_HEADERS = ['authorization', 'accept', 'content-type', 'content-length', 'content-range', 'range', 'user-agent', 'docker-distribution-api-version'];
const RESPONSE_HEADERS = [
  'content-type',
  'content-length',
  'content-range',
  'range',
  'location',
  'link',
  'docker-upload-uuid',
  'docker-content-digest',
  'www-authenticate',
  'retry-after',
  'etag',
  'oci-subject',
  'oci-filters-applied',
];

// Answers to writes are small OCI JSON documents; anything longer is not a registry's answer.
const ANSWER_LIMIT = 1024 * 1024;

/** The main server's whole answer to a write, read before anything is committed here. */
export interface MainAnswer {
  up: http.IncomingMessage;
  body: Buffer;
  /** Status 201, every byte of the body arrived, and the connection did not break. */
  created: boolean;
  /** Its Docker-Content-Digest, when it sent exactly one. */
  digest: string | undefined;
}

/** The client went away: nothing to answer. */
export function clientGone(err: unknown): boolean {
  // 'aborted' is the upstream's own kind for it; older upstreams said so only in the message.
  return err instanceof UpstreamError && ((err.kind as string) === 'aborted' || err.message === 'client went away');
}

/** A signal that fires when the client goes away before its answer is complete. */
function abortOnClose(req: Request, res: Response): AbortSignal {
  const controller = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  req.on('aborted', () => controller.abort());
  return controller.signal;
}

export function hasBody(req: Request): boolean {
  const length = req.get('content-length');
  return (length !== undefined && length !== '0') || req.get('transfer-encoding') !== undefined;
}

export class MainRelay {
  /**
   * @param main the main server's registry
   * @param origin the client-facing origin of this proxy for a request (token realms, absolute Locations)
   */
  constructor(
    private readonly main: HttpUpstream,
    private readonly origin: (req: Request) => string,
  ) {}

  /** Send the request (with `body`, or none) to the main server; unreachable is a 503/504/502 in the OCI shape. */
  async send(req: Request, res: Response, body: Readable | Buffer | undefined): Promise<http.IncomingMessage> {
    const signal = abortOnClose(req, res);
    const headers = forwardedHeaders(req);
    try {
      if (Buffer.isBuffer(body)) headers['content-length'] = String(body.length);
      const stream = Buffer.isBuffer(body) ? PassThrough.from([body]) : body;
      return await this.main.request({ method: req.method, path: req.url, headers, ...(stream ? { body: stream } : {}), signal });
    } catch (err) {
      if (err instanceof UpstreamError && !clientGone(err)) unavailable(req, res, err);
      throw err;
    }
  }

  /** Stream an answer to the client as it comes (reads and probes). */
  async relay(req: Request, res: Response, up: http.IncomingMessage): Promise<void> {
    servedFrom(res, 'main');
    this.copyResponseHead(req, res, up);
    dropUnreadBody(req, res);
    await streamTo(up, res);
  }

  /** Read an answer whole (bounded); undefined when it broke off or was not what it announced. */
  async readAnswer(req: Request, up: http.IncomingMessage): Promise<MainAnswer | undefined> {
    const { body, complete } = await readBounded(up, ANSWER_LIMIT).catch(() => ({ body: Buffer.alloc(0), complete: false }));
    const length = up.headers['content-length'];
    const whole = complete && (req.method === 'HEAD' || length === undefined || Number(length) === body.length);
    if (!whole) return undefined;
    const digest = up.headers['docker-content-digest'];
    return { up, body, created: up.statusCode === 201, digest: typeof digest === 'string' ? digest : undefined };
  }

  /** Relay an answer read whole; a broken answer is a 502: the write may or may not have happened there. */
  reply(req: Request, res: Response, answer: MainAnswer | undefined): void {
    if (!answer) {
      dropUnreadBody(req, res);
      res.set('Retry-After', '10');
      throw new RegistryError('UNAVAILABLE', "the main server's answer broke off: the push may not be complete there, push again", undefined, 502);
    }
    this.copyResponseHead(req, res, answer.up);
    dropUnreadBody(req, res);
    servedFrom(res, 'main');
    res.set('Content-Length', String(answer.body.length));
    res.end(answer.body);
  }

  /** Map a URL of the main registry (absolute or relative) to the same resource on this proxy. */
  rewriteToProxy(req: Request, value: string): string {
    const main = this.main;
    let url: URL;
    try {
      url = new URL(value, main.origin);
    } catch {
      return value;
    }
    if (url.origin !== main.origin) return value;
    const base = main.basePath;
    const path = url.pathname === base || url.pathname.startsWith(`${base}/`) ? `${req.baseUrl}${url.pathname.slice(base.length)}` : url.pathname;
    const absolute = /^[a-z][a-z0-9+.-]*:/i.test(value);
    return `${absolute ? this.origin(req) : ''}${path}${url.search}`;
  }

  private rewriteHeader(req: Request, name: string, value: string): string {
    if (name === 'location') return this.rewriteToProxy(req, value);
    if (name === 'link') return value.replace(/<([^>]*)>/g, (_, u: string) => `<${this.rewriteToProxy(req, u)}>`);
    // Clients log in here: the proxy records the token, then passes it on.
    if (name === 'www-authenticate') return value.replace(/realm="[^"]*"/i, `realm="${this.origin(req)}/v2/token"`);
    return value;
  }

  private copyResponseHead(req: Request, res: Response, up: http.IncomingMessage): void {
    res.status(up.statusCode ?? 502);
    for (const name of RESPONSE_HEADERS) {
      const v = up.headers[name];
      if (v === undefined) continue;
      res.set(name, Array.isArray(v) ? v.map((x) => this.rewriteHeader(req, name, x)) : this.rewriteHeader(req, name, v));
    }
  }
}

/** The request headers the main server needs; hop-by-hop and identity headers never pass. */
function forwardedHeaders(req: Request): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = { 'x-request-id': req.id };
  for (const h of REQUEST_HEADERS) {
    const v = req.headers[h];
    if (v !== undefined) headers[h] = v;
  }
  // A chunked body stays chunked: without Content-Length node sends it so.
  return headers;
}

/** The main server could not be reached: 503 at once, in the OCI shape; an upload still arriving is cut. */
function unavailable(req: Request, res: Response, err: UpstreamError): never {
  if (req.readable && !req.readableEnded) res.set('Connection', 'close');
  failedUpstream(res, err.kind);
  res.set('Retry-After', '10');
  const status = err.kind === 'connect' ? 503 : err.kind === 'timeout' ? 504 : 502;
  throw new RegistryError('UNAVAILABLE', `the main server's registry is unavailable: ${err.message}`, undefined, status);
}

/** The main server answered before it read the whole body (e.g. 401): drop the rest, then the connection. */
function dropUnreadBody(req: Request, res: Response): void {
  if (req.complete || !hasBody(req)) return;
  res.set('Connection', 'close');
  req.unpipe();
  req.resume();
}
