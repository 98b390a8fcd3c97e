// Manifest and blob GET/HEAD, served from the pulp backend: Pulp's registry
// API, or any OCI registry at pulp_endpoint + pulp_registry_path. Handles both
// backend styles: 200 with a body, or a 3xx to a content app (passed on with
// its host rewritten to client_endpoint, or followed and streamed).
import type http from 'node:http';
import type { Request, Response } from 'express';
import { remoteUserOf, type RegistryClient } from '../auth/client.ts';
import { RegistryError } from '../oci/errors.ts';
import { sha256Digest } from '../oci/grammar.ts';
import { MANIFEST_LIMIT } from '../oci/manifest.ts';
import type { Gateway } from '../gateway.ts';
import { readBounded, type HttpUpstream } from '../upstream/http-upstream.ts';
import { ManifestCache, type CachedManifest } from '../upstream/manifest-cache.ts';
import { streamTo } from '../upstream/stream.ts';

const FORWARDED_HEADERS = ['accept', 'range', 'if-none-match', 'if-modified-since', 'if-range', 'user-agent'];
const MAX_REDIRECTS = 3;

type Kind = 'manifests' | 'blobs';

function upstreamHeaders(gw: Gateway, req: Request, client: RegistryClient): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = {};
  for (const h of FORWARDED_HEADERS) {
    const v = req.headers[h];
    if (v !== undefined) headers[h] = v;
  }
  headers['x-request-id'] = req.id;
  // The verified identity only; any client-sent copy was removed by the daemon.
  const user = remoteUserOf(client);
  if (user) headers[gw.settings.remote_user_header] = user;
  return headers;
}

export function abortOnClose(req: Request, res: Response): AbortSignal {
  const controller = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  req.on('aborted', () => controller.abort());
  return controller.signal;
}

/** A client-facing Location for a content-app redirect. */
function rewriteLocation(gw: Gateway, location: URL): string {
  const target = gw.settings.client_endpoint;
  if (!target) return location.href;
  const ce = new URL(target);
  location.protocol = ce.protocol;
  location.hostname = ce.hostname;
  if (ce.port) location.port = ce.port;
  return location.href;
}

/** Turn an upstream error answer into an OCI error, without trusting its length (the 416 pitfall). */
async function upstreamFailure(up: http.IncomingMessage, kind: Kind): Promise<RegistryError | { status: number; body: string }> {
  const { body } = await readBounded(up, 64 * 1024).catch(() => ({ body: Buffer.alloc(0) }));
  const status = up.statusCode ?? 502;
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { errors?: unknown };
    if (Array.isArray(parsed.errors) && status >= 400 && status < 500 && status !== 401 && status !== 403) return { status, body: JSON.stringify(parsed) };
  } catch {
    // not an OCI body: answer with our own
  }
  if (status === 404) return new RegistryError(kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN');
  if (status === 416) return new RegistryError('RANGE_INVALID');
  if (status === 429) return new RegistryError('TOOMANYREQUESTS');
  return new RegistryError('UNAVAILABLE', `the content backend answered ${status}`, undefined, 502);
}

interface Fetched {
  up: http.IncomingMessage;
  /** Set when the backend redirected and the redirect is to be passed on. */
  redirect?: string;
}

async function fetchFromBackend(gw: Gateway, req: Request, res: Response | undefined, client: RegistryClient, kind: Kind, name: string, ref: string, method: 'GET' | 'HEAD'): Promise<Fetched> {
  // A fetch shared by several clients (res undefined) must not die with the first one.
  const signal = res ? abortOnClose(req, res) : undefined;
  const headers = upstreamHeaders(gw, req, client);
  let upstream: HttpUpstream = gw.pulp;
  let path = `${gw.settings.pulp_registry_path}${name}/${kind}/${ref}`;
  let base = new URL(path, gw.pulp.origin);
  for (let hop = 0; ; hop++) {
    const up = await upstream.request({ method, path, headers, signal });
    const location = up.headers.location;
    if (!(up.statusCode && up.statusCode >= 300 && up.statusCode < 400 && location)) return { up };
    up.resume();
    const target = new URL(location, base);
    // HEAD is always answered here (200 with the real headers), never as a redirect.
    if (gw.settings.redirect_mode === 'pass' && method === 'GET') return { up, redirect: rewriteLocation(gw, target) };
    if (hop >= MAX_REDIRECTS) throw new RegistryError('UNAVAILABLE', 'the content backend redirected too often', undefined, 502);
    upstream = target.origin === gw.pulp.origin ? gw.pulp : gw.contentApp(target.origin);
    path = target.pathname + target.search;
    base = target;
    delete headers[gw.settings.remote_user_header];
  }
}

