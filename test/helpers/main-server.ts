// A test "main server" (Katello/Foreman with its registry): the Katello double
// serves `/v2/token` and `/v2/_catalog`, and a real docker-registry with Docker
// token auth stores the content. The double signs RS256 JWTs with a throwaway
// key; the registry trusts that key's self-signed certificate. Clients (skopeo,
// podman, the gateway) follow the registry's 401 challenge to the double's
// realm, like with Katello.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KatelloDouble, type KatelloUser } from './katello-double.ts';
import { startRegistry, type AccessLogEntry, type RunningRegistry } from './registry.ts';

export const MAIN_SERVER_ISSUER = 'test-issuer';
export const MAIN_SERVER_SERVICE = 'test-registry';

export interface MainServer {
  /** The proxy's foreman_url = katello.url (serves /v2/token and /v2/_catalog). */
  katello: KatelloDouble;
  /** The proxy's main_registry_url = `${registry.url}/v2/`. */
  registry: RunningRegistry;
  /** `katello.url`, e.g. `http://127.0.0.1:PORT/`. */
  foremanUrl: string;
  /** `${registry.url}/v2/`. */
  mainRegistryUrl: string;
  /** Blob GETs/HEADs etc. seen by the registry, from its access log (may lag a request that just finished). */
  accessLog(): AccessLogEntry[];
  /** `accessLog()` once every request answered so far is in (see `RunningRegistry.flushAccessLog`). */
  flushAccessLog(): Promise<AccessLogEntry[]>;
  /** Outage: the registry stops; its port and data are kept. */
  stopRegistry(): Promise<void>;
  /** Back on the same port with the same content. */
  startRegistry(): Promise<void>;
  /** Everything stopped, temp files removed. */
  stop(): Promise<void>;
}

/** Temp dirs of main servers not stopped yet: removed at exit if a test dies before its teardown. */
const liveDirs = new Set<string>();
let exitHookInstalled = false;

export interface MainServerOptions {
  users: Record<string, KatelloUser>;
  publicRepositories?: string[];
  hosts?: Record<string, string[]>;
  /**
   * Katello answers `unauthenticated` to a public pull scope even with
   * credentials (default), which docker-registry cannot accept; `token` gives
   * credentialed clients (a proxy's sync account) a JWT for public repositories.
   */
  publicScopeWithBasic?: 'unauthenticated' | 'token';
}

export async function startMainServer(opts: MainServerOptions): Promise<MainServer> {
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-main-server-'));
  liveDirs.add(dir);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
    });
  }
  const keyFile = join(dir, 'sign.key');
  const certFile = join(dir, 'sign.crt');
  let katello: KatelloDouble | undefined;
  let registry: RunningRegistry | undefined;
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '30',
      '-subj', '/CN=test token signer'], { stdio: ['ignore', 'ignore', 'pipe'] });
    katello = new KatelloDouble({
      users: opts.users,
      publicRepositories: opts.publicRepositories ?? [],
      hosts: opts.hosts ?? {},
      ...(opts.publicScopeWithBasic ? { publicScopeWithBasic: opts.publicScopeWithBasic } : {}),
      jwt: { issuer: MAIN_SERVER_ISSUER, service: MAIN_SERVER_SERVICE, keyPem: readFileSync(keyFile, 'utf8'), certPem: readFileSync(certFile, 'utf8') },
    });
    const foremanUrl = await katello.start();
    registry = await startRegistry({
      auth: { realm: `${foremanUrl}v2/token`, service: MAIN_SERVER_SERVICE, issuer: MAIN_SERVER_ISSUER, rootcertbundle: certFile },
      accessLog: true,
    });
    const k = katello;
    const r = registry;
    let stopped = false;
    return {
      katello: k,
      registry: r,
      foremanUrl,
      mainRegistryUrl: `${r.url}/v2/`,
      accessLog: () => r.accessLog(),
      flushAccessLog: () => r.flushAccessLog(),
      stopRegistry: () => r.stop({ keepDir: true }),
      startRegistry: () => r.restart(),
      async stop() {
        if (stopped) return;
        stopped = true;
        await Promise.all([r.stop(), k.stop()]);
        rmSync(dir, { recursive: true, force: true });
        liveDirs.delete(dir);
      },
    };
  } catch (e) {
    await registry?.stop();
    await katello?.stop();
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
    throw e;
  }
}
