// A test double of the Katello main server (katello-api.md §1-§3, §7): the
// registry endpoints a container gateway calls, `GET /v2/token` and
// `GET /v2/_catalog`, the `/v2` and `/v1/_ping` pings, and pushes: names
// checked as Katello does (three components `org/product/name` or
// `id/<org>/<product>/<name>`, else 400 NAME_INVALID; 409 for taken names,
// 404 NAME_UNKNOWN for unknown products, 404 DENIED without push rights), the
// content kept in memory (helpers/katello-push.ts). DELETEs, upload status and
// referrers are not implemented, as in Katello: 404 "Route not found". Tokens
// are opaque, one per user, reused across logins; the catalog never answers
// 401; a revoked user's Bearer and scoped token requests are refused. Plain
// node:http (or https) on 127.0.0.1, port 0, optionally under a path
// (`basePath`, for a foreman_url like https://f/foreman). Every request is
// recorded for assertions.
//
// Where docker-registry stands in for Katello's registry (helpers/main-server.ts,
// the `jwt` option), these differ from Katello, and only these:
// - tokens are RS256 JWTs scoped to what was asked, a new one per login
//   (Katello: one opaque, unscoped token per user, reused);
// - docker-registry stores the pushes and answers like the distribution
//   registry (absolute Locations, 202 for a monolithic POST, DELETE enabled or
//   not per its config, no 302 for blobs), not like Katello in front of Pulp;
// - push names are not checked by docker-registry: the double grants `push`
//   only for Katello-shaped names of existing products, so other names get
//   docker-registry's 401, not Katello's 400/404/409;
// - revocation takes effect at the next login: docker-registry honours a JWT
//   until it expires.
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { KatelloDoubleOptions, KatelloUser, Override, RecordedRequest } from './katello-options.ts';
import { JwtSigner, parseScopes, pem, type JwtAccess, type JwtClaims, type Scope } from './katello-jwt.ts';
import { PushedContent, refusePushName, type PushNameRules } from './katello-push.ts';

export { decodeJwt, parseScopes, type JwtAccess, type JwtClaims, type KatelloJwtOptions, type Scope } from './katello-jwt.ts';
export type { KatelloDoubleOptions, KatelloUser, Override, RecordedRequest } from './katello-options.ts';

interface PersonalToken {
  token: string;
  /** ms */
  createdAt: number;
  /** ms */
  expiresAt: number;
}

/** Ruby `Time#rfc3339` of a UTC time as Katello renders it: `2026-11-22T10:00:00+00:00`. */
export function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, '+00:00');
}

export class KatelloDouble {
  readonly users: Record<string, KatelloUser>;
  readonly publicRepositories: string[];
  readonly hosts: Record<string, string[]>;
  tokenExpiresIn: number;
  readonly revoked: Set<string>;
  /** Every request received, in order. */
  readonly requests: RecordedRequest[] = [];
  /** Personal access tokens named `registry`, by user (without `jwt`). */
  readonly tokens = new Map<string, PersonalToken>();
  /** With `jwt`: every JWT issued, with its user and expiry (ms). */
  readonly jwts = new Map<string, { user: string; expiresAt: number; claims: JwtClaims }>();
  private readonly latestJwt = new Map<string, string>();
  private readonly jwtSigner: JwtSigner | undefined;
  private readonly server: http.Server;
  private readonly tls: boolean;
  private readonly now: () => number;
  private readonly publicScopeWithBasic: 'unauthenticated' | 'token';
  private readonly sockets = new Set<net.Socket>();
  private overrideFn: Override | undefined;
  private readonly basePath: string;
  private readonly pushRules: PushNameRules;
  /** What was pushed to the double (without `jwt`: docker-registry holds those). */
  readonly pushed = new PushedContent();
  port = 0;

