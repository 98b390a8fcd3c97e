// The one client of the main server (smart-proxy mode), made once in setup():
// its URLs derived from settings, its connection pools and TLS, and every way
// the gateway talks to it — relaying a client's push, reading its registry as
// the client or as this proxy's own account, Katello's token and catalog
// calls, and the capsule-sync trigger. close() releases all of it.
import type { GlobalSettings, Logger } from '../../../lib/plugins/api.ts';
import type { RegistryFetch } from '../oci/registry-fetch.ts';
import type { GatewaySettings } from '../settings.ts';
import { CapsuleSyncTrigger } from './capsule-sync.ts';
import { HttpUpstream, type UpstreamTimeouts } from './http-upstream.ts';
import { KatelloClient } from './katello.ts';
import { mainFetch } from './main-fetch.ts';
import { MainRegistry, type RetryNotice } from './main-registry.ts';
import { mainServerUrls, type MainServerUrls } from './main-urls.ts';

export interface ProxyReaderOptions {
  /** Retries of one request after the first failure (connect error, 5xx, 429). */
  retries: number;
  onRetry?: (notice: RetryNotice | undefined) => void;
  /** Aborts requests in flight and backoff waits. */
  signal?: AbortSignal;
}

export class MainServer {
  readonly urls: MainServerUrls;
  /** The main server's registry, where a client's writes are relayed as they come (its Authorization included; never retried: bodies stream). */
  readonly registry: HttpUpstream;
  /** Katello's registry API: logins and catalogs. */
  readonly katello: KatelloClient;
  private readonly redirectTargets = new Map<string, HttpUpstream>();
  private readonly capsuleSync: CapsuleSyncTrigger;

  private constructor(
    urls: MainServerUrls,
    private readonly settings: GatewaySettings,
    private readonly global: GlobalSettings,
    private readonly timeouts: UpstreamTimeouts,
  ) {
    this.urls = urls;
    this.katello = new KatelloClient(urls.katelloRegistry, { ca: global.foreman_ssl_ca, timeoutMs: settings.upstream_response_timeout * 1000 });
    this.registry = new HttpUpstream(urls.registry, timeouts, { ca: global.foreman_ssl_ca }, settings.upstream_max_sockets);
    this.capsuleSync = new CapsuleSyncTrigger({ settings, foreman: urls.foreman, agent: this.katello.agent });
  }

  /** The main server of these settings, or undefined in standalone mode (no foreman_url). */
  static of(settings: GatewaySettings, global: GlobalSettings, timeouts: UpstreamTimeouts): MainServer | undefined {
    const urls = mainServerUrls(settings, global.foreman_url);
    return urls ? new MainServer(urls, settings, global, timeouts) : undefined;
  }

  /** Reads from the main registry with a client's own Authorization (a pusher reads what it just pushed); redirects followed. */
  readAs(authorization: string | undefined): RegistryFetch {
    return mainFetch(this.registry, (origin) => this.redirectTarget(origin), authorization);
  }

  /** Reads as this proxy's own account (sync_username / sync_password, tokens fetched as clients get them), retried with backoff. */
  proxyReader(options: ProxyReaderOptions): MainRegistry {
    const s = this.settings;
    return new MainRegistry({
      url: this.urls.registry,
      ...(s.sync_username && s.sync_password ? { credentials: { username: s.sync_username, password: s.sync_password } } : {}),
      timeouts: this.timeouts,
      ...(this.global.foreman_ssl_ca ? { ca: this.global.foreman_ssl_ca } : {}),
      maxSockets: s.upstream_max_sockets,
      ...options,
    });
  }

  /** Ask Katello to sync this capsule (push_sync_trigger: capsule_sync); bursts of pushes fold into one request. */
  requestCapsuleSync(log: Logger): void {
    this.capsuleSync.request(log);
  }

  private redirectTarget(origin: string): HttpUpstream {
    let up = this.redirectTargets.get(origin);
    if (!up) {
      up = new HttpUpstream(origin, this.timeouts, {}, this.settings.upstream_max_sockets);
      this.redirectTargets.set(origin, up);
    }
    return up;
  }

  close(): void {
    this.capsuleSync.close();
    this.registry.close();
    for (const up of this.redirectTargets.values()) up.close();
    this.katello.close();
  }
}
