// A standalone gateway (content_backend: local, no foreman_url) as its users
// see it, for tests of who may do what: the real daemon over HTTP (and HTTPS
// with a client certificate), users made through the admin API, tokens from
// /v2/token, blobs and images pushed as containerd does, and a snapshot of
// everything the database and the store hold (to show a refused request
// changed nothing).
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { request, type Reply } from './http.ts';
import type { CertPair, TestPki } from './pki.ts';
import { launch, PROXYD, startProxyd, type RunningProxyd } from './proxyd.ts';
import { gatewayRows, queryGateway } from './test-database.ts';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';

export interface CallOptions {
  token?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Over HTTPS with this client certificate (the gateway must have been started with a PKI). */
  tls?: CertPair;
}

export interface Blob {
  digest: string;
  size: number;
  bytes: string;
}

export interface Image {
  digest: string;
  manifest: string;
  layer: Blob;
}

export const sha256 = (data: string | Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** The first OCI error code of a body (undefined for HEAD or a non-OCI body). */
export function ociCode(res: Reply): string | undefined {
  try {
    return res.json<{ errors: Array<{ code: string }> }>().errors[0]?.code;
  } catch {
    return undefined;
  }
}

/** What a client sees of a refusal: status, OCI code and the challenge. */
export function answer(res: Reply): { status: number; code: string | undefined; challenge: string | undefined } {
  return { status: res.status, code: ociCode(res), challenge: res.headers['www-authenticate'] as string | undefined };
}

/** The Bearer challenge a gateway at `origin` sends for `scope`. */
export const challengeAt = (origin: string, scope: string) => `Bearer realm="${origin}/v2/token",service="${new URL(origin).host}",scope="${scope}"`;

export function manifestOf(config: Blob, layers: Blob[], extra: Record<string, unknown> = {}): string {
  const d = (b: Blob, mediaType: string) => ({ mediaType, digest: b.digest, size: b.size });
  return JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d(config, OCI_CONFIG), layers: layers.map((l) => d(l, 'application/vnd.oci.image.layer.v1.tar+gzip')), ...extra });
}

function files(root: string, dir = root): string[] {
  if (!existsSync(dir)) return []; // nothing stored yet
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...files(root, p));
    else out.push(`${p.slice(root.length)} ${statSync(p).size}`);
  }
  return out.sort();
}

export class StandaloneGateway {
  readonly base: string;

  private constructor(
    public proxyd: RunningProxyd,
    readonly dbPath: string,
    readonly storage: string,
    private readonly pki: TestPki | undefined,
  ) {
    this.base = proxyd.httpUrl;
  }

  /** Start one in `dir` (gw.db, storage/); HTTPS too when given a PKI. */
  static async start(dir: string, opts: { pki?: TestPki; settings?: Record<string, unknown>; logLevel?: string; global?: Record<string, unknown> } = {}): Promise<StandaloneGateway> {
    const pki = opts.pki;
    const proxyd = await startProxyd({
      fixtures: false,
      https: pki !== undefined,
      settings: { log_level: opts.logLevel ?? 'WARN', ...opts.global, ...(pki ? { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca } : {}) },
      plugins: { container_gateway: { enabled: true, sqlite_db_path: join(dir, 'gw.db'), storage_path: join(dir, 'storage'), ...opts.settings } },
    });
    return new StandaloneGateway(proxyd, join(dir, 'gw.db'), join(dir, 'storage'), pki);
  }

  stop(): Promise<number | null> {
    return this.proxyd.stop();
  }

  /** Start the daemon again (after it stopped or was killed) with the same settings and ports. */
  async restart(): Promise<void> {
    const old = this.proxyd;
    await old.stop();
    const port = (url: string) => Number(new URL(url).port);
    this.proxyd = await launch([PROXYD, '--settings', old.settingsFile], { dir: old.dir, settingsFile: old.settingsFile, httpPort: port(old.httpUrl), httpsPort: port(old.httpsUrl) });
  }

  /** The challenge of this gateway's HTTP listener. */
  challenge(scope: string): string {
    return challengeAt(this.base, scope);
  }

  call(method: string, path: string, o: CallOptions = {}): Promise<Reply> {
    const headers = { ...o.headers, ...(o.token ? { Authorization: `Bearer ${o.token}` } : {}) };
    const body = o.body === undefined ? {} : { body: o.body };
    if (o.tls) return request(`${this.proxyd.httpsUrl}${path}`, { method, headers, ...body, ca: this.pki!.ca, client: o.tls });
    return request(`${this.base}${path}`, { method, headers, ...body });
  }

