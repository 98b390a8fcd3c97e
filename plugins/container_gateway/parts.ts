// The gateway's parts, each made once by setup() and closed by stop() in the
// reverse order (closers.ts): no part lives in module state, so a plugin
// stopped and set up again (tests, a reload) starts from nothing.
import type { PluginContext } from '../../lib/plugins/api.ts';
import { Closers } from './closers.ts';
import { Gateway } from './gateway.ts';
import { adminRouter } from './routes/admin.ts';
import { databaseAdminRouter } from './routes/admin-database.ts';
import { grantsAdminRouter } from './routes/admin-grants.ts';
import { flatpakIndexRouter } from './routes/flatpak-index.ts';
import { nodeAdminRouter } from './routes/admin-node.ts';
import { onDemandAdminRouter } from './routes/admin-on-demand.ts';
import { storeAdminRouter } from './routes/admin-store.ts';
import { syncAdminRouter } from './routes/admin-sync.ts';
import { managementRouter } from './routes/management.ts';
import { pulpcoreRouter } from './routes/pulpcore.ts';
import { registryRouter } from './routes/registry.ts';
import type { GatewaySettings } from './settings.ts';
import { UploadPurger } from './store/upload-purge.ts';
import { SyncService } from './sync/service.ts';
import { HttpUpstream } from './upstream/http-upstream.ts';

export interface GatewayParts {
  gateway: Gateway;
  /** The background purge of abandoned uploads (embedded store only), started by start(). */
  purger: UploadPurger | undefined;
  closers: Closers;
}

/** Build every part; a failure closes what was built and rethrows. */
export async function setUpGateway(ctx: PluginContext, settings: GatewaySettings): Promise<GatewayParts> {
  const closers = new Closers();
  try {
    return await build(ctx, settings, closers);
  } catch (err) {
    await closers.closeAll(ctx.logger);
    throw err;
  }
}

async function build(ctx: PluginContext, settings: GatewaySettings, closers: Closers): Promise<GatewayParts> {
  const gateway = closers.add('the gateway (database, upstreams)', await Gateway.open(settings, ctx), (g) => g.close());
  const store = gateway.store;
  ctx.rootRouter.use(gateway.metrics.middleware());
  ctx.router.use(gateway.metrics.middleware());
  const registry = registryRouter(gateway);
  ctx.rootRouter.use(registry);
  ctx.router.use(registry);
  const flatpak = flatpakIndexRouter(gateway);
  ctx.rootRouter.use(flatpak);
  ctx.router.use(flatpak);
  if (!gateway.standalone) ctx.router.use(managementRouter(gateway));
  if (store) {
    ctx.router.use(
      storeAdminRouter(ctx.auth.trustedClient, { store: () => store, reclaimUnlisted: () => gateway.db.reclaimUnlisted(), exclusively: (key, fn) => gateway.database.cluster.withAdvisoryLock(key, fn), node: settings.node_name }, settings.gc_grace_period * 1000, settings.upload_purge_age * 1000),
    );
  }
  const syncs = closers.add(
    'the sync runs',
    // A synced repository's tags are what the main server has now; on-demand checks them again on their next read.
    new SyncService({ db: gateway.db, local: gateway.mirror, main: gateway.main, settings, logger: ctx.logger, onRepositoryDone: (name) => gateway.contentChanged(name), metrics: gateway.metrics }),
    (s) => s.stop(),
  );
  ctx.router.use(syncAdminRouter(ctx.auth.trustedClient, syncs));
  ctx.router.use(nodeAdminRouter(ctx.auth.trustedClient, settings.node_name));
  ctx.router.use(onDemandAdminRouter(ctx.auth.trustedClient, settings.download_policy, () => gateway.onDemand?.counters.totals()));
  ctx.router.use(databaseAdminRouter(ctx.auth.trustedClient, gateway.database));
  const db = gateway.db;
  ctx.router.use(
    adminRouter({
      trustedClient: ctx.auth.trustedClient,
      // One bounded hashing queue for logins and accounts made here.
      hasher: gateway.logins.hasher,
      accounts: {
        listUsers: () => db.standaloneUsers(),
        addUser: (name, hash) => db.addUser(name, hash),
        removeUser: (name) => db.removeUser(name),
        namespaces: async (user) => ((await db.standaloneUsers()).includes(user) ? db.namespacesOf(user) : undefined),
        grantNamespace: (user, namespace) => db.grantNamespace(user, namespace),
        revokeNamespace: (user, namespace) => db.revokeNamespace(user, namespace),
        listRepositories: () => db.repositories(),
        setPublic: (name, isPublic) => db.setPublic(name, isPublic),
      },
    }),
  );
  ctx.router.use(grantsAdminRouter({ trustedClient: ctx.auth.trustedClient, db, standalone: gateway.standalone, storesTags: store !== undefined, hasher: gateway.logins.hasher, contentChanged: (name) => gateway.contentChanged(name) }));
  const pulpcore = closers.add('the pulpcore API upstream', new HttpUpstream(settings.pulpcore_api_endpoint, gateway.timeouts(), {}, settings.upstream_max_sockets), (up) => up.close());
  ctx.rootRouter.use(pulpcoreRouter(ctx, settings, pulpcore));
  const purger = store
    ? closers.add(
        'the upload purge',
        new UploadPurger(store.blobs, settings.upload_purge_age * 1000, { info: (m) => ctx.logger.info(m), error: (m) => ctx.logger.error(m) }),
        (p) => p.stop(),
      )
    : undefined;
  return { gateway, purger, closers };
}
