// Schema migrations, applied in order at start-up; PRAGMA user_version records
// how many ran. Unlike the original: unique names, an indexed token checksum.
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE repositories (
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     auth_required INTEGER NOT NULL CHECK (auth_required IN (0, 1))
   );
   CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
   CREATE TABLE authentication_tokens (
     id INTEGER PRIMARY KEY,
     token_checksum TEXT NOT NULL UNIQUE,
     expire_at INTEGER NOT NULL,
     user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE
   );
   CREATE INDEX authentication_tokens_expire_at ON authentication_tokens(expire_at);
   CREATE TABLE repositories_users (
     repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
     user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
     PRIMARY KEY (repository_id, user_id)
   ) WITHOUT ROWID;
   CREATE INDEX repositories_users_user ON repositories_users(user_id);
   CREATE TABLE hosts (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE);
   CREATE TABLE hosts_repositories (
     host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
     repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
     PRIMARY KEY (host_id, repository_id)
   ) WITHOUT ROWID;`,
  // The embedded content store and standalone mode.
  `ALTER TABLE repositories ADD COLUMN owner TEXT;
   ALTER TABLE users ADD COLUMN password_hash TEXT;
   ALTER TABLE authentication_tokens ADD COLUMN scopes TEXT;
   CREATE TABLE blobs (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE repository_blobs (
     repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
     digest TEXT NOT NULL REFERENCES blobs(digest),
     PRIMARY KEY (repository_id, digest)
   ) WITHOUT ROWID;
   CREATE INDEX repository_blobs_digest ON repository_blobs(digest);
   CREATE TABLE manifests (
     repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
     digest TEXT NOT NULL,
     media_type TEXT NOT NULL,
     artifact_type TEXT,
     subject TEXT,
     annotations TEXT,
     content BLOB NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (repository_id, digest)
   ) WITHOUT ROWID;
   CREATE INDEX manifests_subject ON manifests(repository_id, subject) WHERE subject IS NOT NULL;
   CREATE TABLE manifest_children (
     repository_id INTEGER NOT NULL,
     manifest_digest TEXT NOT NULL,
     digest TEXT NOT NULL,
     PRIMARY KEY (repository_id, manifest_digest, digest),
     FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
   ) WITHOUT ROWID;
   CREATE TABLE tags (
     repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
     name TEXT NOT NULL,
     digest TEXT NOT NULL,
     PRIMARY KEY (repository_id, name)
   ) WITHOUT ROWID;
   CREATE TABLE uploads (
     uuid TEXT PRIMARY KEY,
     repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
     created_at INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  // Sync runs (sync/runs.ts), shared by every worker; at most one running.
  `CREATE TABLE sync_runs (
     id INTEGER PRIMARY KEY,
     state TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'interrupted')),
     repositories TEXT,
     started_at INTEGER NOT NULL,
     finished_at INTEGER,
     updated_at INTEGER NOT NULL,
     progress TEXT NOT NULL,
     error TEXT,
     pid INTEGER NOT NULL
   );
   CREATE UNIQUE INDEX sync_runs_one_running ON sync_runs(state) WHERE state = 'running';`,
  // Owners are users, not names: a user removed and added again under the same
  // name does not get the old repositories back (they become ownerless). A
  // repository made by an upload alone stays pending (unlisted) until its first
  // manifest. Namespaces an administrator granted to users.
  `ALTER TABLE repositories ADD COLUMN owner_id INTEGER REFERENCES users(id) ON DELETE SET NULL;
   UPDATE repositories SET owner_id = (SELECT u.id FROM users u WHERE u.name = repositories.owner AND u.password_hash IS NOT NULL) WHERE owner IS NOT NULL;
   ALTER TABLE repositories DROP COLUMN owner;
   CREATE INDEX repositories_owner ON repositories(owner_id) WHERE owner_id IS NOT NULL;
   ALTER TABLE repositories ADD COLUMN pending INTEGER NOT NULL DEFAULT 0 CHECK (pending IN (0, 1));
   CREATE TABLE user_namespaces (
     user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
     namespace TEXT NOT NULL,
     PRIMARY KEY (user_id, namespace)
   ) WITHOUT ROWID;`,
  // Tags pushed through the proxy follow the main server's order (store/tag-order.ts).
  `CREATE TABLE tag_order (
     repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
     name TEXT NOT NULL,
     issued INTEGER NOT NULL,
     applied INTEGER NOT NULL DEFAULT 0,
     desired TEXT,
     PRIMARY KEY (repository_id, name)
   ) WITHOUT ROWID;`,
  // Failed logins per account and per client address (auth/login-guard.ts),
  // shared by every worker; and the recent-login cache used while the main
  // server is unreachable: a salted scrypt hash of the credentials, never the password.
  `CREATE TABLE login_failures (
     key TEXT PRIMARY KEY,
     failures INTEGER NOT NULL,
     window_start INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX login_failures_window_start ON login_failures(window_start);
   CREATE TABLE login_cache (
     user TEXT PRIMARY KEY,
     credentials_hash TEXT NOT NULL,
     verified_at INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  // Katello's repository_list unlists a repository instead of deleting it:
  // its stored content stays (gc reclaims it), nobody may read it meanwhile.
  `ALTER TABLE repositories ADD COLUMN listed INTEGER NOT NULL DEFAULT 1 CHECK (listed IN (0, 1));`,
  // On-demand serving (backends/on-demand*.ts): when each tag was last checked
  // against the main server, shared by every worker; and each worker's
  // counters, summed by `proxyctl status` over the workers of this daemon run.
  `CREATE TABLE tag_checks (
     repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
     name TEXT NOT NULL,
     checked_at INTEGER NOT NULL,
     PRIMARY KEY (repository_id, name)
   ) WITHOUT ROWID;
   CREATE TABLE on_demand_counters (
     daemon INTEGER NOT NULL,
     worker INTEGER NOT NULL,
     hits INTEGER NOT NULL DEFAULT 0,
     misses INTEGER NOT NULL DEFAULT 0,
     bytes_fetched INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (daemon, worker)
   ) WITHOUT ROWID;`,
  // Several nodes may share the database: a process is named by its node and
  // its pid (pids repeat across machines, and in containers). Counters start
  // from nothing at every daemon start anyway: the old table is simply replaced.
  `ALTER TABLE sync_runs ADD COLUMN node TEXT NOT NULL DEFAULT '';
   DROP TABLE on_demand_counters;
   CREATE TABLE on_demand_counters (
     node TEXT NOT NULL,
     daemon INTEGER NOT NULL,
     worker INTEGER NOT NULL,
     hits INTEGER NOT NULL DEFAULT 0,
     misses INTEGER NOT NULL DEFAULT 0,
     bytes_fetched INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (node, daemon, worker)
   ) WITHOUT ROWID;`,
];
