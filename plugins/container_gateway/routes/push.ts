// Pushes through a smart proxy (foreman_url set): every write, and the probes
// a client makes before writing, go to the main server's registry with the
// client's Authorization. Bodies stream both ways; the main server's answers
// reach the client unchanged except for what names the main server (absolute
// Locations, Link, the token realm). The main server is the authority on who
// may push: nothing here rejects a request the main server would accept.
import type http from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import type { Request, Response } from 'express';
import { tokenAllows, type GrantedScope } from '../auth/standalone.ts';
import { RegistryError } from '../oci/errors.ts';
import { sha256Digest } from '../oci/grammar.ts';
import type { Gateway } from '../gateway.ts';
import { readBounded, UpstreamError, type HttpUpstream } from '../upstream/http-upstream.ts';
import { streamTo } from '../upstream/stream.ts';
import { abortOnClose } from '../backends/client-abort.ts';
import { readManifestBody } from '../backends/manifest-body.ts';
import { PushMirror, type MainAnswer } from './push-mirror.ts';

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

export type PushTarget =
  | { kind: 'upload-start'; name: string }
  | { kind: 'upload'; name: string; uuid: string }
  | { kind: 'manifest'; name: string; reference: string; isDigest: boolean }
  | { kind: 'blob'; name: string; digest: string };

/**
 * Is this HEAD a probe before a push? Clients ask for a token with push scope
 * on the repository before pushing to it; the proxy remembers the scopes a
 * main-server token was asked for (the main server decides what they grant).
 */
