// A standalone proxyd with the embedded store (content_backend: local), and
// the few raw registry calls tests need: users through the admin API, tokens
// from /v2/token, blobs pushed as clients push them.
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startProxyd, type RunningProxyd } from './proxyd.ts';
import { gatewayRows } from './test-database.ts';

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json<T = any>(): T;
}

export interface LocalRegistry {
  proxyd: RunningProxyd;
  work: string;
  base: string;
  /** One request; `path` may be absolute or relative to the daemon. Raw headers are sent as given. */
  call(method: string, path: string, opts?: { headers?: Record<string, string>; body?: Buffer | string; token?: string }): Promise<Answer>;
  addUser(name: string, password: string): Promise<void>;
  /** A token of `user` with pull,push,delete on each repository. */
  tokenFor(user: string, password: string, ...repos: string[]): Promise<string>;
  /** POST then PUT ?digest with the body; throws unless 202 then 201. */
  pushBlob(repo: string, token: string, bytes: Buffer): Promise<{ digest: string; size: number }>;
  /** What the store holds: the content rows of the database and every file under storage_path with its size. */
  snapshot(): Promise<string>;
  stop(): Promise<void>;
}

const CONTENT_TABLES = ['repositories', 'blobs', 'repository_blobs', 'manifests', 'manifest_children', 'tags', 'uploads'];

function files(dir: string, prefix = ''): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => (e.isDirectory() ? files(join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name} ${statSync(join(dir, e.name)).size}`])).sort();
}

/** The content rows of a gateway database (by its sqlite_db_path) and every file under a storage path with its size, as text. */
export async function storeSnapshot(dbFile: string, storagePath: string): Promise<string> {
  const db = await gatewayRows(dbFile);
  try {
    const rows: string[] = [];
    for (const table of CONTENT_TABLES) rows.push(`${table}: ${JSON.stringify((await db.all(`SELECT * FROM ${table} ORDER BY 1, 2`)).map((r) => Object.values(r)))}`);
    return [...rows, ...files(storagePath)].join('\n');
  } finally {
    await db.close();
  }
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export async function startLocalRegistry(settings: Record<string, unknown> = {}): Promise<LocalRegistry> {
  const work = mkdtempSync(join(tmpdir(), 'gw-local-'));
  const proxyd = await startProxyd({
    fixtures: false,
    settings: { log_level: 'INFO', ...settings },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'gw.db'), storage_path: join(work, 'storage') } },
  });
  const base = proxyd.httpUrl;
  const call: LocalRegistry['call'] = (method, path, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
    const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
    if (body) headers['Content-Length'] = String(body.length);
    const url = new URL(base);
    return new Promise((resolve, reject) => {
      // The path goes out byte for byte (new URL() would re-encode bad escapes).
      const req = http.request({ host: url.hostname, port: url.port, method, path: path.startsWith('http') ? new URL(path).pathname + new URL(path).search : path, headers, agent: false, setHost: !('Host' in headers) }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const buf = Buffer.concat(parts);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf, text: buf.toString('utf8'), json: () => JSON.parse(buf.toString('utf8')) });
        });
      });
      req.setTimeout(30_000, () => req.destroy(new Error(`timeout: ${method} ${path}`)));
      req.on('error', reject);
      req.end(body);
    });
  };
  const host = new URL(base).host;
  const registry: LocalRegistry = {
    proxyd,
    work,
    base,
    call,
    async addUser(name, password) {
      const res = await call('POST', '/container_gateway/admin/users', { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name, password }) });
      if (res.status !== 201) throw new Error(`admin: add user ${name}: ${res.status} ${res.text}`);
    },
    async tokenFor(user, password, ...repos) {
      const q = new URLSearchParams({ service: host });
      for (const r of repos) q.append('scope', `repository:${r}:pull,push,delete`);
      const res = await call('GET', `/v2/token?${q}`, { headers: { Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` } });
      const token = res.status === 200 ? res.json<{ token?: string }>().token : undefined;
      if (!token) throw new Error(`token for ${user}: ${res.status} ${res.text}`);
      return token;
    },
    async pushBlob(repo, token, bytes) {
      const digest = sha256(bytes);
      const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
      if (start.status !== 202 || !start.headers.location) throw new Error(`POST uploads to ${repo}: ${start.status} ${start.text}`);
      const loc = new URL(start.headers.location, base);
      loc.searchParams.set('digest', digest);
      const put = await call('PUT', loc.pathname + loc.search, { token, body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
      if (put.status !== 201) throw new Error(`PUT upload to ${repo}: ${put.status} ${put.text}`);
      return { digest, size: bytes.length };
    },
    snapshot: () => storeSnapshot(join(work, 'gw.db'), join(work, 'storage')),
    async stop() {
      await proxyd.stop();
      rmSync(work, { recursive: true, force: true });
    },
  };
  return registry;
}