type ManifestResult =
  | { kind: 'manifest'; value: CachedManifest }
  | { kind: 'redirect'; location: string }
  | { kind: 'failure'; failure: RegistryError | { status: number; body: string } };

async function fetchManifest(gw: Gateway, req: Request, client: RegistryClient, name: string, ref: string, key: string): Promise<ManifestResult> {
  // Manifests are small: always GET them, to answer HEAD with a true digest and length.
  const { up, redirect } = await fetchFromBackend(gw, req, undefined, client, 'manifests', name, ref, 'GET');
  if (redirect) return { kind: 'redirect', location: redirect };
  if ((up.statusCode ?? 500) >= 300) return { kind: 'failure', failure: await upstreamFailure(up, 'manifests') };
  const { body, complete } = await readBounded(up, MANIFEST_LIMIT);
  if (!complete) throw new RegistryError('UNAVAILABLE', 'the content backend ended the manifest early', undefined, 502);
  const digest = sha256Digest(body);
  if (ref.startsWith('sha256:') && ref !== digest) throw new RegistryError('UNAVAILABLE', `the content backend returned a manifest whose digest is ${digest}`, undefined, 502);
  let contentType = up.headers['content-type'];
  if (!contentType) contentType = (JSON.parse(body.toString('utf8')) as { mediaType?: string }).mediaType ?? 'application/vnd.oci.image.manifest.v1+json';
  const value = { body, contentType, digest };
  gw.manifests.set(key, value);
  return { kind: 'manifest', value };
}

export async function pullManifest(gw: Gateway, req: Request, res: Response, client: RegistryClient, name: string, ref: string): Promise<void> {
  const key = ManifestCache.key(name, ref, req.get('accept'));
  let value = gw.manifests.get(key);
  if (!value) {
    const result = await gw.manifests.shared(key, () => fetchManifest(gw, req, client, name, ref, key));
    if (result.kind === 'redirect') {
      res.redirect(302, result.location);
      return;
    }
    if (result.kind === 'failure') return sendFailure(res, result.failure);
    value = result.value;
  }
  res.status(200).set({ 'Content-Type': value.contentType, 'Content-Length': String(value.body.length), 'Docker-Content-Digest': value.digest });
  res.end(req.method === 'HEAD' ? undefined : value.body);
}

export async function pullBlob(gw: Gateway, req: Request, res: Response, client: RegistryClient, name: string, digest: string): Promise<void> {
  const method = req.method === 'HEAD' ? 'HEAD' : 'GET';
  const { up, redirect } = await fetchFromBackend(gw, req, res, client, 'blobs', name, digest, method);
  if (redirect) {
    res.redirect(302, redirect);
    return;
  }
  const status = up.statusCode ?? 500;
  if (status !== 200 && status !== 206) return sendFailure(res, await upstreamFailure(up, 'blobs'));
  res.status(status);
  res.set('Content-Type', up.headers['content-type'] ?? 'application/octet-stream');
  res.set('Docker-Content-Digest', digest);
  res.set('Accept-Ranges', 'bytes');
  for (const h of ['content-length', 'content-range', 'etag', 'last-modified']) {
    const v = up.headers[h];
    if (typeof v === 'string') res.set(h, v);
  }
  if (method === 'HEAD') {
    up.resume();
    res.end();
    return;
  }
  res.flushHeaders();
  await streamTo(up, res).catch((err: Error) => gw.logger.warn(`blob ${name}@${digest} cut: ${err.message}`));
}

function sendFailure(res: Response, failure: RegistryError | { status: number; body: string }): void {
  if (failure instanceof RegistryError) throw failure;
  res.status(failure.status).set({ 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(Buffer.byteLength(failure.body)) });
  res.end(res.req.method === 'HEAD' ? undefined : failure.body);
}

