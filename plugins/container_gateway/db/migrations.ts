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
];