  constructor(opts: KatelloDoubleOptions = {}) {
    this.users = opts.users ?? {};
    this.publicRepositories = opts.publicRepositories ?? [];
    this.hosts = opts.hosts ?? {};
    this.tokenExpiresIn = opts.tokenExpiresIn ?? 3600;
    this.revoked = opts.revoked ?? new Set();
    this.now = opts.now ?? Date.now;
    this.publicScopeWithBasic = opts.publicScopeWithBasic ?? 'unauthenticated';
    this.basePath = (opts.basePath ?? '').replace(/\/+$/, '');
    this.pushRules = opts.push ?? {};
    if (opts.jwt) this.jwtSigner = new JwtSigner(opts.jwt);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.handle(req, res).catch((e: unknown) => {
        if (!res.headersSent) this.json(res, 500, { error: { message: String(e) } });
        else res.destroy();
      });
    };
    this.tls = Boolean(opts.tls);
    this.server = opts.tls
      ? https.createServer({ key: pem(opts.tls.key), cert: pem(opts.tls.cert), ...(opts.tls.ca ? { ca: pem(opts.tls.ca) } : {}) }, handler)
      : http.createServer(handler);
    this.server.on(opts.tls ? 'secureConnection' : 'connection', (s: net.Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  /** Listen on 127.0.0.1 (port 0 unless given); resolves with the base URL, e.g. `http://127.0.0.1:PORT/`. */
  start(port = 0): Promise<string> {
    return new Promise((res, rej) => {
      this.server.once('error', rej);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', rej);
        this.port = (this.server.address() as net.AddressInfo).port;
        res(this.url);
      });
    });
  }

  /** Base URL (with `basePath`) and a trailing slash. */
  get url(): string {
    return `${this.origin}${this.basePath}/`;
  }

  get origin(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  /** Close the listener and every open connection. */
  stop(): Promise<void> {
    return new Promise((res) => {
      if (!this.server.listening) return res();
      this.server.close(() => res());
      for (const s of this.sockets) s.destroy();
    });
  }

  /** Answer some requests yourself (e.g. a malformed token response); null to remove. */
  override(fn: Override | null): void {
    this.overrideFn = fn ?? undefined;
  }

  /** Recorded requests for a path (exact, without query). */
  requestsTo(path: string): RecordedRequest[] {
    return this.requests.filter((r) => r.path === path);
  }

  /** The user's current registry token (with `jwt`: the last JWT issued to it), if one was issued. */
  tokenOf(user: string): string | undefined {
    return this.latestJwt.get(user) ?? this.tokens.get(user)?.token;
  }

  /** Revoke a user's token (as `revoked` at construction). */
  revoke(user: string): void {
    this.revoked.add(user);
  }

  // -------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: u.pathname,
      query: Object.fromEntries(u.searchParams),
      url: req.url ?? '/',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      time: this.now(),
    };
    this.requests.push(rec);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    await new Promise<void>((r) => (req.readableEnded ? r() : req.once('end', r)));
    const body = Buffer.concat(chunks);
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    if (this.overrideFn && (await this.overrideFn(req, res, rec))) return;

