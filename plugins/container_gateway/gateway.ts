// What every registry route shares, made once in setup() and closed in
// stop(): settings, the database, the main server (smart-proxy mode), the
// access layer, and the one content backend chosen from settings.
import type { Request, Response } from 'express';
import type { Logger, PluginContext } from '../../lib/plugins/api.ts';
import { AccessLayer } from './access/access-layer.ts';
import type { RegistryClient } from './auth/client.ts';
import type { StandaloneAccounts } from './auth/standalone.ts';
import { LoginGuard } from './auth/login-guard.ts';
import type { ContentBackend, Exchange } from './backends/content-backend.ts';
import { EmbeddedBackend } from './backends/embedded.ts';
import { PulpBackend } from './backends/pulp.ts';
import { GatewayDb } from './db/database.ts';
import { RegistryError } from './oci/errors.ts';
import { forwardPush, type PushTarget } from './routes/push.ts';
import type { GatewaySettings } from './settings.ts';
import type { KatelloClient } from './upstream/katello.ts';
import { MainServer } from './upstream/main-server.ts';
import { ManifestCache } from './upstream/manifest-cache.ts';
import { BlobStore } from './store/blob-store.ts';
import { ContentIndex } from './store/content-index.ts';
import type { LocalStore } from './store/local-store.ts';

export type { LocalStore };

export class Gateway {
  readonly db: GatewayDb;
  /** The main server (smart-proxy mode): where pushes go, syncs read and logins are decided. */
  readonly main: MainServer | undefined;
  /** No main server: users, tokens and repositories are this gateway's own. */
  readonly standalone: boolean;
  /** The embedded store, when content is kept here (content_backend: local). */
  readonly store: LocalStore | undefined;
  readonly logger: Logger;
  /** Manifests read from Pulp, briefly cached; emptied whenever content changes. */
  readonly manifests: ManifestCache;
  /** Login throttling and the recent-login cache (auth/login-guard.ts). */
  readonly logins: LoginGuard;
  /** Who may do what: decided once per registry request, before the content backend is called. */
  readonly access: AccessLayer;
  /** Where content is read and written, chosen once from settings. */
  readonly content: ContentBackend;

  constructor(
    readonly settings: GatewaySettings,
    readonly ctx: PluginContext,
  ) {
    this.logger = ctx.logger;
    this.db = new GatewayDb(settings.sqlite_db_path, settings.sqlite_timeout);
    this.logins = new LoginGuard(this.db.db, settings, ctx.logger);
    this.manifests = new ManifestCache(settings.manifest_cache_ttl * 1000, 32 * 1024 * 1024);
    this.main = MainServer.of(settings, ctx.global, this.timeouts());
    this.standalone = !this.main;
    const store = settings.content_backend === 'local' ? { blobs: new BlobStore(settings.storage_path), index: new ContentIndex(this.db.db) } : undefined;
    this.store = store;
    const db = this.db;
    this.access = new AccessLayer({
      db,
      settings,
      katello: this.main?.katello,
      identity: (req) => ctx.auth.identity(req),
      repositoryId: store ? (name) => store.index.repositoryId(name) : (name) => db.repository(name)?.id,
      logger: ctx.logger,
    });
    const inner: ContentBackend = store ? new EmbeddedBackend(store) : new PulpBackend({ settings, timeouts: this.timeouts(), tls: this.tls(), manifests: this.manifests, logger: ctx.logger });
    this.content = this.main ? forwardingToMain(this, inner) : inner;
  }

  timeouts() {
    const s = this.settings;
    return { connectMs: s.upstream_connect_timeout * 1000, responseMs: s.upstream_response_timeout * 1000, idleMs: s.upstream_idle_timeout * 1000 };
  }

  tls() {
    const s = this.settings;
    return { ca: s.pulp_client_ssl_ca, cert: s.pulp_client_ssl_cert, key: s.pulp_client_ssl_key };
  }

  close(): void {
    void this.content.close?.();
    this.main?.close();
    this.db.close();
  }

  requireKatello(): KatelloClient {
    if (!this.main) throw new RegistryError('UNAVAILABLE', 'no main server is configured (foreman_url is unset)');
    return this.main.katello;
  }

  /** Who is calling (identified once per request by the access layer). */
  client(req: Request): RegistryClient {
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

/**
 * Smart-proxy mode until the forwarding backend replaces this: every write,
 * and every read the access layer deferred (a push probe), goes to the main
 * server's registry as routes/push.ts relays it; other reads are the inner
 * backend's.
 */
function forwardingToMain(gw: Gateway, inner: ContentBackend): ContentBackend {
  const forward = (x: Exchange, target: PushTarget) => forwardPush(gw, x.req, x.res, target);
  const name = (x: Exchange) => x.access.name;
  return {
    getManifest: (x, ref) => (x.access.deferred ? forward(x, { kind: 'manifest', name: name(x), ...ref }) : inner.getManifest(x, ref)),
    getBlob: (x, digest) => (x.access.deferred ? forward(x, { kind: 'blob', name: name(x), digest }) : inner.getBlob(x, digest)),
    tags: (x, last, limit) => inner.tags(x, last, limit),
    ...(inner.referrers ? { referrers: inner.referrers.bind(inner) } : {}),
    ...(inner.ping ? { ping: inner.ping.bind(inner) } : {}),
    writes: {
      putManifest: (x, ref) => forward(x, { kind: 'manifest', name: name(x), ...ref }),
      deleteManifest: (x, ref) => forward(x, { kind: 'manifest', name: name(x), ...ref }),
      deleteBlob: (x, digest) => forward(x, { kind: 'blob', name: name(x), digest }),
      startUpload: (x) => forward(x, { kind: 'upload-start', name: name(x) }),
      patchUpload: (x, uuid) => forward(x, { kind: 'upload', name: name(x), uuid }),
      finishUpload: (x, uuid) => forward(x, { kind: 'upload', name: name(x), uuid }),
      uploadStatus: (x, uuid) => forward(x, { kind: 'upload', name: name(x), uuid }),
      cancelUpload: (x, uuid) => forward(x, { kind: 'upload', name: name(x), uuid }),
    },
    close: () => inner.close?.(),
  };
}
