// A stand-in for real Pulp (pulpcore-api + content app), because Pulp cannot
// be installed here. Content lives in a real docker-registry (`storage`); the
// double adds what was measured of real Pulp (pulpcore 3.107, pulp_container
// 2.27) in front of it:
// - the registry API at /v2/ (`/v2/` itself needs a known remote user);
// - manifests and blobs answer 302 to the content app at
//   `/pulp/container/<base_path>/manifests|blobs/<ref>?expires=<unix>&validate_token=<salt>:<sha256>`;
//   the token signs path and query, so the content app refuses (403) any
//   request target not byte-identical to the one issued; `manifestsDirect`
//   is pulp_container >= 2.28 (manifests 200 from the API);
// - an Accept without the manifest's media type: 404 MANIFEST_UNKNOWN (no conversion);
// - the Link of a paged tags/list or _catalog is absolute, from the request's Host;
// - header names with '_' are dropped (gunicorn): only `Remote-User` names the
//   caller; an unknown remote user is refused.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface PulpDoubleOptions {
  /** URL of the docker-registry holding the content (repository names = base paths). */
  storage: string;
  /** Repositories anyone may read. */
  publicRepositories: string[];
  /** Known remote users and the private repositories each may read. */
  users: Record<string, string[]>;
  /** pulp_container >= 2.28: manifests answered 200 by the API, no redirect. */
  manifestsDirect?: boolean;
  /**
   * Reached through Katello's web server: only `/pulpcore_registry/v2/` is served
   * (mapped onto Pulp's /v2/, which Pulp still names in its Link); `/v2/` there is not Pulp.
   */
  behindKatello?: boolean;
  /** Largest page of tags/list and _catalog, whatever `n` the client asks (default 100). */
  pageSize?: number;
}

export interface PulpLogEntry {
  app: 'api' | 'content';
  method: string;
  /** The request target as received, byte for byte. */
  url: string;
  /** Headers as Pulp sees them (names with '_' dropped). */
  headers: Record<string, string>;
  status: number;
}

const ANY_MANIFEST = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

export class PulpDouble {
  readonly log: PulpLogEntry[] = [];
  private readonly secret = randomBytes(32).toString('hex');
  private api?: http.Server;
  private content?: http.Server;
  apiUrl = '';
  contentOrigin = '';

  constructor(private readonly opts: PulpDoubleOptions) {}

  async start(): Promise<void> {
    this.api = http.createServer((req, res) => void this.serveApi(req, res).catch((err: Error) => this.fail(res, err)));
    this.content = http.createServer((req, res) => void this.serveContent(req, res).catch((err: Error) => this.fail(res, err)));
    this.apiUrl = `http://127.0.0.1:${await listen(this.api)}`;
    this.contentOrigin = `http://127.0.0.1:${await listen(this.content)}`;
  }