  admin(method: string, path: string, body?: unknown): Promise<Reply> {
    return this.call(method, `/container_gateway/admin${path}`, body === undefined ? {} : { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  }

  /** A user whose password is `<name>-pw`. */
  async addUser(name: string): Promise<void> {
    const res = await this.admin('POST', '/users', { name, password: `${name}-pw` });
    if (res.status !== 201) throw new Error(`add user ${name}: ${res.status} ${res.body}`);
  }

  basic(user: string): Record<string, string> {
    return { Authorization: `Basic ${Buffer.from(`${user}:${user}-pw`).toString('base64')}` };
  }

  /** A token of `user`, asking `actions` on each repository. */
  async tokenOf(user: string, actions: string, ...repos: string[]): Promise<string> {
    const q = new URLSearchParams({ service: new URL(this.base).host });
    for (const r of repos) q.append('scope', `repository:${r}:${actions}`);
    const res = await this.call('GET', `/v2/token?${q}`, { headers: this.basic(user) });
    if (res.status !== 200) throw new Error(`token of ${user}: ${res.status} ${res.body}`);
    return res.json<{ token: string }>().token;
  }

  /** POST then PUT ?digest with the body, as containerd pushes; `res` is the PUT's answer, or the POST's when not 202. */
  async pushBlob(repo: string, token: string, bytes = randomBytes(300).toString('hex'), tls?: CertPair): Promise<{ res: Reply; blob: Blob }> {
    const blob = { digest: sha256(bytes), size: Buffer.byteLength(bytes), bytes };
    const start = await this.call('POST', `/v2/${repo}/blobs/uploads/`, { token, tls });
    if (start.status !== 202) return { res: start, blob };
    const loc = new URL(start.headers.location!, this.base);
    loc.searchParams.set('digest', blob.digest);
    const res = await this.call('PUT', loc.pathname + loc.search, { token, tls, body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
    return { res, blob };
  }

  /** A config and a layer pushed, and a manifest under `tag`; throws unless each step succeeded. */
  async pushImage(repo: string, token: string, tag: string, tls?: CertPair): Promise<Image> {
    const config = await this.pushBlob(repo, token, JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(4).toString('hex') }), tls);
    const layer = await this.pushBlob(repo, token, undefined, tls);
    for (const r of [config.res, layer.res]) if (r.status !== 201) throw new Error(`blob push to ${repo}: ${r.status} ${r.body}`);
    const manifest = manifestOf(config.blob, [layer.blob]);
    const put = await this.call('PUT', `/v2/${repo}/manifests/${tag}`, { token, tls, body: manifest, headers: { 'Content-Type': OCI_MANIFEST } });
    if (put.status !== 201) throw new Error(`manifest PUT to ${repo}: ${put.status} ${put.body}`);
    return { digest: sha256(manifest), manifest, layer: layer.blob };
  }

  /** Every row that says what exists and who owns it, and every file of the store. */
  async snapshot(): Promise<unknown> {
    const db = await gatewayRows(this.dbPath);
    try {
      const all = (sql: string) => db.all(sql);
      return {
        repositories: await all('SELECT id, name, auth_required, owner_id, pending FROM repositories ORDER BY id'),
        users: await all('SELECT id, name FROM users ORDER BY id'),
        namespaces: await all('SELECT user_id, namespace FROM user_namespaces ORDER BY user_id, namespace'),
        blobs: await all('SELECT digest, size FROM blobs ORDER BY digest'),
        links: await all('SELECT repository_id, digest FROM repository_blobs ORDER BY repository_id, digest'),
        manifests: await all('SELECT repository_id, digest FROM manifests ORDER BY repository_id, digest'),
        tags: await all('SELECT repository_id, name, digest FROM tags ORDER BY repository_id, name'),
        uploads: await all('SELECT uuid, repository_id FROM uploads ORDER BY uuid'),
        store: files(this.storage),
      };
    } finally {
      await db.close();
    }
  }

  /** A repository's owner (id and current name) and whether it is pending. */
  async repositoryRow(name: string): Promise<{ owner_id: number | null; pending: number; owner: string | null } | undefined> {
    const rows = await queryGateway<{ owner_id: number | null; pending: number; owner: string | null }>(this.dbPath, 'SELECT r.owner_id, r.pending, u.name AS owner FROM repositories r LEFT JOIN users u ON u.id = r.owner_id WHERE r.name = ?', [name]);
    return rows[0];
  }
}
