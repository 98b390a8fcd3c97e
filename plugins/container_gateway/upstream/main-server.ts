// The one client of the main server (smart-proxy mode), made once in setup().
// Every way the gateway talks to it — relaying a client's push, reading its
// registry as the client or as this proxy's own account, Katello's token,
// catalog and capsule-sync calls, and the redirects its blob reads answer —
// goes through one connection pool per origin, with TLS chosen once per host:
// foreman_ssl_ca for the main server's hosts, the system roots elsewhere, and
// never a client certificate (Katello would take it for a content host).
// close() releases all of it.
import type { GlobalSettings, Logger } from '../../../lib/plugins/api.ts';
import type { RegistryFetch } from '../oci/registry-fetch.ts';
import type { GatewaySettings } from '../settings.ts';
import { CapsuleSyncTrigger } from './capsule-sync.ts';
import { HttpUpstream, UpstreamError, type UpstreamTimeouts } from './http-upstream.ts';
import { KatelloClient } from './katello.ts';
import { MainRegistry, type RetryNotice } from './main-registry.ts';
import { mainServerUrls, type MainServerUrls } from './main-urls.ts';
import { followRedirects } from './redirects.ts';

export interface ProxyReaderOptions {
  /** Retries of one request after the first failure (connect error, 5xx, 429). */
  retries: number;
  onRetry?: (notice: RetryNotice | undefined) => void;
  /** Aborts requests in flight and backoff waits. */
  signal?: AbortSignal;
}

/** Redirects a client's read may take (Katello answers blob GETs with one, to Pulp's content app or S3). */
const MAX_REDIRECTS = 3;

export class MainServer {
  readonly urls: MainServerUrls;
  /** The main server's registry, where a client's writes are relayed as they come (its Authorization included; never retried: bodies stream). */
  readonly registry: HttpUpstream;
  /** Katello's APIs: logins, catalogs, the capsule-sync request. */
  readonly katello: KatelloClient;
  /** One pool per origin, requests of every kind sharing it. */
  private readonly pools = new Map<string, HttpUpstream>();
  /** Hosts that foreman_ssl_ca vouches for. */
  private readonly ownHosts: Set<string>;
  /** This proxy's own account (sync_username / sync_password), if it has one. */
  private readonly account: { username: string; password: string } | undefined;
  private readonly capsuleSync: CapsuleSyncTrigger;

  private constructor(
    urls: MainServerUrls,
    private readonly settings: GatewaySettings,
    private readonly global: GlobalSettings,
    private readonly timeouts: UpstreamTimeouts,
  ) {
    this.urls = urls;
    this.ownHosts = new Set([urls.foreman, urls.katelloRegistry, urls.registry].map((u) => new URL(u).hostname));
    const s = settings;
    this.account = s.sync_username && s.sync_password ? { username: s.sync_username, password: s.sync_password } : undefined;
    this.registry = this.pool(urls.registry).at(new URL(urls.registry).pathname);
    this.katello = new KatelloClient(urls.katelloRegistry, urls.foreman, (origin) => this.pool(origin));
    const basic = this.account ? `Basic ${Buffer.from(`${this.account.username}:${this.account.password}`).toString('base64')}` : undefined;
    this.capsuleSync = new CapsuleSyncTrigger({ katello: this.katello, capsuleId: s.capsule_id, authorization: basic });
  }

  /** The main server of these settings, or undefined in standalone mode (no foreman_url). */
  static of(settings: GatewaySettings, global: GlobalSettings, timeouts: UpstreamTimeouts): MainServer | undefined {
    const urls = mainServerUrls(settings, global.foreman_url);
    return urls ? new MainServer(urls, settings, global, timeouts) : undefined;
  }

  /** The pool of a URL's origin, made on first use. */
  private pool(url: string): HttpUpstream {
    const target = new URL(url);
    let up = this.pools.get(target.origin);
    if (!up) {
      const ca = this.ownHosts.has(target.hostname) ? this.global.foreman_ssl_ca : undefined;
      up = new HttpUpstream(target.origin, this.timeouts, ca ? { ca, systemRoots: true } : {}, this.settings.upstream_max_sockets);
      this.pools.set(target.origin, up);
    }
    return up;
  }

  /**
   * Reads from the main registry with a client's own Authorization (a pusher
   * reads what it just pushed). Redirects are followed; the Authorization is
   * dropped once one leaves the registry's origin.
   */
  readAs(authorization: string | undefined): RegistryFetch {
    const send = (method: string, target: URL, headers: Record<string, string>) => this.pool(target.href).request({ method, path: target.pathname + target.search, headers });
    return async (method, path, headers = {}) => {
      const url = new URL(`${this.registry.origin}${this.registry.basePath}${path}`);
      const first = await send(method, url, { ...headers, ...(authorization ? { Authorization: authorization } : {}) });
      const tooMany = () => new UpstreamError('reset', `more than ${MAX_REDIRECTS} redirects from ${url.origin}`);
      return followRedirects(first, url, headers, authorization, (target, h) => send(method, target, h), MAX_REDIRECTS, tooMany);
    };
  }

  /** Reads as this proxy's own account (tokens fetched as clients get them), retried with backoff. */
  proxyReader(options: ProxyReaderOptions): MainRegistry {
    return new MainRegistry({
      url: this.urls.registry,
      ...(this.account ? { credentials: this.account } : {}),
      timeouts: this.timeouts,
      upstreamFor: (origin) => this.pool(origin),
      ...options,
    });
  }

  /** Ask Katello to sync this capsule (push_sync_trigger: capsule_sync); bursts of pushes fold into one request. */
  requestCapsuleSync(log: Logger): void {
    this.capsuleSync.request(log);
  }

  close(): void {
    this.capsuleSync.close();
    for (const up of this.pools.values()) up.close();
    this.pools.clear();
  }
}
