// The container gateway: the registry that podman, skopeo and docker talk to
// on a smart proxy. Pulls are served from the content backend with access
// decided from a SQLite cache that Katello keeps current.
import { definePlugin } from '../../lib/plugins/api.ts';
import { Gateway } from './gateway.ts';
import { adminRouter } from './routes/admin.ts';
import { storeAdminRouter } from './routes/admin-store.ts';
import { stopSyncs, syncAdminRouter } from './routes/admin-sync.ts';
import { managementRouter } from './routes/management.ts';
import { pulpcoreRouter } from './routes/pulpcore.ts';
import { registryRouter } from './routes/registry.ts';
import { SETTINGS_SCHEMA, type GatewaySettings } from './settings.ts';
import { UploadPurger } from './store/upload-purge.ts';
import { HttpUpstream } from './upstream/http-upstream.ts';

let gateway: Gateway | undefined;
let pulpcore: HttpUpstream | undefined;
let purger: UploadPurger | undefined;

export default definePlugin<GatewaySettings & Record<string, unknown>>({
  name: 'container_gateway',
  version: '0.1.0',
  settings: SETTINGS_SCHEMA,
  validate(s) {
    const backend = s.content_backend ?? (s.pulp_endpoint ? 'pulp' : 'local');
    if (backend === 'pulp' && !s.pulp_endpoint) throw new Error("setting 'pulp_endpoint' is required with content_backend: pulp");
    if ((s.pulp_client_ssl_cert === undefined) !== (s.pulp_client_ssl_key === undefined)) {
      throw new Error("setting 'pulp_client_ssl_cert' and 'pulp_client_ssl_key' must be set together");
    }
    if ((s.sync_username === undefined) !== (s.sync_password === undefined)) {
      throw new Error("setting 'sync_username' and 'sync_password' must be set together");
    }
    if (s.push_sync_trigger === 'capsule_sync' && s.capsule_id === undefined) {
      throw new Error("setting 'capsule_id' is required with push_sync_trigger: capsule_sync");
    }
  },
  setup(ctx) {
    const g = ctx.global;
    // As the original: the client TLS towards Pulp defaults to foreman_ssl_*.
    const settings: GatewaySettings = Object.freeze({
      ...ctx.settings,
      content_backend: ctx.settings.content_backend ?? (ctx.settings.pulp_endpoint ? 'pulp' : 'local'),
      pulp_client_ssl_ca: ctx.settings.pulp_client_ssl_ca ?? g.foreman_ssl_ca,
      pulp_client_ssl_cert: ctx.settings.pulp_client_ssl_cert ?? g.foreman_ssl_cert,
      pulp_client_ssl_key: ctx.settings.pulp_client_ssl_key ?? g.foreman_ssl_key,
    });
    if (!g.foreman_url && settings.content_backend === 'pulp') ctx.logger.warn('foreman_url is unset: logins (/v2/token) and host lookups are unavailable');
    if (!g.foreman_url) ctx.logger.info('standalone mode: users, tokens and repositories are managed here (proxyctl users, proxyctl repos)');
    gateway = new Gateway(settings, ctx);
    const registry = registryRouter(gateway);
    ctx.rootRouter.use(registry);
    ctx.router.use(registry);
    if (!gateway.standalone) ctx.router.use(managementRouter(gateway));
    const gw = gateway;
    const store = gw.store;
    if (store) {
      ctx.router.use(
        storeAdminRouter(ctx.auth.trustedClient, { store: () => store, reclaimUnlisted: () => gw.db.reclaimUnlisted() }, settings.gc_grace_period * 1000, settings.upload_purge_age * 1000),
      );
    }
    ctx.router.use(syncAdminRouter(ctx.auth.trustedClient, gw));
    const db = gateway.db;
    ctx.router.use(
      adminRouter({
        trustedClient: ctx.auth.trustedClient,
        accounts: {
          listUsers: () => db.standaloneUsers(),
          addUser: (name, hash) => db.addUser(name, hash),
          removeUser: (name) => db.removeUser(name),
          namespaces: (user) => (db.standaloneUsers().includes(user) ? db.namespacesOf(user) : undefined),
          grantNamespace: (user, namespace) => db.grantNamespace(user, namespace),
          revokeNamespace: (user, namespace) => db.revokeNamespace(user, namespace),
          listRepositories: () => db.repositories(),
          setPublic: (name, isPublic) => db.setPublic(name, isPublic),
        },
      }),
    );
    pulpcore = new HttpUpstream(settings.pulpcore_api_endpoint, gateway.timeouts(), {}, settings.upstream_max_sockets);
    ctx.rootRouter.use(pulpcoreRouter(ctx, settings, pulpcore));
    return gateway;
  },
  start(ctx) {
    if (!gateway?.store) return;
    purger = new UploadPurger(gateway.store.blobs, gateway.settings.upload_purge_age * 1000, { info: (m) => ctx.logger.info(m), error: (m) => ctx.logger.error(m) });
    purger.start();
  },
  async stop() {
    await purger?.stop();
    purger = undefined;
    stopSyncs();
    pulpcore?.close();
    gateway?.close();
    gateway = pulpcore = undefined;
  },
});