    const get = req.method === 'GET' || req.method === 'HEAD';
    const p = u.pathname.startsWith(`${this.basePath}/`) ? u.pathname.slice(this.basePath.length) : '';
    if (get && p === '/v2/token') return this.token(req, res, u.searchParams);
    if (get && p === '/v2/_catalog') return this.catalog(req, res);
    if (get && (p === '/v2' || p === '/v2/')) return this.ping(req, res);
    if (get && p === '/v1/_ping') {
      res.writeHead(200).end();
      return;
    }
    const capsule = /^\/katello\/api\/capsules\/(\d+)\/content\/sync$/.exec(p);
    if (capsule && req.method === 'POST') {
      // katello-api.md §6: an async task (who may ask is not modelled).
      return this.json(res, 202, { id: randomUUID(), label: 'Actions::Katello::CapsuleContent::Sync', state: 'planned', input: { capsule: { id: Number(capsule[1]) } } });
    }
    const pulp = /^\/pulp\/container\/(.+)\/blobs\/([^/]+)$/.exec(p);
    if (get && pulp && this.pushed.read(req.method!, pulp[1]!, `blobs/${pulp[2]}`, res)) return;
    const push = /^\/v2\/(.+?)\/(blobs\/uploads\/?[^/]*|manifests\/[^/]+)$/.exec(p);
    if (push && (req.method === 'POST' || req.method === 'PATCH' || req.method === 'PUT')) return this.push(req, res, push[1]!, push[2]!, u.searchParams, body);
    const m = /^\/v2\/(.+)\/(manifests\/[^/]+|blobs\/[^/]+|tags\/list)$/.exec(p);
    if (m && get) return this.read(req, res, m[1]!, m[2]!);
    this.json(res, 404, { error: { message: `Route not found: ${req.method} ${u.pathname}` } });
  }

  /** A push verb: authenticated (401), a name Katello accepts (400/409/404), a user with push rights (404 DENIED). */
  private push(req: http.IncomingMessage, res: http.ServerResponse, name: string, rest: string, query: URLSearchParams, body: Buffer): void {
    const user = this.bearerUser(req) ?? this.validBasic(req);
    if (!user) return this.unauthorized(req, res, user ?? this.basic(req)?.user);
    const refusal = refusePushName(name, this.pushRules);
    if (refusal) return this.json(res, refusal.status, { errors: [{ code: refusal.code, message: refusal.message }] });
    if (!this.users[user]?.push) return this.json(res, 404, { errors: [{ code: 'DENIED', message: `${user} may not push to ${name}` }] });
    this.pushed.push(req.method!, name, rest, query, body, req.headers['content-type'], (status, headers, text) => {
      res.writeHead(status, { 'Content-Length': text === undefined ? 0 : Buffer.byteLength(text), ...headers });
      res.end(text);
    });
  }

  /** Reads of pushed content, for who may read it; blobs redirect to "Pulp" as Katello does. */
  private read(req: http.IncomingMessage, res: http.ServerResponse, name: string, rest: string): void {
    const user = this.bearerUser(req) ?? this.validBasic(req);
    const readable = (user && this.users[user]?.push) || this.readable({ user }).includes(name);
    if (readable && req.method === 'GET' && rest.startsWith('blobs/') && this.pushed.blobs.has(decodeURIComponent(rest.slice(6)))) {
      res.writeHead(302, { Location: `${this.origin}${this.basePath}/pulp/container/${name}/${rest}?validate_token=double`, 'Content-Length': 0 }).end();
      return;
    }
    if (readable && this.pushed.read(req.method!, name, rest, res)) return;
    this.json(res, 404, { errors: [{ code: 'NAME_UNKNOWN', message: `${name} was not found!` }] });
  }

  private json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  /** `Www-Authenticate` as Katello builds it: realm from the request's Host, service = host without port. */
  private challenge(req: http.IncomingMessage): string {
    const hostWithPort = req.headers.host ?? `127.0.0.1:${this.port}`;
    const host = hostWithPort.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
    return `Bearer realm="${this.tls ? 'https' : 'http'}://${hostWithPort}${this.basePath}/v2/token",service="${host}",scope="repository:registry:pull,push"`;
  }

  private unauthorized(req: http.IncomingMessage, res: http.ServerResponse, user: string | undefined, challenge = true): void {
    this.json(res, 401, { error: { message: `Unable to authenticate user ${user ?? ''}`.trimEnd() } }, challenge ? { 'Www-Authenticate': this.challenge(req) } : {});
  }

  private basic(req: http.IncomingMessage): { user: string; password: string } | undefined {
    const m = /^Basic\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) return undefined;
    const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i < 0) return { user: decoded, password: '' };
    return { user: decoded.slice(0, i), password: decoded.slice(i + 1) };
  }

  private bearerUser(req: http.IncomingMessage): string | undefined {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) return undefined;
    for (const [user, t] of this.tokens) {
      if (t.token === m[1] && !this.revoked.has(user) && t.expiresAt > this.now()) return user;
    }
    const j = this.jwts.get(m[1]!);
    if (j && !this.revoked.has(j.user) && j.expiresAt > this.now()) return j.user;
    return undefined;
  }

  private validBasic(req: http.IncomingMessage): string | undefined {
    const b = this.basic(req);
    if (!b) return undefined;
    const u = this.users[b.user];
    return u && u.password === b.password ? b.user : undefined;
  }

  private newToken(): string {
    // Opaque, not a JWT, with the characters Katello tokens may contain.
    return `kt$${randomBytes(6).toString('hex')}/${randomBytes(12).toString('base64')}.${randomBytes(4).toString('hex')}`;
  }

  /** What a user may do, per requested scope (empty grants left out). */
  grants(user: string, scopes: Scope[]): JwtAccess[] {
    const u = this.users[user];
    const out: JwtAccess[] = [];
    for (const s of scopes) {
      const allowed = new Set<string>();
      if (s.type === 'repository') {
        if (u?.push || this.publicRepositories.includes(s.name) || u?.repositories.includes(s.name)) allowed.add('pull');
        if (u?.push && !refusePushName(s.name, this.pushRules)) allowed.add('push');
      } else if (s.type === 'registry' && s.name === 'catalog' && u?.catalog) {
        allowed.add('*');
      }
      const actions = [...new Set(s.actions.filter((a) => allowed.has(a)))];
      if (actions.length) out.push({ type: s.type, name: s.name, actions });
    }
    return out;
  }

  private signJwt(user: string, scopes: Scope[], now: number): { token: string; expiresAt: number } {
    const { token, claims } = this.jwtSigner!.sign(user, this.grants(user, scopes), now, this.tokenExpiresIn);
    const expiresAt = claims.exp * 1000;
    this.jwts.set(token, { user, expiresAt, claims });
    this.latestJwt.set(user, token);
    return { token, expiresAt };
  }

  private token(req: http.IncomingMessage, res: http.ServerResponse, q: URLSearchParams): void {
    const scopes = parseScopes(q.getAll('scope'));
    const scope = q.getAll('scope').join(' ').trim();
    const account = q.get('account') ?? '';
    const only = scopes.length === 1 ? scopes[0]! : undefined;
    const publicScope = only !== undefined && only.type === 'repository' && only.actions.length === 1 && only.actions[0] === 'pull' && this.publicRepositories.includes(only.name);
    const now = this.now();
    // Katello answers "unauthenticated" for these whatever the Authorization.
    const anonymousPublic = publicScope && (this.publicScopeWithBasic === 'unauthenticated' || !this.basic(req));
    if ((!scope && !account) || anonymousPublic) {
      return this.json(res, 200, { token: 'unauthenticated', expires_in: 180, issued_at: rfc3339(now) });
    }
    const user = this.validBasic(req);
    if (!user) return this.unauthorized(req, res, this.basic(req)?.user ?? (account || undefined));
    let pat = this.tokens.get(user);
    if (this.revoked.has(user)) {
      // Every scoped token request fails; a Basic login without scope replaces the token.
      if (scope) return this.unauthorized(req, res, user);
      this.revoked.delete(user);
      pat = undefined;
      // The JWTs issued before the revocation stay dead.
      for (const [t, j] of this.jwts) if (j.user === user) this.jwts.delete(t);
      this.latestJwt.delete(user);
    }
    if (this.jwtSigner) {
      const j = this.signJwt(user, scopes, now);
      return this.json(res, 200, { token: j.token, expires_in: this.tokenExpiresIn, issued_at: rfc3339(now) });
    }
    if (!pat) {
      pat = { token: this.newToken(), createdAt: Math.floor(now / 1000) * 1000, expiresAt: 0 };
      this.tokens.set(user, pat);
    }
    pat.expiresAt = now + this.tokenExpiresIn * 1000;
    this.json(res, 200, {
      token: pat.token,
      expires_in: Math.floor((pat.expiresAt - pat.createdAt) / 1000),
      issued_at: rfc3339(pat.createdAt),
    });
  }

  /** Repositories readable by an identity, plus the public ones, sorted and unique. */
  readable(identity: { user?: string; host?: string }): string[] {
    const set = new Set(this.publicRepositories);
    if (identity.user) for (const r of this.users[identity.user]?.repositories ?? []) set.add(r);
    if (identity.host) for (const r of this.hosts[identity.host] ?? []) set.add(r);
    return [...set].sort();
  }

  private catalog(req: http.IncomingMessage, res: http.ServerResponse): void {
    const auth = req.headers.authorization;
    if (auth) {
      if (/^Bearer\s/i.test(auth)) {
        // An unknown/expired/revoked Bearer counts as anonymous (no 401 on the catalog).
        return this.json(res, 200, { repositories: this.readable({ user: this.bearerUser(req) }) });
      }
      if (/^Basic\s/i.test(auth)) {
        // Bad Basic credentials count as anonymous too: the catalog never answers 401.
        return this.json(res, 200, { repositories: this.readable({ user: this.validBasic(req) }) });
      }
    }
    const uuid = req.headers.hostuuid;
    const host = typeof uuid === 'string' && uuid && this.hosts[uuid] ? uuid : undefined;
    this.json(res, 200, { repositories: this.readable({ host }) });
  }

  private ping(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.bearerUser(req) || this.validBasic(req)) return this.json(res, 200, {});
    this.json(res, 401, { error: { message: 'unauthorized' } }, { 'Www-Authenticate': this.challenge(req) });
  }
}

/** Construct and start a double; resolves once it listens. */
export async function startKatelloDouble(opts: KatelloDoubleOptions = {}): Promise<KatelloDouble> {
  const k = new KatelloDouble(opts);
  await k.start();
  return k;
}
