// Pulp as a content backend: reads only, from Pulp's registry API or any OCI
// registry at pulp_endpoint + pulp_registry_path, as the client (its verified
// identity in the remote-user header). Both backend styles work: 200 with a
// body, or a 3xx to a content app (passed on with its host rewritten to
// client_endpoint, or followed and streamed). Manifests are cached briefly
// (many hosts pulling one tag cost one backend request). It has no writes and
// does not know referrers.
import type http from 'node:http';
import type { Request, Response } from 'express';
import type { Logger } from '../../../lib/plugins/api.ts';
import { remoteUserOf, type RegistryClient } from '../auth/client.ts';
import { RegistryError } from '../oci/errors.ts';
import { sha256Digest } from '../oci/grammar.ts';
import { MANIFEST_LIMIT } from '../oci/manifest.ts';
import type { GatewaySettings } from '../settings.ts';
import { HttpUpstream, readBounded, type UpstreamTimeouts, type UpstreamTls } from '../upstream/http-upstream.ts';
import { ManifestCache, type CachedManifest } from '../upstream/manifest-cache.ts';
import { streamTo } from '../upstream/stream.ts';
import { abortOnClose } from './client-abort.ts';
import type { ContentBackend, Exchange, FlatpakAnswer, FlatpakExchange, FlatpakIndex, FlatpakQuery, ManifestReference } from './content-backend.ts';

const FORWARDED_HEADERS = ['accept', 'range', 'if-none-match', 'if-modified-since', 'if-range', 'user-agent'];
const MAX_REDIRECTS = 3;
const MAX_TAG_PAGES = 100;
const FLATPAK_INDEX_LIMIT = 64 * 1024 * 1024;

type Kind = 'manifests' | 'blobs';
type Failure = RegistryError | { status: number; body: string };
type ManifestResult = { kind: 'manifest'; value: CachedManifest } | { kind: 'redirect'; location: string } | { kind: 'failure'; failure: Failure };

export interface PulpOptions {
  settings: GatewaySettings;
  timeouts: UpstreamTimeouts;
  tls: UpstreamTls;
  /** Shared with what empties it when content changes (Katello's repository_list, syncs). */
  manifests: ManifestCache;
  logger: Logger;
}

export class PulpBackend implements ContentBackend {
  private readonly pulp: HttpUpstream;
  /** Redirect targets (Pulp's content app), one pool per origin. */
  private readonly contentApps = new Map<string, HttpUpstream>();
  private readonly settings: GatewaySettings;
  private readonly manifests: ManifestCache;

  constructor(private readonly options: PulpOptions) {
    const s = (this.settings = options.settings);
    this.manifests = options.manifests;
    this.pulp = new HttpUpstream(s.pulp_endpoint, options.timeouts, options.tls, s.upstream_max_sockets);
  }

  async getManifest(x: Exchange, { reference }: ManifestReference): Promise<void> {
    const { req, res, access } = x;
    const key = ManifestCache.key(access.name, reference, req.get('accept'));
    let value = this.manifests.get(key);
    if (!value) {
      const result = await this.manifests.shared(key, () => this.fetchManifest(req, access.client, access.name, reference, key));
      if (result.kind === 'redirect') return void res.redirect(302, result.location);
      if (result.kind === 'failure') return sendFailure(res, result.failure);
      value = result.value;
    }
    res.status(200).set({ 'Content-Type': value.contentType, 'Content-Length': String(value.body.length), 'Docker-Content-Digest': value.digest });
    res.end(req.method === 'HEAD' ? undefined : value.body);
  }

  async getBlob(x: Exchange, digest: string): Promise<void> {
    const { req, res, access } = x;
    const method = req.method === 'HEAD' ? 'HEAD' : 'GET';
    const { up, redirect } = await this.fetch(req, res, access.client, 'blobs', access.name, digest, method);
    if (redirect) return void res.redirect(302, redirect);
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
    await streamTo(up, res).catch((err: Error) => this.options.logger.warn(`blob ${access.name}@${digest} cut: ${err.message}`));
  }