export function pushProbe(gw: Gateway, req: Request, name: string): boolean {
  if (req.method !== 'HEAD' || !gw.main) return false;
  const client = gw.client(req);
  return client.kind === 'user' && Array.isArray(client.grants) && tokenAllows(client.grants as GrantedScope[], name, 'push');
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

/** Map a URL of the main registry (absolute or relative) to the same resource on this proxy. */
export function rewriteToProxy(gw: Gateway, req: Request, main: HttpUpstream, value: string): string {
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
  return `${absolute ? gw.origin(req) : ''}${path}${url.search}`;
}

function rewriteHeader(gw: Gateway, req: Request, main: HttpUpstream, name: string, value: string): string {
  if (name === 'location') return rewriteToProxy(gw, req, main, value);
  if (name === 'link') return value.replace(/<([^>]*)>/g, (_, u: string) => `<${rewriteToProxy(gw, req, main, u)}>`);
  // Clients log in here: the proxy records the token, then passes it on.
  if (name === 'www-authenticate') return value.replace(/realm="[^"]*"/i, `realm="${gw.origin(req)}/v2/token"`);
  return value;
}

function copyResponseHead(gw: Gateway, req: Request, res: Response, main: HttpUpstream, up: http.IncomingMessage): void {
  res.status(up.statusCode ?? 502);
  for (const name of RESPONSE_HEADERS) {
    const v = up.headers[name];
    if (v === undefined) continue;
    res.set(name, Array.isArray(v) ? v.map((x) => rewriteHeader(gw, req, main, name, x)) : rewriteHeader(gw, req, main, name, v));
  }
}

/** The main server could not be reached: 503 at once, in the OCI shape; an upload still arriving is cut. */
function unavailable(req: Request, res: Response, err: UpstreamError): never {
  if (req.readable && !req.readableEnded) res.set('Connection', 'close');
  res.set('Retry-After', '10');
  const status = err.kind === 'connect' ? 503 : err.kind === 'timeout' ? 504 : 502;
  throw new RegistryError('UNAVAILABLE', `the main server's registry is unavailable: ${err.message}`, undefined, status);
}

async function send(req: Request, res: Response, main: HttpUpstream, body: Readable | Buffer | undefined, headers = forwardedHeaders(req)): Promise<http.IncomingMessage> {
  const signal = abortOnClose(req, res);
  try {
    if (Buffer.isBuffer(body)) headers['content-length'] = String(body.length);
    const stream = Buffer.isBuffer(body) ? PassThrough.from([body]) : body;
    return await main.request({ method: req.method, path: req.url, headers, ...(stream ? { body: stream } : {}), signal });
  } catch (err) {
    if (err instanceof UpstreamError && err.message !== 'client went away') unavailable(req, res, err);
    throw err;
  }
}

async function relay(gw: Gateway, req: Request, res: Response, main: HttpUpstream, up: http.IncomingMessage): Promise<void> {
  copyResponseHead(gw, req, res, main, up);
  dropUnreadBody(req, res);
  await streamTo(up, res);
}

/** The main server answered before it read the whole body (e.g. 401): drop the rest, then the connection. */
function dropUnreadBody(req: Request, res: Response): void {
  if (req.complete || !hasBody(req)) return;
  res.set('Connection', 'close');
  req.unpipe();
  req.resume();
}

// Answers to writes are small OCI JSON documents; anything longer is not a registry's answer.
const ANSWER_LIMIT = 1024 * 1024;

async function readAnswer(req: Request, up: http.IncomingMessage): Promise<MainAnswer | undefined> {
  const { body, complete } = await readBounded(up, ANSWER_LIMIT).catch(() => ({ body: Buffer.alloc(0), complete: false }));
  const length = up.headers['content-length'];
  const whole = complete && (req.method === 'HEAD' || length === undefined || Number(length) === body.length);
  if (!whole) return undefined;
  const digest = up.headers['docker-content-digest'];
  return { up, body, created: up.statusCode === 201, digest: typeof digest === 'string' ? digest : undefined };
}

/** Relay an answer read whole; a broken answer is a 502: the write may or may not have happened there. */
function reply(gw: Gateway, req: Request, res: Response, main: HttpUpstream, answer: MainAnswer | undefined): void {
  if (!answer) {
    dropUnreadBody(req, res);
    res.set('Retry-After', '10');
    throw new RegistryError('UNAVAILABLE', "the main server's answer broke off: the push may not be complete there, push again", undefined, 502);
  }
  copyResponseHead(gw, req, res, main, answer.up);
  dropUnreadBody(req, res);
  res.set('Content-Length', String(answer.body.length));
  res.end(answer.body);
}

function hasBody(req: Request): boolean {
  const length = req.get('content-length');
  return (length !== undefined && length !== '0') || req.get('transfer-encoding') !== undefined;
}

/** Forward one write (or push probe) to the main server's registry. */
export async function forwardPush(gw: Gateway, req: Request, res: Response, target: PushTarget): Promise<void> {
  const main = gw.main!.registry;
  const mirror = new PushMirror(gw, req);
  if (target.kind === 'manifest' && req.method === 'PUT') {
    const manifest = await readManifestBody(req);
    const answer = await readAnswer(req, await send(req, res, main, manifest));
    // Stored here only what the main server stored: the same bytes, by its own account, completely answered.
    if (answer?.created && answer.digest === sha256Digest(manifest)) {
      await mirror.manifestPushed(target.name, target.reference, target.isDigest, manifest, req.get('content-type'));
    } else if (answer?.created) {
      req.log.warn(`push of ${target.name}:${target.reference}: the main server answered 201 with digest ${answer.digest ?? '(none)'}, not ${sha256Digest(manifest)}: not stored here`);
    }
    return reply(gw, req, res, main, answer);
  }
  if (target.kind === 'manifest' && req.method === 'DELETE') {
    const answer = await readAnswer(req, await send(req, res, main, undefined));
    if (answer?.up.statusCode === 202) mirror.manifestDeleted(target.name, target.reference, target.isDigest);
    return reply(gw, req, res, main, answer);
  }
  const uploadBody = (target.kind === 'upload' || target.kind === 'upload-start') && hasBody(req);
  if (!uploadBody) {
    const up = await send(req, res, main, undefined);
    const writes = (target.kind === 'upload' && req.method !== 'GET') || (target.kind === 'upload-start' && req.method === 'POST');
    if (!writes) return relay(gw, req, res, main, up);
    const answer = await readAnswer(req, up);
    if (target.kind === 'upload' && req.method === 'DELETE') await mirror.uploadCancelled(target.name, target.uuid);
    if (target.kind === 'upload-start' && answer && (answer.created || answer.up.statusCode === 202)) await mirror.uploadStarted(target.name, answer, req);
    if (target.kind === 'upload' && req.method === 'PUT') {
      if (answer && blobAccepted(answer, req)) await mirror.uploadFinished(target.name, target.uuid, req);
      else await mirror.uploadCancelled(target.name, target.uuid);
    }
    return reply(gw, req, res, main, answer);
  }
  // A blob body: streamed to the main server and, as it passes, into the local store.
  const tee = mirror.teeUpload(target.kind === 'upload' ? target.uuid : undefined, target.name, req);
  const up = await send(req, res, main, tee.upstream).catch(async (err: unknown) => {
    await tee.abandon();
    throw err;
  });
  const answer = await readAnswer(req, up);
  // A PUT or a monolithic POST is done only with 201 for our digest; a PATCH keeps its bytes on 202.
  // A POST answered 202 ignored its body and opened a session.
  const finishing = target.kind === 'upload-start' || req.method === 'PUT';
  const ok = answer !== undefined && (finishing ? blobAccepted(answer, req) : answer.up.statusCode === 202 || answer.up.statusCode === 204);
  await tee.settle(ok);
  if (target.kind === 'upload-start' && answer?.up.statusCode === 202) await mirror.uploadStarted(target.name, answer, req);
  return reply(gw, req, res, main, answer);
}

/** 201 for the digest the client named (our own hash is checked when the store commits). */
function blobAccepted(answer: MainAnswer, req: Request): boolean {
  const digest = req.query.digest ?? req.query.mount;
  return answer.created && typeof digest === 'string' && answer.digest === digest;
}
