// A client of the main server's registry (Katello's /v2, or any registry),
// for sync and push: GET/HEAD under /v2 with the Docker token dance (the
// proxy's sync credentials, or anonymous), 3xx followed for blobs (Go-style:
// Authorization dropped across origins), paged catalog and tags/list, and
// retries with exponential backoff on connect failures, 5xx and 429, each
// retry reported so the operator hears "main server unreachable, retrying".
import type http from 'node:http';
import { HttpUpstream, readBounded, UpstreamError, type UpstreamTimeouts } from './http-upstream.ts';
import { followRedirects } from './redirects.ts';
import type { RegistryFetch } from '../oci/registry-fetch.ts';

export interface RetryNotice {
  /** 1 for the first retry. */
  attempt: number;
  retries: number;
  delayMs: number;
  reason: string;
  /** e.g. "main server unreachable (connect ECONNREFUSED), retrying in 4 s (attempt 2/5)"; "failing" for 5xx/429. */
  message: string;
}

export interface MainRegistryOptions {
  /** The registry API base, e.g. `https://foreman.example.com/v2/` (a bare origin means `<origin>/v2/`). */
  url: string;
  /** Basic credentials for the token endpoint; without them requests go anonymous. */
  credentials?: { username: string; password: string };
  timeouts: UpstreamTimeouts;
  /** CA file for the main server's host (its content app on other ports included); other hosts use the system roots. */
  ca?: string;
  maxSockets?: number;
  /** The connection pool of each origin, when the caller owns them (MainServer); else this client makes its own. */
  upstreamFor?: (origin: string) => HttpUpstream;
  /** Retries of one request after the first failure (connect error, 5xx, 429). */
  retries: number;
  /** First backoff delay in ms, doubled per retry up to 30 s (default 1000). */
  backoffMs?: number;
  /** Told of every retry; `undefined` once a request succeeds again. */
  onRetry?: (notice: RetryNotice | undefined) => void;
  /** Aborts requests in flight and backoff waits. */
  signal?: AbortSignal;
  /** Page size asked of catalog and tags/list (default 1000). */
  pageSize?: number;
}

