// What every registry route shares: settings, the database, the upstreams,
// and the access decisions of container-gateway.md §5.
import type { Request, Response } from 'express';
import type { Logger, PluginContext } from '../../lib/plugins/api.ts';
import { identifyClient, type RegistryClient } from './auth/client.ts';
import { mayCreateRepository, type StandaloneAccounts } from './auth/standalone.ts';
import { LoginGuard } from './auth/login-guard.ts';
import { GatewayDb, type Viewer } from './db/database.ts';
import { RegistryError } from './oci/errors.ts';
import type { GatewaySettings } from './settings.ts';
import { HttpUpstream } from './upstream/http-upstream.ts';
import { repositoriesOf, type KatelloClient } from './upstream/katello.ts';
import { MainServer } from './upstream/main-server.ts';
import { ManifestCache } from './upstream/manifest-cache.ts';
import { BlobStore } from './store/blob-store.ts';
import { ContentIndex } from './store/content-index.ts';
import type { LocalStore } from './store/local-store.ts';

export type { LocalStore };

export class Gateway {
  readonly db: GatewayDb;
  private readonly pulpUpstream: HttpUpstream | undefined;
  /** The main server (smart-proxy mode): where pushes go, syncs read and logins are decided. */
  readonly main: MainServer | undefined;
  /** No main server: users, tokens and repositories are this gateway's own. */
  readonly standalone: boolean;
  private readonly store: LocalStore | undefined;
  readonly logger: Logger;
  readonly manifests: ManifestCache;
  /** Login throttling and the recent-login cache (auth/login-guard.ts). */
  readonly logins: LoginGuard;
  private readonly contentApps = new Map<string, HttpUpstream>();
  private readonly clients = new WeakMap<Request, RegistryClient>();
  /** Unknown host UUIDs recently asked of Katello (defect 19: don't ask on every request). */
  private readonly hostLookups = new Map<string, number>();

  constructor(
    readonly settings: GatewaySettings,
    readonly ctx: PluginContext,
  ) {
    this.logger = ctx.logger;
    this.db = new GatewayDb(settings.sqlite_db_path, settings.sqlite_timeout);
    this.logins = new LoginGuard(this.db.db, settings, ctx.logger);
    this.manifests = new ManifestCache(settings.manifest_cache_ttl * 1000, 32 * 1024 * 1024);
    this.pulpUpstream = settings.content_backend === 'pulp' ? new HttpUpstream(settings.pulp_endpoint, this.timeouts(), this.tls(), settings.upstream_max_sockets) : undefined;
    this.store = settings.content_backend === 'local' ? { blobs: new BlobStore(settings.storage_path), index: new ContentIndex(this.db.db) } : undefined;
    this.main = MainServer.of(settings, ctx.global, this.timeouts());
    this.standalone = !this.main;
  }

  get backend(): 'pulp' | 'local' {
    return this.settings.content_backend;
  }

  /** The registry at pulp_endpoint (pulp backend only). */
  get pulp(): HttpUpstream {
    if (!this.pulpUpstream) throw new RegistryError('UNSUPPORTED', 'this gateway has no pulp backend');
    return this.pulpUpstream;
  }

  /** The embedded store (local backend only). */
  localStore(): LocalStore {
    if (!this.store) throw new RegistryError('UNSUPPORTED', 'this gateway has no embedded store (content_backend: pulp)');
    return this.store;
  }

  timeouts() {
    const s = this.settings;
    return { connectMs: s.upstream_connect_timeout * 1000, responseMs: s.upstream_response_timeout * 1000, idleMs: s.upstream_idle_timeout * 1000 };
  }

  tls() {
    const s = this.settings;
    return { ca: s.pulp_client_ssl_ca, cert: s.pulp_client_ssl_cert, key: s.pulp_client_ssl_key };
  }

  /** An upstream for a redirect target (Pulp's content app), pooled per origin. */
  contentApp(origin: string): HttpUpstream {
    let up = this.contentApps.get(origin);
    if (!up) {
      up = new HttpUpstream(origin, this.timeouts(), this.tls(), this.settings.upstream_max_sockets);
      this.contentApps.set(origin, up);
    }
    return up;
  }