  async stop(): Promise<void> {
    for (const s of [this.api, this.content]) {
      if (!s) continue;
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  }

  private fail(res: http.ServerResponse, err: Error): void {
    if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end(err.message);
  }

  private record(app: PulpLogEntry['app'], req: http.IncomingMessage, headers: Record<string, string>, res: http.ServerResponse): void {
    res.on('finish', () => this.log.push({ app, method: req.method ?? '', url: req.url ?? '', headers, status: res.statusCode }));
  }

  private allowed(name: string, user: string | undefined): boolean {
    return this.opts.publicRepositories.includes(name) || (user !== undefined && (this.opts.users[user] ?? []).includes(name));
  }

  private async serveApi(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const headers = gunicornHeaders(req);
    this.record('api', req, headers, res);
    const user = headers['remote-user'];
    if (user !== undefined && !(user in this.opts.users)) return ociError(res, 401, 'UNAUTHORIZED', 'Invalid remote user.');
    const url = new URL(req.url ?? '/', 'http://x');
    if (this.opts.behindKatello) {
      if (!url.pathname.startsWith('/pulpcore_registry/v2/')) return ociError(res, 404, 'NOT_FOUND', 'Not Pulp.');
      url.pathname = url.pathname.slice('/pulpcore_registry'.length);
    }
    if (url.pathname === '/v2/') return user ? json(res, 200, {}) : ociError(res, 401, 'UNAUTHORIZED', 'Authentication credentials were not provided.');
    if (url.pathname === '/v2/_catalog') {
      const all = ((await storageJson(this.opts.storage, '/v2/_catalog?n=10000')).repositories as string[]).filter((r) => this.allowed(r, user));
      return this.page(req, res, url, all, 'repositories');
    }
    const m = /^\/v2\/(.+)\/(tags\/list|manifests|blobs)(?:\/([^/]+))?$/.exec(url.pathname);
    if (!m) return ociError(res, 404, 'NOT_FOUND', 'Not found.');
    const [, name, kind, ref] = m as unknown as [string, string, string, string | undefined];
    if (!this.allowed(name, user)) return ociError(res, 401, 'UNAUTHORIZED', 'Authentication credentials were not provided.');
    if (kind === 'tags/list') {
      const tags = ((await storageJson(this.opts.storage, `/v2/${name}/tags/list`)).tags as string[] | null) ?? [];
      return this.page(req, res, url, [...tags].sort(), 'tags', name);
    }
    if (!ref) return ociError(res, 404, 'NOT_FOUND', 'Not found.');
    if (kind === 'manifests') {
      const stored = await storageGet(this.opts.storage, `/v2/${name}/manifests/${ref}`, ANY_MANIFEST);
      if (stored.status !== 200) return ociError(res, 404, 'MANIFEST_UNKNOWN', 'Manifest not found.');
      const type = stored.headers['content-type'] ?? '';
      const accept = headers.accept;
      // Pulp does not convert: the stored media type must be among those accepted.
      if (accept !== undefined && !accept.split(',').some((a) => a.split(';')[0]!.trim() === type)) return ociError(res, 404, 'MANIFEST_UNKNOWN', 'Manifest not found.');
      if (this.opts.manifestsDirect) return sendManifest(req, res, stored.body, type);
    }
    const path = `/pulp/container/${name}/${kind}/${ref}`;
    const expires = Math.floor(Date.now() / 1000) + 300;
    const salt = randomBytes(32).toString('hex');
    const query = `expires=${expires}&validate_token=${salt}:${this.sign(salt, path, expires)}`;
    res.writeHead(302, { Location: `${this.contentOrigin}${path}?${query}`, 'Content-Length': 0 }).end();
  }

  private sign(salt: string, path: string, expires: number): string {
    return createHash('sha256').update(`${salt}${this.secret}${path}?expires=${expires}`).digest('hex');
  }

  /** The content app: only byte-identical, unexpired request targets the API issued. */
  private async serveContent(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const headers = gunicornHeaders(req);
    this.record('content', req, headers, res);
    const target = req.url ?? '';
    const m = /^(\/pulp\/container\/(.+)\/(manifests|blobs)\/([^/?]+))\?expires=(\d+)&validate_token=([0-9a-f]{64}):([0-9a-f]{64})$/.exec(target);
    if (!m) return text(res, 403, '403: Forbidden');
    const [, path, name, kind, ref, expires, salt, hash] = m as unknown as string[];
    if (Number(expires) < Date.now() / 1000 || this.sign(salt!, path!, Number(expires)) !== hash) return text(res, 403, '403: Forbidden');
    if (kind === 'manifests') {
      const stored = await storageGet(this.opts.storage, `/v2/${name}/manifests/${ref}`, ANY_MANIFEST);
      if (stored.status !== 200) return text(res, 404, '404: Not Found');
      return sendManifest(req, res, stored.body, stored.headers['content-type'] ?? '');
    }
    const up = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const out = http.request(`${this.opts.storage}/v2/${name}/blobs/${ref}`, { method: req.method === 'HEAD' ? 'HEAD' : 'GET', headers: headers.range ? { range: headers.range } : {} }, resolve);
      out.on('error', reject).end();
    });
    const pass: http.OutgoingHttpHeaders = { 'Content-Type': 'application/octet-stream' };
    for (const h of ['content-length', 'content-range', 'accept-ranges']) if (up.headers[h]) pass[h] = up.headers[h];
    res.writeHead(up.statusCode === 206 ? 206 : up.statusCode === 200 ? 200 : 404, pass);
    up.pipe(res);
  }

  /** A page of a list, with Pulp's absolute Link built from the request's Host. */
  private page(req: http.IncomingMessage, res: http.ServerResponse, url: URL, all: string[], field: 'tags' | 'repositories', name?: string): void {
    const max = this.opts.pageSize ?? 100;
    const n = Math.min(Number(url.searchParams.get('n') ?? max), max);
    const last = url.searchParams.get('last');
    const rest = last === null ? all : all.filter((x) => x > last);
    const page = rest.slice(0, n);
    const extra: Record<string, string> = {};
    if (rest.length > n) extra.Link = `<http://${req.headers.host}${url.pathname}?n=${n}&last=${encodeURIComponent(page[page.length - 1]!)}>; rel="next"`;
    json(res, 200, name === undefined ? { [field]: page } : { name, [field]: page }, extra);
  }
}

/** What gunicorn hands Pulp: header names containing '_' never arrive. */
function gunicornHeaders(req: http.IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!.toLowerCase();
    if (!name.includes('_')) out[name] = out[name] === undefined ? req.rawHeaders[i + 1]! : `${out[name]}, ${req.rawHeaders[i + 1]}`;
  }
  return out;
}

function sendManifest(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, type: string): void {
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  res.writeHead(200, { 'Content-Type': type, 'Content-Length': body.length, 'Docker-Content-Digest': digest });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function json(res: http.ServerResponse, status: number, value: unknown, extra: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Docker-Distribution-API-Version': 'registry/2.0', ...extra }).end(body);
}

function ociError(res: http.ServerResponse, status: number, code: string, message: string): void {
  json(res, status, { errors: [{ code, message, detail: {} }] });
}

function text(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) }).end(body);
}

function storageGet(base: string, path: string, accept: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http.get(`${base}${path}`, { headers: { accept } }, (up) => {
      const chunks: Buffer[] = [];
      up.on('data', (c: Buffer) => chunks.push(c)).on('end', () => resolve({ status: up.statusCode ?? 0, headers: up.headers, body: Buffer.concat(chunks) })).on('error', reject);
    }).on('error', reject);
  });
}

async function storageJson(base: string, path: string): Promise<Record<string, unknown>> {
  const r = await storageGet(base, path, 'application/json');
  return r.status === 200 ? (JSON.parse(r.body.toString('utf8')) as Record<string, unknown>) : {};
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}
