// The scene of the on-demand tests (issue #12): a main server (the Katello
// double and docker-registry with token auth, access log on) holding images a
// pusher put there, and proxyd in smart-proxy mode with the embedded store,
// an empty store and a download_policy, reading upstream as its own account
// (`capsule`, sync_username). Katello's management call lists the
// repositories, so access is decided as for any pull.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { request } from './http.ts';
import { startMainServer, type MainServer } from './main-server.ts';
import { startProxyd, type RunningProxyd } from './proxyd.ts';

export const ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

export const CAPSULE = { user: 'capsule', password: 'capsule-pw' };
export const PUSHER = 'pusher:pusher-pw';
/** May read the private repositories of the scene. */
export const ALICE = 'alice:alice-pw';
/** A user of the main server who may read none of them. */
export const BOB = 'bob:bob-pw';

/**
 * The main server: `capsule` reads `repositories` (and the catalog), `alice`
 * the private ones, `bob` none; the others are public (anonymous pulls), as
 * Katello's unauthenticated-pull lifecycle environments are.
 */
export function startScene(repositories: string[], privateRepositories: string[]): Promise<MainServer> {
  return startMainServer({
    publicRepositories: repositories.filter((r) => !privateRepositories.includes(r)),
    // docker-registry has no anonymous access: the proxy's account reads public repositories with a JWT.
    publicScopeWithBasic: 'token',
    users: {
      [CAPSULE.user]: { password: CAPSULE.password, repositories, catalog: true },
      pusher: { password: 'pusher-pw', repositories: [], push: true },
      alice: { password: 'alice-pw', repositories: privateRepositories },
      bob: { password: 'bob-pw', repositories: [] },
    },
  });
}

export interface ProxyOptions {
  /** Unset: the default (on_demand in smart-proxy mode with the embedded store). */
  download_policy?: 'immediate' | 'on_demand' | 'streamed';
  [key: string]: unknown;
}

/** proxyd in smart-proxy mode with an empty embedded store at `<dir>/storage`. */
export async function startProxy(main: MainServer, dir: string, opts: ProxyOptions = {}, settings: Record<string, unknown> = {}): Promise<RunningProxyd> {
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: main.foremanUrl, log_level: 'INFO', ...settings },
    plugins: {
      container_gateway: {
        enabled: true,
        content_backend: 'local',
        main_registry_url: main.mainRegistryUrl,
        sqlite_db_path: join(dir, 'gw.db'),
        storage_path: join(dir, 'storage'),
        sync_username: CAPSULE.user,
        sync_password: CAPSULE.password,
        upstream_connect_timeout: 2,
        ...opts,
      },
    },
  });
  p.secrets.push(CAPSULE.password, 'alice-pw', 'bob-pw', 'pusher-pw');
  return p;
}

/** Katello's PUT repository_list: who may pull what here. */
export async function listRepositories(p: RunningProxyd, repositories: Array<{ repository: string; auth_required: boolean }>): Promise<void> {
  const r = await request(`${p.httpUrl}/container_gateway/repository_list`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ repositories }),
  });
  if (r.status !== 200) throw new Error(`repository_list: ${r.status} ${r.body}`);
}

const basic = (creds: string) => `Basic ${Buffer.from(creds).toString('base64')}`;

/** A pull token for `creds` from the proxy's /v2/token (the client's token, as podman gets it). */
export async function proxyToken(p: RunningProxyd, creds: string, repository: string): Promise<string> {
  const r = await request(`${p.httpUrl}/v2/token?account=${creds.split(':')[0]}&scope=repository:${repository}:pull`, { headers: { Authorization: basic(creds) } });
  if (r.status !== 200) throw new Error(`token for ${creds.split(':')[0]}: ${r.status} ${r.body}`);
  return r.json().token as string;
}

/** A pull token of the main server itself (read it directly, to compare). */
export async function mainToken(main: MainServer, creds: string, repository: string): Promise<string> {
  const r = await request(`${main.foremanUrl}v2/token?service=test-registry&scope=repository:${repository}:pull&account=${creds.split(':')[0]}`, { headers: { Authorization: basic(creds) } });
  if (r.status !== 200) throw new Error(`main server token: ${r.status} ${r.body}`);
  return r.json().token as string;
}

/** Every regular file under `dir` (relative paths, sorted); [] when it does not exist. */
export function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
      .sort();
  } catch {
    return [];
  }
}

/** Blob files of the embedded store (`blobs/sha256/<xx>/<hex>`), as digests. */
export function storedBlobs(storage: string): string[] {
  return filesUnder(join(storage, 'blobs'))
    .map((f) => f.split('/'))
    .filter((parts) => parts.length === 3)
    .map(([alg, , hex]) => `${alg}:${hex}`)
    .sort();
}

/** Katello double requests for tokens of the proxy's own account (what reading upstream costs). */
export function capsuleTokenRequests(main: MainServer): Array<{ scope: string }> {
  return main.katello.requestsTo('/v2/token').filter((q) => q.query.account === CAPSULE.user).map((q) => ({ scope: q.query.scope ?? '' }));
}

/**
 * The digests of `want` not in the store after waiting up to `timeoutMs`: a
 * blob is committed once its fetch is verified, which may end just after the
 * last byte reached the client.
 */
export async function missingFromStore(storage: string, want: string[], timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const have = new Set(storedBlobs(storage));
    const missing = want.filter((d) => !have.has(d));
    if (missing.length === 0 || Date.now() > deadline) return missing;
    await new Promise((r) => setTimeout(r, 50));
  }
}
