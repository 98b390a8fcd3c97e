// What every registry route shares, made once in setup() and closed in
// stop(): settings, the database, the main server (smart-proxy mode), the
// access layer, and the one content backend chosen from settings: the
// embedded store or Pulp; in smart-proxy mode wrapped to forward writes, and
// with the embedded store and download_policy on_demand or streamed, wrapped
// first to fetch what the store lacks (Forwarding(OnDemand(Embedded))).
//
// The manifest cache is the one thing a process keeps in memory that a change
// made through another process sharing the database would leave stale (users,
// tokens, logins, host and repository lists, tag checks are read from the
// database each time). So every clearing of it is sent to the others too, on
// one notification channel, and each listens from start to stop.
import type { Request, Response } from 'express';
import type { Logger, PluginContext } from '../../lib/plugins/api.ts';
import { AccessLayer } from './access/access-layer.ts';
import type { RegistryClient } from './auth/client.ts';
import type { StandaloneAccounts } from './auth/standalone.ts';
import { LoginGuard } from './auth/login-guard.ts';
import type { ContentBackend } from './backends/content-backend.ts';
import { EmbeddedBackend } from './backends/embedded.ts';
import { ForwardingBackend } from './backends/forwarding.ts';
import { OnDemandBackend } from './backends/on-demand.ts';
import { SharedCounters, TagChecks } from './backends/on-demand-records.ts';
import { OnDemandStats } from './backends/on-demand-stats.ts';
import { PulpBackend } from './backends/pulp.ts';
import { GatewayDb } from './db/database.ts';
import { openDatabase, type OpenDatabase } from './db/open.ts';
import { RegistryError } from './oci/errors.ts';
import type { GatewaySettings } from './settings.ts';
import type { KatelloClient } from './upstream/katello.ts';
import type { MainRegistry } from './upstream/main-registry.ts';
import { lendBody } from './upstream/lent-body.ts';
import { MainServer } from './upstream/main-server.ts';
import { ManifestCache } from './upstream/manifest-cache.ts';
import { BlobFetches } from './store/blob-fetches.ts';
import { BlobStore, type UploadLock } from './store/blob-store.ts';
import { ContentIndex } from './store/content-index.ts';
import { TagOrder } from './store/tag-order.ts';
import type { LocalStore } from './store/local-store.ts';
import { GatewayMetrics } from './metrics.ts';
import { StoreMirror } from './sync/mirror.ts';

export type { LocalStore };

/** Where a process says it emptied its manifest cache: the payload is a repository name, or EVERY_REPOSITORY. */
export const CONTENT_CHANGES = 'container_gateway_content';
/** Not a repository name (the grammar has no '*'). */
export const EVERY_REPOSITORY = '*';

export class Gateway {
  readonly db: GatewayDb;
  /** The main server (smart-proxy mode): where pushes go, syncs read and logins are decided. */
  readonly main: MainServer | undefined;
  /** No main server: users, tokens and repositories are this gateway's own. */
  readonly standalone: boolean;
  /** The embedded store, when content is kept here (content_backend: local). */
  readonly store: LocalStore | undefined;
  /** Copies from the main server into the embedded store: one per store, so that sync and pushes share their downloads in flight. */
  readonly mirror: StoreMirror | undefined;
  readonly logger: Logger;
  /** Manifests read from Pulp, briefly cached; emptied whenever content changes. */
  readonly manifests: ManifestCache;
  /** Login throttling and the recent-login cache (auth/login-guard.ts). */
  readonly logins: LoginGuard;
  /** Who may do what: decided once per registry request, before the content backend is called. */
  readonly access: AccessLayer;
  /** Where content is read and written, chosen once from settings. */
  readonly content: ContentBackend;
  /** Upstream blob fetches into the embedded store, one per digest at a time (on-demand serving and sync share them). */
  readonly fetches: BlobFetches | undefined;
  /** On-demand serving (download_policy on_demand or streamed), when it is on: its counters and tag checks. */
  readonly onDemand: { counters: SharedCounters; checks: TagChecks } | undefined;
  /** The gateway's Prometheus metrics (GET /metrics). */
  readonly metrics: GatewayMetrics;
  /** The main server as this proxy's account for on-demand reads: one client, its tokens reused, never retried. */
  private readonly reader: MainRegistry | undefined;
  /** Stops listening for the other processes' cache clearings. */
  private unlisten: (() => Promise<void>) | undefined;

  /** Open the database (migrated before anything is served), then build the parts over it; a failure closes it. */
  static async open(settings: GatewaySettings, ctx: PluginContext): Promise<Gateway> {
    const database = await openDatabase(settings, ctx.logger);
    try {
      const gateway = new Gateway(settings, ctx, database);
      gateway.unlisten = await database.cluster.listen(CONTENT_CHANGES, {
        onPayload: (payload) => gateway.manifests.clear(payload === EVERY_REPOSITORY ? undefined : payload),
        onMissed: () => gateway.manifests.clear(),
      });
      await gateway.onDemand?.counters.start();
      ctx.logger.info(`database: ${database.description}`);
      return gateway;
    } catch (err) {
      await database.close();
      throw err;
    }
  }

