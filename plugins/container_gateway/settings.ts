// Settings of the container gateway: the original plugin's keys plus ours.
import type { PropertySchema } from '../../lib/plugins/api.ts';

export interface GatewaySettings {
  /** 'local' (the embedded store) unless pulp_endpoint is set. */
  readonly content_backend: 'pulp' | 'local';
  readonly storage_path: string;
  readonly gc_grace_period: number;
  readonly upload_purge_age: number;
  readonly pulp_endpoint: string;
  readonly pulp_registry_path: string;
  readonly client_endpoint?: string;
  readonly pulp_client_ssl_ca?: string;
  readonly pulp_client_ssl_cert?: string;
  readonly pulp_client_ssl_key?: string;
  readonly redirect_mode: 'pass' | 'follow';
  readonly remote_user_header: string;
  readonly katello_registry_path: string;
  readonly sqlite_db_path: string;
  readonly sqlite_timeout: number;
  /** The database (db/connection.ts): a postgresql:// or sqlite:// URL; unset: the SQLite file at sqlite_db_path. */
  readonly db_connection_string?: string;
  /** PostgreSQL: connections in this process's pool. */
  readonly db_max_connections: number;
  /** PostgreSQL: seconds a query waits for a free pooled connection before it fails. */
  readonly db_pool_timeout: number;
  readonly registry_url?: string;
  readonly trusted_proxies: readonly string[];
  readonly token_max_lifetime: number;
  readonly upstream_connect_timeout: number;
  readonly upstream_response_timeout: number;
  readonly upstream_idle_timeout: number;
  readonly upstream_max_sockets: number;
  readonly host_lookup_interval: number;
  readonly pulpcore_api_endpoint: string;
  readonly manifest_cache_ttl: number;
  /** The main server's registry, for pushes and sync (default: foreman_url + katello_registry_path). */
  readonly main_registry_url?: string;
  readonly sync_username?: string;
  readonly sync_password?: string;
  readonly sync_concurrency: number;
  readonly sync_retries: number;
  readonly push_sync_trigger: 'none' | 'capsule_sync';
  readonly capsule_id?: number;
  /** Standalone mode: may any user create a repository with a one-component name (no namespace)? */
  readonly open_top_level_names: boolean;
  /** Failed logins per account, and per client address, before further attempts get 429. */
  readonly login_failure_limit: number;
  /** Seconds a run of failed logins is counted over (and the longest a throttled client waits). */
  readonly login_failure_window: number;
  /** Seconds a login the main server accepted still works while it is unreachable (0: never). */
  readonly login_cache_ttl: number;
  /**
   * Katello's download policies: immediate (content arrives by sync and push
   * only), on_demand (a miss is fetched from the main server, served and
   * kept), streamed (served from the main server, not kept). Set by setup():
   * on_demand in smart-proxy mode with the embedded store, else immediate.
   */
  readonly download_policy: DownloadPolicy;
  /** Seconds a tag is served from the store before the main server is asked again (0: every read). */
  readonly manifest_check_interval: number;
  /** Upstream blob fetches of on-demand serving at once. */
  readonly on_demand_concurrency: number;
  /** This node's name where several share one database and storage (default: the machine's hostname). */
  readonly node_name: string;
}

export type DownloadPolicy = 'immediate' | 'on_demand' | 'streamed';

const seconds = (d: number, what: string): PropertySchema => ({ type: 'number', exclusiveMinimum: 0, default: d, description: `${what} in seconds (more than 0)` });
const file: PropertySchema = { type: 'string', minLength: 1, fileReadable: true, description: 'the path of a readable file' };