  /** Every tag, following the backend's own Link pages; then the page the client asked for. */
  async tags(x: Exchange, last: string | undefined, limit: number): Promise<string[]> {
    const { req, access } = x;
    const tags: string[] = [];
    let path = `${this.settings.pulp_registry_path}${access.name}/tags/list?n=1000`;
    for (let i = 0; i < MAX_TAG_PAGES; i++) {
      const headers: http.OutgoingHttpHeaders = { accept: 'application/json', 'x-request-id': req.id };
      const user = remoteUserOf(access.client);
      if (user) headers[this.settings.remote_user_header] = user;
      const up = await this.pulp.request({ method: 'GET', path, headers });
      const { body, complete } = await readBounded(up, 16 * 1024 * 1024);
      if (up.statusCode === 404) throw new RegistryError('NAME_UNKNOWN', 'Repository name unknown', { name: access.name });
      if (up.statusCode !== 200 || !complete) throw new RegistryError('UNAVAILABLE', `the content backend answered ${up.statusCode} for the tag list`, undefined, 502);
      const parsed = JSON.parse(body.toString('utf8')) as { tags?: unknown };
      if (Array.isArray(parsed.tags)) tags.push(...parsed.tags.filter((t): t is string => typeof t === 'string'));
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(String(up.headers.link ?? ''))?.[1];
      if (!next) break;
      // Absolute, from the Host Pulp saw: only its path and query matter, and Pulp names its own /v2/
      // even when reached through a mapped path (Katello's /pulpcore_registry/v2/).
      const url = new URL(next, this.pulp.origin);
      let nextPath = url.pathname.slice(url.pathname.startsWith(this.pulp.basePath) ? this.pulp.basePath.length : 0);
      if (!nextPath.startsWith(this.settings.pulp_registry_path) && nextPath.startsWith('/v2/')) nextPath = this.settings.pulp_registry_path + nextPath.slice(4);
      path = nextPath + url.search;
    }
    return [...new Set(tags)].sort().filter((t) => last === undefined || t > last).slice(0, limit);
  }

  /**
   * Pulp's /index/static, next to its /v2/ (Katello maps /pulpcore_registry/
   * onto Pulp's root), asked as the client. The query is re-encoded from its
   * parsed pairs: keys such as `label:org.flatpak.ref:exists` reach Pulp
   * intact however the client escaped them. `Registry` becomes this
   * gateway, so that flatpak pulls through it.
   */
  async flatpakIndex(x: FlatpakExchange, query: FlatpakQuery): Promise<FlatpakAnswer> {
    const root = this.settings.pulp_registry_path.replace(/v2\/$/, '');
    const qs = query.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
    const headers: http.OutgoingHttpHeaders = { accept: 'application/json', 'x-request-id': x.req.id };
    const user = remoteUserOf(x.client);
    if (user) headers[this.settings.remote_user_header] = user;
    const up = await this.pulp.request({ method: 'GET', path: `${root}index/static${qs ? `?${qs}` : ''}`, headers });
    const { body, complete } = await readBounded(up, FLATPAK_INDEX_LIMIT);
    if (!complete) throw new RegistryError('UNAVAILABLE', 'the content backend ended the flatpak index early', undefined, 502);
    const text = body.toString('utf8');
    if (up.statusCode !== 200) {
      if (up.statusCode && up.statusCode >= 400 && up.statusCode < 500) return { kind: 'failure', status: up.statusCode, contentType: String(up.headers['content-type'] ?? 'text/plain'), body: text };
      throw new RegistryError('UNAVAILABLE', `the content backend answered ${up.statusCode} for the flatpak index`, undefined, 502);
    }
    let index: FlatpakIndex;
    try {
      index = JSON.parse(text) as FlatpakIndex;
    } catch {
      throw new RegistryError('UNAVAILABLE', 'the content backend answered a flatpak index that is not JSON', undefined, 502);
    }
    if (!index || !Array.isArray(index.Results)) throw new RegistryError('UNAVAILABLE', 'the content backend answered a flatpak index without Results', undefined, 502);
    return { kind: 'index', index: { ...index, Registry: x.origin } };
  }

  /** The status of the backend's registry root (what /v1/_ping reports). */
  async ping(req: Request): Promise<number> {
    const up = await this.pulp.request({ method: 'GET', path: this.settings.pulp_registry_path, headers: { 'x-request-id': req.id } });
    up.resume();
    return up.statusCode ?? 502;
  }

  close(): void {
    this.pulp.close();
    for (const up of this.contentApps.values()) up.close();
    this.contentApps.clear();
  }

  private contentApp(origin: string): HttpUpstream {
    let up = this.contentApps.get(origin);
    if (!up) {
      up = new HttpUpstream(origin, this.options.timeouts, this.options.tls, this.settings.upstream_max_sockets);
      this.contentApps.set(origin, up);
    }
    return up;
  }

  private headers(req: Request, client: RegistryClient): http.OutgoingHttpHeaders {
    const headers: http.OutgoingHttpHeaders = {};
    for (const h of FORWARDED_HEADERS) {
      const v = req.headers[h];
      if (v !== undefined) headers[h] = v;
    }
    headers['x-request-id'] = req.id;
    // The verified identity only; any client-sent copy was removed by the daemon.
    const user = remoteUserOf(client);
    if (user) headers[this.settings.remote_user_header] = user;
    return headers;
  }