  private constructor(
    readonly settings: GatewaySettings,
    readonly ctx: PluginContext,
    /** The one database and the coordination of the processes that share it. */
    readonly database: OpenDatabase,
  ) {
    const sql = database.sql;
    this.logger = ctx.logger;
    this.db = new GatewayDb(sql, database.reads);
    // An upload is written by one node at a time: the others answer it is busy (backends/embedded-uploads.ts).
    const uploadLock: UploadLock = (uuid, fn) => database.cluster.withSharedConnectionLock(`container_gateway upload ${uuid}`, fn);
    const store = settings.content_backend === 'local' ? { blobs: new BlobStore(settings.storage_path, { uploadLock }), index: new ContentIndex(sql, database.reads) } : undefined;
    const metrics = (this.metrics = new GatewayMetrics(ctx.metrics, store ? 'store' : 'pulp', store ? () => store.index.totals() : undefined));
    this.logins = new LoginGuard(sql, settings, ctx.logger, metrics);
    this.manifests = new ManifestCache(settings.manifest_cache_ttl * 1000, 32 * 1024 * 1024, (hit) => metrics.manifestLookup(hit));
    this.main = MainServer.of(settings, ctx.global, this.timeouts());
    this.standalone = !this.main;
    this.store = store;
    const db = this.db;
    this.access = new AccessLayer({
      db,
      settings,
      katello: this.main?.katello,
      identity: (req) => ctx.auth.identity(req),
      repositoryId: store ? (name) => store.index.repositoryId(name) : async (name) => (await db.repository(name))?.id,
      logger: ctx.logger,
    });
    let inner: ContentBackend = store ? new EmbeddedBackend(store) : new PulpBackend({ settings, timeouts: this.timeouts(), tls: this.tls(), manifests: this.manifests, logger: ctx.logger });
    this.fetches = store ? new BlobFetches(store.blobs, settings.on_demand_concurrency, lendBody) : undefined;
    // Sync and on-demand reads share the downloads in flight: a blob is fetched once, whoever asks.
    this.mirror = store ? new StoreMirror(store, this.fetches) : undefined;
    const policy = settings.download_policy;
    if (this.main && store && this.fetches && (policy === 'on_demand' || policy === 'streamed')) {
      const stats = new OnDemandStats(metrics);
      const checks = new TagChecks(sql);
      this.reader = this.main.proxyReader({ retries: 0 });
      this.onDemand = { counters: new SharedCounters(sql, stats, settings.node_name), checks };
      inner = new OnDemandBackend(inner, {
        store,
        tagOrder: new TagOrder(sql),
        main: this.reader,
        fetches: this.fetches,
        checks,
        stats,
        policy,
        checkIntervalMs: settings.manifest_check_interval * 1000,
        logger: ctx.logger,
      });
    }
    const clearManifests = (name: string) => this.clearManifests(name);
    // Smart-proxy mode: writes go to the main server, and what it stored is kept here too.
    this.content = this.main
      ? new ForwardingBackend(inner, { main: this.main, local: this.mirror, db, settings, clearManifests, origin: (req) => this.origin(req) })
      : inner;
  }

  timeouts() {
    const s = this.settings;
    return { connectMs: s.upstream_connect_timeout * 1000, responseMs: s.upstream_response_timeout * 1000, idleMs: s.upstream_idle_timeout * 1000 };
  }

  tls() {
    const s = this.settings;
    return { ca: s.pulp_client_ssl_ca, cert: s.pulp_client_ssl_cert, key: s.pulp_client_ssl_key };
  }

  /** Katello's repository_list or a sync changed what the main server has: the next tag read asks it (of `name` only, when given). */
  async contentChanged(name?: string): Promise<void> {
    await this.clearManifests(name);
    await this.onDemand?.checks.invalidate(name);
  }

  /** Empty the manifest cache (of `name` only, when given) here and in every process sharing the database. */
  async clearManifests(name?: string): Promise<void> {
    this.manifests.clear(name);
    await this.database.cluster.notify(CONTENT_CHANGES, name ?? EVERY_REPOSITORY);
  }

  async close(): Promise<void> {
    await this.unlisten?.();
    await this.content.close?.();
    await this.onDemand?.counters.close();
    this.fetches?.close();
    this.reader?.close();
    this.main?.close();
    await this.database.close();
    this.metrics.close();
  }

  requireKatello(): KatelloClient {
    if (!this.main) throw new RegistryError('UNAVAILABLE', 'no main server is configured (foreman_url is unset)');
    return this.main.katello;
  }

  /** Who is calling (identified once per request by the access layer). */
  client(req: Request): Promise<RegistryClient> {
    return this.access.client(req);
  }

  standaloneAccounts(): StandaloneAccounts {
    return this.access.standaloneAccounts();
  }

  learnHost(uuid: string): Promise<void> {
    return this.access.learnHost(uuid);
  }

  origin(req: Request): string {
    return this.access.origin(req);
  }

  challenge(req: Request, res: Response, scope?: string): void {
    this.access.challenge(req, res, scope);
  }
}