export const SETTINGS_SCHEMA: Record<string, PropertySchema> = {
  content_backend: { enum: ['pulp', 'local'], description: "pulp (a registry at pulp_endpoint) or local (the embedded store)" },
  storage_path: { type: 'string', minLength: 1, default: '/var/lib/foreman-proxy/container_gateway/storage', description: 'a directory path' },
  gc_grace_period: { type: 'number', minimum: 0, default: 600, description: 'seconds a new blob is safe from gc (0 or more)' },
  upload_purge_age: { type: 'integer', minimum: 1, default: 3600, description: 'seconds an upload (push, sync or fetch) may sit idle before it is purged as abandoned (1 or more)' },
  pulp_endpoint: { type: 'string', format: 'url' },
  pulp_registry_path: { type: 'string', pattern: '^/(.*/)?$', default: '/pulpcore_registry/v2/', description: "a URL path starting and ending with '/'" },
  client_endpoint: { type: 'string', format: 'url' },
  pulp_client_ssl_ca: file,
  pulp_client_ssl_cert: file,
  pulp_client_ssl_key: file,
  redirect_mode: { enum: ['pass', 'follow'], default: 'pass', description: 'pass (send the client to the content app) or follow (stream it through the gateway)' },
  remote_user_header: { type: 'string', pattern: '^[A-Za-z0-9_-]+$', default: 'Remote-User', description: "an HTTP header name (Pulp's web server drops names with '_': REMOTE_USER never arrives)" },
  katello_registry_path: { type: 'string', pattern: '^/(.*/)?$', default: '/v2/', description: "a URL path starting and ending with '/'" },
  sqlite_db_path: { type: 'string', minLength: 1, default: '/var/lib/foreman-proxy/container_gateway.db', description: 'a file path' },
  sqlite_timeout: { type: 'integer', minimum: 0, default: 30000, description: 'milliseconds (0 or more)' },
  db_connection_string: { type: 'string', minLength: 1, description: "postgresql://user:password@host:port/database, postgresql:///database (unix socket; ?host=/dir), or sqlite:///path/to/file.db" },
  db_max_connections: { type: 'integer', minimum: 1, maximum: 1000, default: 30, description: 'a number of PostgreSQL connections per process (1 to 1000)' },
  db_pool_timeout: seconds(30, 'how long a query waits for a free PostgreSQL connection'),
  registry_url: { type: 'string', format: 'url' },
  trusted_proxies: { type: 'array', items: { type: 'string', minLength: 1 }, default: [], description: 'a list of front proxy IP addresses' },
  token_max_lifetime: seconds(900, 'the longest a token is accepted locally before Katello is asked again'),
  upstream_connect_timeout: seconds(10, 'connect timeout'),
  upstream_response_timeout: seconds(60, 'time to the response headers'),
  upstream_idle_timeout: seconds(60, 'idle time while streaming'),
  upstream_max_sockets: { type: 'integer', minimum: 1, default: 128, description: 'a number of connections (1 or more)' },
  host_lookup_interval: seconds(60, 'how long an unknown host UUID is remembered before Katello is asked again'),
  manifest_cache_ttl: { type: 'number', minimum: 0, default: 10, description: 'seconds a fetched manifest is reused (0 disables the cache)' },
  main_registry_url: { type: 'string', format: 'url' },
  sync_username: { type: 'string', minLength: 1 },
  sync_password: { type: 'string', minLength: 1 },
  sync_concurrency: { type: 'integer', minimum: 1, maximum: 64, default: 4, description: 'a number of parallel downloads (1 to 64)' },
  sync_retries: { type: 'integer', minimum: 0, maximum: 20, default: 5, description: 'how often a failed request to the main server is retried, with backoff (0 to 20)' },
  push_sync_trigger: { enum: ['none', 'capsule_sync'], default: 'none', description: "none, or capsule_sync (content_backend: pulp: after a push, ask Katello to sync this proxy)" },
  capsule_id: { type: 'integer', minimum: 1, description: "this proxy's id in Foreman (a positive integer)" },
  open_top_level_names: { type: 'boolean', default: false, description: "true or false (standalone mode: anyone may create a repository named without a '/')" },
  login_failure_limit: { type: 'integer', minimum: 1, default: 10, description: 'a number of failed logins (1 or more) per account and per client address' },
  login_failure_window: seconds(300, 'how long failed logins are counted, and a throttled client waits,'),
  login_cache_ttl: { type: 'number', minimum: 0, default: 300, description: 'seconds a login the main server accepted keeps working while it is unreachable (0 disables)' },
  download_policy: { enum: ['immediate', 'on_demand', 'streamed'], description: 'immediate (sync and push only), on_demand (fetch a miss from the main server and keep it) or streamed (relay it, keep nothing)' },
  manifest_check_interval: { type: 'number', minimum: 0, default: 300, description: 'seconds (0 or more) a tag is served from the store before the main server is asked again (0: on every read)' },
  on_demand_concurrency: { type: 'integer', minimum: 1, maximum: 256, default: 8, description: 'a number of blob fetches from the main server at once (1 to 256)' },
  node_name: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$', description: "this node's name: 1 to 64 of A-Z a-z 0-9 . _ - (default: the machine's hostname)" },
  pulpcore_api_endpoint: { type: 'string', pattern: '^(unix:/.+|https?://.+)$', default: 'unix:/run/pulpcore-api.sock', description: "'unix:/path/to.sock' or an http(s) URL" },
};