  close(): void {
    this.pulpUpstream?.close();
    this.main?.close();
    for (const up of this.contentApps.values()) up.close();
    this.db.close();
  }

  requireKatello(): KatelloClient {
    if (!this.main) throw new RegistryError('UNAVAILABLE', 'no main server is configured (foreman_url is unset)');
    return this.main.katello;
  }

  /** Who is calling: identified once per request (routing and access checks both ask). */
  client(req: Request): RegistryClient {
    let client = this.clients.get(req);
    if (!client) {
      client = identifyClient(req, this.ctx.auth.identity(req), this.db, this.settings.trusted_proxies);
      this.clients.set(req, client);
    }
    return client;
  }

  /** Standalone mode's users, repositories and grants, as the token service and the access checks read them. */
  standaloneAccounts(): StandaloneAccounts {
    const db = this.db;
    return {
      passwordHash: (user) => db.passwordHash(user),
      repository: (name) => db.repositoryInfo(name),
      userMapped: (user, repo) => db.userMapped(user, repo),
      mayCreate: (user, name) => mayCreateRepository(user, name, db.namespacesOf(user), this.settings.open_top_level_names),
      storeToken: (checksum, expireAtMs, user, scopes) => {
        // Anonymous tokens are not stored: the anonymous one is `unauthenticated`.
        if (user !== undefined) db.storeToken(checksum, expireAtMs, user, scopes);
      },
    };
  }

  /** A host seen for the first time: fetch its catalog from Katello (at most once per host_lookup_interval). */
  async learnHost(uuid: string): Promise<void> {
    if (this.db.hostKnown(uuid) || !this.main) return;
    const last = this.hostLookups.get(uuid);
    if (last !== undefined && Date.now() - last < this.settings.host_lookup_interval * 1000) return;
    this.hostLookups.set(uuid, Date.now());
    try {
      const reply = await this.main.katello.hostCatalog(uuid);
      if (reply.status !== 200) {
        this.logger.warn(`catalog of host ${uuid} from Katello answered ${reply.status}`);
        return;
      }
      this.db.setHostRepositories(uuid, repositoriesOf(reply));
      this.hostLookups.delete(uuid);
    } catch (err) {
      this.logger.warn(`catalog of host ${uuid} could not be fetched: ${(err as Error).message}`);
    }
  }

  /** The client-facing origin, for token realms and Link headers. */
  origin(req: Request): string {
    return (this.settings.registry_url ?? `${req.protocol}://${req.get('host') ?? 'localhost'}`).replace(/\/$/, '');
  }

  /** 401 or hidden-repository answers carry the Bearer challenge. */
  challenge(req: Request, res: Response, scope?: string): void {
    const origin = this.origin(req);
    const service = new URL(origin).host;
    res.set('WWW-Authenticate', `Bearer realm="${origin}/v2/token",service="${service}"${scope ? `,scope="${scope}"` : ''}`);
  }

  /**
   * May this client read the repository? Private and unknown repositories look
   * the same: 401 with a challenge naming the repository to a client without
   * credentials (so that it fetches a token and retries), 404 NAME_UNKNOWN to
   * an identified one (user or host) that may not read it.
   */
  async authorize(req: Request, res: Response, name: string): Promise<RegistryClient> {
    const client = this.client(req);
    if (client.kind === 'invalid') {
      this.challenge(req, res, `repository:${name}:pull`);
      throw new RegistryError('UNAUTHORIZED', 'the token is unknown or expired: log in again');
    }
    if (client.kind === 'host') await this.learnHost(client.uuid);
    const viewer: Viewer = client.kind === 'anonymous' ? { kind: 'anonymous' } : client;
    if (!this.db.canRead(viewer, name)) this.refuseRead(req, res, client, name);
    return client;
  }

  /** The refusal of a read: 401 + challenge without credentials, else 404 NAME_UNKNOWN (with the challenge too). */
  refuseRead(req: Request, res: Response, client: RegistryClient, name: string): never {
    this.challenge(req, res, `repository:${name}:pull`);
    if (client.kind === 'anonymous' || client.kind === 'invalid') throw new RegistryError('UNAUTHORIZED', 'authentication required', { name });
    throw new RegistryError('NAME_UNKNOWN', 'Repository name unknown', { name });
  }
}