/** A definite answer that is not what we needed (bad credentials, 404...). Not retried. */
export class MainRegistryError extends Error {
  override readonly name = 'MainRegistryError';
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** Retries exhausted: the main server is down or failing. Callers stop the whole run on this. */
export class MainRegistryUnavailable extends Error {
  override readonly name = 'MainRegistryUnavailable';
}

interface Challenge {
  scheme: 'bearer' | 'basic';
  params: Record<string, string>;
}

/** The first Bearer (else Basic) challenge of WWW-Authenticate headers. */
export function parseChallenge(header: string | string[] | undefined): Challenge | undefined {
  const values = header === undefined ? [] : Array.isArray(header) ? header : [header];
  let basic: Challenge | undefined;
  for (const value of values) {
    const m = /^\s*(\w+)\s*(.*)$/.exec(value);
    if (!m) continue;
    const scheme = m[1]!.toLowerCase();
    const params: Record<string, string> = {};
    for (const p of m[2]!.matchAll(/(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g)) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
    if (scheme === 'bearer' && params.realm) return { scheme, params };
    if (scheme === 'basic') basic ??= { scheme, params };
  }
  return basic;
}

/** `<url>; rel="next"` of a Link header. */
export function nextLink(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header.join(',') : header;
  if (!value) return undefined;
  for (const part of value.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>(.*)$/.exec(part);
    if (m && /;\s*rel="?next"?/i.test(m[2]!)) return m[1];
  }
  return undefined;
}

/** The token scope a path under /v2 needs. */
export function scopeOf(path: string): string | undefined {
  if (path.startsWith('/_catalog')) return 'registry:catalog:*';
  const m = /^\/(.+?)\/(?:manifests|blobs|tags|referrers)\//.exec(path);
  return m ? `repository:${m[1]}:pull` : undefined;
}

const MAX_REDIRECTS = 5;
const MAX_BACKOFF_MS = 30_000;
const LIST_LIMIT = 32 * 1024 * 1024;

function retryable(status: number): boolean {
  return status >= 500 || status === 429;
}

function abortError(): Error {
  return new MainRegistryError('the sync was stopped');
}

export class MainRegistry {
  private readonly base: URL;
  private readonly basePath: string;
  private readonly upstreams = new Map<string, HttpUpstream>();
  /** Bearer tokens (or 'Basic ...') per scope, until their expiry. */
  private readonly tokens = new Map<string, { authorization: string; expiresAt: number }>();
  private readonly pending = new Map<string, Promise<string | undefined>>();
  /** The main server's challenge, once seen (lets credentialed requests authenticate up front). */
  private challenge: Challenge | undefined;
  private pinged = false;
  private failing = false;

  constructor(private readonly o: MainRegistryOptions) {
    const url = new URL(o.url);
    if (url.pathname === '/' || url.pathname === '') url.pathname = '/v2/';
    this.base = url;
    this.basePath = url.pathname.replace(/\/$/, '');
    // Stopping fails the requests in flight at once (each carries the signal) and closes the pools of its own.
    o.signal?.addEventListener('abort', () => this.close(), { once: true });
  }

  get url(): string {
    return this.base.href;
  }

  /** A RegistryFetch over this client (the scope comes from the path). */
  readonly fetch: RegistryFetch = (method, path, headers) => this.request(method, path, headers);

  /** GET or HEAD `path` (relative to /v2, with its query), authenticated, redirects followed, retried. */
  async request(method: 'GET' | 'HEAD', path: string, headers: Record<string, string> = {}, scope = scopeOf(path)): Promise<http.IncomingMessage> {
    for (let attempt = 0; ; attempt++) {
      this.checkAborted();
      let reason: string;
      try {
        const res = await this.once(method, path, headers, scope);
        if (!retryable(res.statusCode ?? 0)) {
          this.recovered();
          return res;
        }
        res.resume();
        reason = `${method} ${path} answered ${res.statusCode}`;
        if (attempt >= this.o.retries) throw new MainRegistryUnavailable(`main server failing after ${this.o.retries + 1} attempts: ${reason}`);
        const after = Number(res.headers['retry-after']);
        await this.backoff(attempt + 1, reason, Number.isFinite(after) && after > 0 ? Math.min(after * 1000, MAX_BACKOFF_MS) : undefined, 'failing');
      } catch (err) {
        if (this.o.signal?.aborted) throw abortError();
        if (err instanceof MainRegistryUnavailable) throw err;
        if (!(err instanceof UpstreamError) && !(err instanceof MainRegistryError && err.status !== undefined && retryable(err.status))) throw err;
        reason = err.message;
        if (attempt >= this.o.retries) throw new MainRegistryUnavailable(`main server unreachable after ${this.o.retries + 1} attempts: ${reason}`);
        await this.backoff(attempt + 1, reason);
      }
    }
  }

  /** Repository names of the catalog visible to the sync identity, every page. */
  catalog(): Promise<string[]> {
    return this.list('/_catalog', 'repositories');
  }

  /** Tags of a repository, every page. */
  tags(name: string): Promise<string[]> {
    return this.list(`/${name}/tags/list`, 'tags');
  }

  close(): void {
    for (const up of this.upstreams.values()) up.close();
    this.upstreams.clear();
  }

  // --- internals ---

  private async list(path: string, key: 'repositories' | 'tags'): Promise<string[]> {
    const out: string[] = [];
    const seen = new Set<string>();
    let next: string | undefined = `${path}?n=${this.o.pageSize ?? 1000}`;
    while (next !== undefined && !seen.has(next)) {
      seen.add(next);
      const res = await this.request('GET', next, { Accept: 'application/json' }, scopeOf(path));
      const { body, complete } = await readBounded(res, LIST_LIMIT);
      if (res.statusCode === 404) throw new MainRegistryError(`${path} is unknown to the main server (404)`, 404);
      if (res.statusCode !== 200) throw new MainRegistryError(`GET ${path} answered ${res.statusCode}: ${body.toString('utf8').slice(0, 200)}`, res.statusCode);
      if (!complete) throw new UpstreamError('reset', `GET ${path}: the body ended early`);
      let items: unknown;
      try {
        items = (JSON.parse(body.toString('utf8')) as Record<string, unknown>)[key];
      } catch {
        throw new MainRegistryError(`GET ${path} did not answer JSON`);
      }
      if (items !== null && items !== undefined && !Array.isArray(items)) throw new MainRegistryError(`GET ${path}: '${key}' is not a list`);
      for (const item of (items as unknown[] | null) ?? []) if (typeof item === 'string') out.push(item);
      next = this.relative(nextLink(res.headers.link), next);
    }
    return out;
  }

  /** A Link target as a path under /v2 (Pulp sends absolute URLs of its own). */
  private relative(link: string | undefined, current: string): string | undefined {
    if (!link) return undefined;
    const url = new URL(link, new URL(this.basePath + current, this.base));
    return url.pathname.startsWith(`${this.basePath}/`) ? url.pathname.slice(this.basePath.length) + url.search : undefined;
  }

  private upstream(origin: string): HttpUpstream {
    if (this.o.upstreamFor) return this.o.upstreamFor(origin);
    let up = this.upstreams.get(origin);
    if (!up) {
      // The main server's CA for its own host (Pulp's content app runs there on another port); system roots elsewhere (S3).
      const ours = new URL(origin).hostname === this.base.hostname;
      up = new HttpUpstream(origin, this.o.timeouts, ours && this.o.ca ? { ca: this.o.ca } : {}, this.o.maxSockets);
      this.upstreams.set(origin, up);
    }
    return up;
  }

  private send(url: URL, method: string, headers: Record<string, string>): Promise<http.IncomingMessage> {
    this.checkAborted();
    return this.upstream(url.origin).request({ method, path: url.pathname + url.search, headers, ...(this.o.signal ? { signal: this.o.signal } : {}) });
  }

  /** One attempt: auth as needed, then redirects. */
  private async once(method: 'GET' | 'HEAD', path: string, headers: Record<string, string>, scope: string | undefined): Promise<http.IncomingMessage> {
    const url = new URL(this.basePath + path, this.base);
    let authorization = await this.authorization(scope, false);
    let res = await this.send(url, method, { ...headers, ...(authorization ? { Authorization: authorization } : {}) });
    if (res.statusCode === 401) {
      const challenge = parseChallenge(res.headers['www-authenticate']);
      if (challenge && (challenge.scheme === 'bearer' || this.o.credentials)) {
        res.resume();
        this.challenge = challenge;
        const key = scope ?? challenge.params.scope ?? '';
        this.tokens.delete(key);
        authorization = await this.authorization(key, true);
        res = await this.send(url, method, { ...headers, ...(authorization ? { Authorization: authorization } : {}) });
      }
    }
    return followRedirects(res, url, headers, authorization, (target, h) => this.send(target, method, h), MAX_REDIRECTS, () => new MainRegistryError(`${method} ${path}: more than ${MAX_REDIRECTS} redirects`));
  }

  /**
   * The Authorization for a scope: cached, or (with credentials, or after a
   * challenge) fetched. `force`: a request was just refused, get one now.
   */
  private async authorization(scope: string | undefined, force: boolean): Promise<string | undefined> {
    const key = scope ?? '';
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached.authorization;
    if (!force && !this.o.credentials) return undefined;
    // With credentials, learn the challenge up front: Katello's catalog never
    // answers 401, it just shows anonymous clients less.
    if (!this.challenge && this.o.credentials && !this.pinged) await this.ping();
    if (!this.challenge) return undefined;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetchToken(this.challenge, key).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  private async ping(): Promise<void> {
    const res = await this.send(new URL(`${this.basePath}/`, this.base), 'GET', {});
    res.resume();
    this.pinged = true;
    if (res.statusCode === 401) this.challenge = parseChallenge(res.headers['www-authenticate']);
    else if (retryable(res.statusCode ?? 0)) {
      this.pinged = false;
      throw new MainRegistryError(`GET ${this.basePath}/ answered ${res.statusCode}`, res.statusCode);
    }
  }

  private basic(): string | undefined {
    const c = this.o.credentials;
    return c ? `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}` : undefined;
  }

  private async fetchToken(challenge: Challenge, scope: string): Promise<string | undefined> {
    if (challenge.scheme === 'basic') {
      const basic = this.basic();
      if (basic) this.tokens.set(scope, { authorization: basic, expiresAt: Number.MAX_SAFE_INTEGER });
      return basic;
    }
    const realm = new URL(challenge.params.realm!, this.base);
    if (challenge.params.service) realm.searchParams.set('service', challenge.params.service);
    if (scope) realm.searchParams.set('scope', scope);
    if (this.o.credentials) realm.searchParams.set('account', this.o.credentials.username);
    const basic = this.basic();
    const res = await this.send(realm, 'GET', { Accept: 'application/json', ...(basic ? { Authorization: basic } : {}) });
    const { body } = await readBounded(res, 1024 * 1024);
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new MainRegistryError(
        this.o.credentials
          ? `the main server refused the sync credentials of '${this.o.credentials.username}' (token request answered ${res.statusCode}): check sync_username and sync_password`
          : `the main server requires credentials (token request answered ${res.statusCode}): set sync_username and sync_password`,
        res.statusCode,
      );
    }
    if (res.statusCode !== 200) throw new MainRegistryError(`token request to ${realm.origin}${realm.pathname} answered ${res.statusCode}`, res.statusCode);
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      doc = JSON.parse(body.toString('utf8')) as typeof doc;
    } catch {
      throw new MainRegistryError(`token response of ${realm.origin}${realm.pathname} is not JSON`);
    }
    const token = typeof doc.token === 'string' && doc.token ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : '';
    if (!token) throw new MainRegistryError(`token response of ${realm.origin}${realm.pathname} has no token`);
    // Katello: issued_at is the token's creation, issued_at + expires_in its real expiry.
    const lifetimeMs = (typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : 60) * 1000;
    const issued = typeof doc.issued_at === 'string' ? Date.parse(doc.issued_at) : NaN;
    const now = Date.now();
    const expiry = Math.min(Number.isFinite(issued) ? issued + lifetimeMs : now + lifetimeMs, now + lifetimeMs);
    const authorization = `Bearer ${token}`;
    this.tokens.set(scope, { authorization, expiresAt: expiry - Math.min(30_000, lifetimeMs / 4) });
    return authorization;
  }

  private checkAborted(): void {
    if (this.o.signal?.aborted) throw abortError();
  }

  private recovered(): void {
    if (!this.failing) return;
    this.failing = false;
    this.o.onRetry?.(undefined);
  }

  private async backoff(attempt: number, reason: string, delayMs?: number, state: 'unreachable' | 'failing' = 'unreachable'): Promise<void> {
    const delay = delayMs ?? Math.min((this.o.backoffMs ?? 1000) * 2 ** (attempt - 1), MAX_BACKOFF_MS);
    const seconds = delay >= 1000 ? `${Math.round(delay / 1000)} s` : `${delay} ms`;
    const message = `main server ${state} (${reason}), retrying in ${seconds} (attempt ${attempt}/${this.o.retries})`;
    this.failing = true;
    this.o.onRetry?.({ attempt, retries: this.o.retries, delayMs: delay, reason, message });
    await new Promise<void>((resolve, reject) => {
      const signal = this.o.signal;
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, delay);
      const onAbort = () => {
        clearTimeout(timer);
        reject(abortError());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