  /** A client-facing Location: scheme, host and port may become client_endpoint's; path and query stay byte for byte (Pulp's token signs them). */
  private rewriteLocation(target: Location): string {
    const ce = this.settings.client_endpoint;
    if (!ce) return target.origin + target.pathAndQuery;
    const origin = new URL(target.origin);
    const c = new URL(ce);
    origin.protocol = c.protocol;
    origin.hostname = c.hostname;
    if (c.port) origin.port = c.port;
    return origin.origin + target.pathAndQuery;
  }

  /** GET/HEAD from the backend, following (or, redirect_mode pass, handing back) its redirects. */
  private async fetch(req: Request, res: Response | undefined, client: RegistryClient, kind: Kind, name: string, ref: string, method: 'GET' | 'HEAD'): Promise<{ up: http.IncomingMessage; redirect?: string }> {
    // A fetch shared by several clients (res undefined) must not die with the first one.
    const signal = res ? abortOnClose(req, res) : undefined;
    const headers = this.headers(req, client);
    let upstream = this.pulp;
    let path = `${this.settings.pulp_registry_path}${name}/${kind}/${ref}`;
    let origin = this.pulp.origin;
    for (let hop = 0; ; hop++) {
      const up = await upstream.request({ method, path, headers, signal });
      const location = up.headers.location;
      if (!(up.statusCode && up.statusCode >= 300 && up.statusCode < 400 && location)) return { up };
      up.resume();
      const target = splitLocation(location, origin);
      // HEAD is always answered here (200 with the real headers), never as a redirect.
      if (this.settings.redirect_mode === 'pass' && method === 'GET') return { up, redirect: this.rewriteLocation(target) };
      if (hop >= MAX_REDIRECTS) throw new RegistryError('UNAVAILABLE', 'the content backend redirected too often', undefined, 502);
      upstream = target.origin === this.pulp.origin ? this.pulp : this.contentApp(target.origin);
      path = target.pathAndQuery;
      origin = target.origin;
      delete headers[this.settings.remote_user_header];
    }
  }

  private async fetchManifest(req: Request, client: RegistryClient, name: string, ref: string, key: string): Promise<ManifestResult> {
    // Manifests are small: always GET them, to answer HEAD with a true digest and length.
    const { up, redirect } = await this.fetch(req, undefined, client, 'manifests', name, ref, 'GET');
    if (redirect) return { kind: 'redirect', location: redirect };
    if ((up.statusCode ?? 500) >= 300) return { kind: 'failure', failure: await upstreamFailure(up, 'manifests') };
    const { body, complete } = await readBounded(up, MANIFEST_LIMIT);
    if (!complete) throw new RegistryError('UNAVAILABLE', 'the content backend ended the manifest early', undefined, 502);
    const digest = sha256Digest(body);
    if (ref.startsWith('sha256:') && ref !== digest) throw new RegistryError('UNAVAILABLE', `the content backend returned a manifest whose digest is ${digest}`, undefined, 502);
    let contentType = up.headers['content-type'];
    if (!contentType) contentType = (JSON.parse(body.toString('utf8')) as { mediaType?: string }).mediaType ?? 'application/vnd.oci.image.manifest.v1+json';
    const value = { body, contentType, digest };
    this.manifests.set(key, value);
    return { kind: 'manifest', value };
  }
}

interface Location {
  origin: string;
  /** Path and query exactly as the backend sent them. */
  pathAndQuery: string;
}

/** Split a Location without re-encoding it: a URL parser would normalise what a signature covers. */
export function splitLocation(raw: string, base: string): Location {
  const absolute = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)([^#]*)/i.exec(raw);
  if (absolute) return { origin: new URL(absolute[1]!).origin, pathAndQuery: absolute[2] || '/' };
  if (raw.startsWith('/') && !raw.startsWith('//')) return { origin: new URL(base).origin, pathAndQuery: raw.split('#')[0]! };
  const u = new URL(raw, base);
  return { origin: u.origin, pathAndQuery: u.pathname + u.search };
}

/** Turn an upstream error answer into an OCI error, without trusting its length (the 416 pitfall). */
async function upstreamFailure(up: http.IncomingMessage, kind: Kind): Promise<Failure> {
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

/** The backend's own OCI error answer is passed on as it came; ours is thrown. */
function sendFailure(res: Response, failure: Failure): void {
  if (failure instanceof RegistryError) throw failure;
  res.status(failure.status).set({ 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(Buffer.byteLength(failure.body)) });
  res.end(res.req.method === 'HEAD' ? undefined : failure.body);
}
