// The container gateway: the registry that podman, skopeo and docker talk to
// on a smart proxy. Pulls are served from the content backend with access
// decided from a database that Katello keeps current (SQLite, or PostgreSQL
// shared by several nodes).
import { hostname } from 'node:os';
import { definePlugin, type Logger } from '../../lib/plugins/api.ts';
import { DbConnectionError, parseDbConnection } from './db/connection.ts';
import { PING_TIMEOUT_MS } from './db/open.ts';
import { setUpGateway, type GatewayParts } from './parts.ts';
import { SETTINGS_SCHEMA, type DownloadPolicy, type GatewaySettings } from './settings.ts';

export default definePlugin<GatewaySettings & Record<string, unknown>, GatewayParts>({
  name: 'container_gateway',
  version: '0.1.0',
  settings: SETTINGS_SCHEMA,
  validate(s, global) {
    try {
      parseDbConnection(s.db_connection_string, s.sqlite_db_path);
    } catch (err) {
      if (err instanceof DbConnectionError) throw new Error(`setting 'db_connection_string' ${err.message}`);
      throw err;
    }
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
    // on_demand and streamed fetch from the main server: without one there is nothing to fetch from.
    if ((s.download_policy === 'on_demand' || s.download_policy === 'streamed') && !global.foreman_url) {
      throw new Error(`setting 'download_policy': ${s.download_policy} needs a main server to fetch from (foreman_url is unset): use immediate`);
    }
  },
  setup(ctx) {
    const g = ctx.global;
    // As the original: the client TLS towards Pulp defaults to foreman_ssl_*.
    const content_backend = ctx.settings.content_backend ?? (ctx.settings.pulp_endpoint ? 'pulp' : 'local');
    const settings: GatewaySettings = Object.freeze({
      ...ctx.settings,
      content_backend,
      download_policy: downloadPolicy(ctx.settings.download_policy, content_backend, g.foreman_url !== undefined, ctx.logger),
      pulp_client_ssl_ca: ctx.settings.pulp_client_ssl_ca ?? g.foreman_ssl_ca,
      pulp_client_ssl_cert: ctx.settings.pulp_client_ssl_cert ?? g.foreman_ssl_cert,
      pulp_client_ssl_key: ctx.settings.pulp_client_ssl_key ?? g.foreman_ssl_key,
      node_name: ctx.settings.node_name ?? defaultNodeName(),
    });
    if (!g.foreman_url && settings.content_backend === 'pulp') ctx.logger.warn('foreman_url is unset: logins (/v2/token) and host lookups are unavailable');
    if (!g.foreman_url) ctx.logger.info('standalone mode: users, tokens and repositories are managed here (proxyctl users, proxyctl repos)');
    if (settings.download_policy !== 'immediate' && settings.sync_username === undefined) {
      ctx.logger.warn(`download_policy ${settings.download_policy} without sync_username: only repositories the main server serves anonymously can be fetched on demand`);
    }
    return setUpGateway(ctx, settings);
  },
  start(_ctx, parts) {
    parts.purger?.start();
  },
  // Without its database a node can neither log anyone in nor serve a manifest: /readyz says so, and a
  // load balancer sends requests to the other nodes until it answers again.
  async ready(_ctx, parts) {
    const database = parts.gateway.database;
    const ping = await database.ping(PING_TIMEOUT_MS);
    return ping.reachable ? undefined : `database ${database.description} does not answer: ${ping.error}`;
  },
  async stop(ctx, parts) {
    await parts?.closers.closeAll(ctx.logger);
  },
});

/**
 * The policy in force: on_demand by default where content is kept here for a
 * main server (smart-proxy mode, embedded store), else immediate. Pulp has
 * policies of its own (Katello sets them there): with it only immediate applies.
 */
function downloadPolicy(asked: DownloadPolicy | undefined, backend: 'pulp' | 'local', smartProxy: boolean, logger: Logger): DownloadPolicy {
  if (backend === 'pulp') {
    if (asked !== undefined && asked !== 'immediate') logger.warn(`download_policy: ${asked} is ignored with content_backend: pulp (Pulp applies the policy Katello gave it)`);
    return 'immediate';
  }
  return asked ?? (smartProxy ? 'on_demand' : 'immediate');
}

/** The machine's hostname, in the form node_name allows (its first label if it is longer than that). */
function defaultNodeName(): string {
  const name = hostname().replace(/[^A-Za-z0-9._-]/g, '-');
  return (name.length > 64 ? name.split('.')[0]!.slice(0, 64) : name) || 'localhost';
}
