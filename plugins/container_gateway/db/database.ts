// The gateway's SQLite cache: repositories, users, token checksums, hosts, and
// who may read what. WAL, a busy timeout, foreign keys, migrations at open;
// every replacement runs in one transaction so readers never see a gap.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS } from './migrations.ts';
import { Statements } from './statements.ts';

export interface RepositoryEntry {
  name: string;
  authRequired: boolean;
}

export interface Repository {
  id: number;
  name: string;
  authRequired: boolean;
}

/** Who is asking, as far as the catalog is concerned. */
export type Viewer = { kind: 'host'; uuid: string } | { kind: 'user'; name: string } | { kind: 'anonymous' };

/** A repository row that holds nothing of the embedded store (SQL condition on `repositories`). */
const WITHOUT_CONTENT = ['tags', 'manifests', 'repository_blobs', 'uploads'].map((t) => `NOT EXISTS (SELECT 1 FROM ${t} c WHERE c.repository_id = repositories.id)`).join(' AND ');

export class GatewayDb {
  readonly db: Database.Database;
  private readonly statements: Statements;

  constructor(path: string, busyTimeoutMs: number) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path, { timeout: busyTimeoutMs });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('synchronous = NORMAL');
    this.statements = new Statements(this.db);
    this.migrate();
  }

  private migrate(): void {
    const version = () => this.db.pragma('user_version', { simple: true }) as number;
    if (version() > MIGRATIONS.length) throw new Error(`database schema version ${version()} is newer than this gateway (${MIGRATIONS.length})`);
    for (let v = 0; v < MIGRATIONS.length; v++) {
      // Several workers may open a new database at once: each migration is
      // applied under the write lock, and only if no one applied it first.
      this.db.transaction(() => {
        if (version() > v) return;
        this.db.exec(MIGRATIONS[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      }).immediate();
    }
  }

  close(): void {
    this.db.close();
  }

  private sql(text: string): Database.Statement {
    return this.statements.get(text);
  }

  repository(name: string): Repository | undefined {
    const row = this.sql('SELECT id, name, auth_required FROM repositories WHERE name = ? AND listed = 1').get(name) as { id: number; name: string; auth_required: number } | undefined;
    return row && { id: row.id, name: row.name, authRequired: row.auth_required === 1 };
  }

  /** Who may read a repository (public, owner, mapped user, mapped host); an unlisted repository reads as unknown. */
  canRead(viewer: Viewer, name: string): boolean {
    const repo = this.repository(name);
    if (!repo) return false;
    if (!repo.authRequired) return true;
    if (viewer.kind === 'user') {
      if (this.sql('SELECT 1 FROM repositories r JOIN users u ON u.id = r.owner_id WHERE r.id = ? AND u.name = ?').get(repo.id, viewer.name) !== undefined) return true;
      return this.sql('SELECT 1 FROM repositories_users ru JOIN users u ON u.id = ru.user_id WHERE ru.repository_id = ? AND u.name = ?').get(repo.id, viewer.name) !== undefined;
    }
    if (viewer.kind === 'host') {
      return this.sql('SELECT 1 FROM hosts_repositories hr JOIN hosts h ON h.id = hr.host_id WHERE hr.repository_id = ? AND h.uuid = ?').get(repo.id, viewer.uuid) !== undefined;
    }
    return false;
  }

  /** Names the viewer may see, sorted, after `last` (exclusive), at most `limit`; never a pending repository (no manifest yet). */
  visible(viewer: Viewer, opts: { last?: string; limit: number; contains?: string }): string[] {
    const filters = ['r.pending = 0', 'r.name > ?'];
    const params: unknown[] = [opts.last ?? ''];
    if (opts.contains) {
      filters.push("instr(r.name, ?) > 0");
      params.push(opts.contains);
    }
    let access = 'r.auth_required = 0';
    if (viewer.kind === 'user') {
      access += ' OR EXISTS (SELECT 1 FROM users o WHERE o.id = r.owner_id AND o.name = ?) OR EXISTS (SELECT 1 FROM repositories_users ru JOIN users u ON u.id = ru.user_id WHERE ru.repository_id = r.id AND u.name = ?)';
      params.unshift(viewer.name, viewer.name);
    } else if (viewer.kind === 'host') {
      access += ' OR EXISTS (SELECT 1 FROM hosts_repositories hr JOIN hosts h ON h.id = hr.host_id WHERE hr.repository_id = r.id AND h.uuid = ?)';
      params.unshift(viewer.uuid);
    }
    const sql = `SELECT r.name FROM repositories r WHERE (${access}) AND r.listed = 1 AND ${filters.join(' AND ')} ORDER BY r.name LIMIT ?`;
    return (this.sql(sql).pluck().all(...params, opts.limit) as string[]);
  }

  /**
   * Full replacement of the repository set (Katello's repository_list): upsert
   * by name (mappings of kept ones survive). A repository left out loses its
   * user and host mappings and becomes unlisted (private, unreadable, out of
   * the catalog); its stored content is kept for gc (`reclaimUnlisted`), and a
   * later list naming it again lists it again. Rows without any content are
   * simply deleted.
   */
  replaceRepositories(entries: RepositoryEntry[]): { unlisted: number } {
    const upsert = this.sql('INSERT INTO repositories (name, auth_required) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET auth_required = excluded.auth_required, listed = 1');
    const omitted = 'SELECT id FROM repositories WHERE name NOT IN (SELECT value FROM json_each(?))';
    return this.db.transaction(() => {
      for (const e of entries) upsert.run(e.name, e.authRequired ? 1 : 0);
      const names = JSON.stringify(entries.map((e) => e.name));
      this.sql(`DELETE FROM repositories_users WHERE repository_id IN (${omitted})`).run(names);
      this.sql(`DELETE FROM hosts_repositories WHERE repository_id IN (${omitted})`).run(names);
      this.sql(`DELETE FROM repositories WHERE id IN (${omitted}) AND ${WITHOUT_CONTENT}`).run(names);
      const unlisted = this.sql(`UPDATE repositories SET listed = 0, auth_required = 1 WHERE id IN (${omitted}) AND listed = 1`).run(names).changes;
      return { unlisted };
    }).immediate();
  }

  /** gc: delete unlisted repositories with their tags, manifests and blob links (the blobs then become collectable). */
  reclaimUnlisted(): string[] {
    return this.db.transaction(() => {
      const names = this.sql('SELECT name FROM repositories WHERE listed = 0 ORDER BY name').pluck().all() as string[];
      this.sql('DELETE FROM repositories WHERE listed = 0').run();
      return names;
    }).immediate();
  }

  private userId(name: string): number {
    this.sql('INSERT INTO users (name) VALUES (?) ON CONFLICT(name) DO NOTHING').run(name);
    return (this.sql('SELECT id FROM users WHERE name = ?').pluck().get(name) as number);
  }

  private hostId(uuid: string): number {
    this.sql('INSERT INTO hosts (uuid) VALUES (?) ON CONFLICT(uuid) DO NOTHING').run(uuid);
    return (this.sql('SELECT id FROM hosts WHERE uuid = ?').pluck().get(uuid) as number);
  }

  private linkUser(userId: number, names: string[]): void {
    this.sql('DELETE FROM repositories_users WHERE user_id = ?').run(userId);
    this.sql('INSERT OR IGNORE INTO repositories_users (repository_id, user_id) SELECT id, ? FROM repositories WHERE auth_required = 1 AND listed = 1 AND name IN (SELECT value FROM json_each(?))')
      .run(userId, JSON.stringify(names));
  }

  private linkHost(hostId: number, names: string[]): void {
    this.sql('DELETE FROM hosts_repositories WHERE host_id = ?').run(hostId);
    this.sql('INSERT OR IGNORE INTO hosts_repositories (host_id, repository_id) SELECT ?, id FROM repositories WHERE auth_required = 1 AND listed = 1 AND name IN (SELECT value FROM json_each(?))')
      .run(hostId, JSON.stringify(names));
  }

  /** user_repository_mapping: full replacement; users are created as needed. Only auth_required entries matter. */
  replaceUserMappings(mapping: Map<string, RepositoryEntry[]>): void {
    this.db.transaction(() => {
      this.sql('DELETE FROM repositories_users').run();
      for (const [user, entries] of mapping) this.linkUser(this.userId(user), entries.filter((e) => e.authRequired).map((e) => e.name));
    }).immediate();
  }

  /** The user's readable repositories, as Katello listed them at login. */
  setUserRepositories(user: string, names: string[]): void {
    this.db.transaction(() => this.linkUser(this.userId(user), names)).immediate();
  }

  /** The pusher of a repository may read it here before Katello's next mapping update says so. */
  addUserRepository(user: string, name: string): void {
    this.db.transaction(() => {
      // A push through to the main server re-creates an unlisted repository there: the pusher reads it here again.
      this.sql('INSERT INTO repositories (name, auth_required) VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET listed = 1 WHERE listed = 0').run(name);
      this.sql('INSERT OR IGNORE INTO repositories_users (repository_id, user_id) SELECT id, ? FROM repositories WHERE name = ?').run(this.userId(user), name);
    }).immediate();
  }

  /** update_hosts: full replacement of the known hosts. */
  replaceHosts(uuids: string[]): void {
    const insert = this.sql('INSERT INTO hosts (uuid) VALUES (?) ON CONFLICT(uuid) DO NOTHING');
    this.db.transaction(() => {
      for (const uuid of uuids) insert.run(uuid);
      this.sql('DELETE FROM hosts WHERE uuid NOT IN (SELECT value FROM json_each(?))').run(JSON.stringify(uuids));
    }).immediate();
  }

  /** host_repository_mapping: full replacement; hosts not known are skipped. */
  replaceHostMappings(mapping: Map<string, RepositoryEntry[]>): void {
    this.db.transaction(() => {
      this.sql('DELETE FROM hosts_repositories').run();
      for (const [uuid, entries] of mapping) {
        const id = this.sql('SELECT id FROM hosts WHERE uuid = ?').pluck().get(uuid) as number | undefined;
        if (id !== undefined) this.linkHost(id, entries.filter((e) => e.authRequired).map((e) => e.name));
      }
    }).immediate();
  }

  /** update_host_repositories (and a host's catalog fetched from Katello): create the host, replace its list. */
  setHostRepositories(uuid: string, names: string[]): void {
    this.db.transaction(() => this.linkHost(this.hostId(uuid), names)).immediate();
  }

  hostKnown(uuid: string): boolean {
    return this.sql('SELECT 1 FROM hosts WHERE uuid = ?').get(uuid) !== undefined;
  }

  users(): string[] {
    return this.sql('SELECT name FROM users ORDER BY name').pluck().all() as string[];
  }

  // --- standalone mode ---------------------------------------------------

  passwordHash(user: string): string | undefined {
    return (this.sql('SELECT password_hash FROM users WHERE name = ?').pluck().get(user) as string | null | undefined) ?? undefined;
  }

  /** A repository as standalone access sees it; `owner` is the owning user's current name (none once that user is removed). */
  repositoryInfo(name: string): { authRequired: boolean; owner?: string; pending: boolean } | undefined {
    const row = this.sql('SELECT r.auth_required, r.pending, u.name AS owner FROM repositories r LEFT JOIN users u ON u.id = r.owner_id WHERE r.name = ? AND r.listed = 1').get(name) as
      | { auth_required: number; pending: number; owner: string | null }
      | undefined;
    return row && { authRequired: row.auth_required === 1, pending: row.pending === 1, ...(row.owner ? { owner: row.owner } : {}) };
  }

  /** The namespaces an administrator granted to a user, sorted. */
  namespacesOf(user: string): string[] {
    return this.sql('SELECT n.namespace FROM user_namespaces n JOIN users u ON u.id = n.user_id WHERE u.name = ? ORDER BY n.namespace').pluck().all(user) as string[];
  }

  /** Grant a standalone user a namespace: false when there is no such user. */
  grantNamespace(user: string, namespace: string): boolean {
    const id = this.sql('SELECT id FROM users WHERE name = ? AND password_hash IS NOT NULL').pluck().get(user) as number | undefined;
    if (id === undefined) return false;
    this.sql('INSERT OR IGNORE INTO user_namespaces (user_id, namespace) VALUES (?, ?)').run(id, namespace);
    return true;
  }

  /** Take a namespace back: false when the user did not have it. Repositories already made there keep their owner. */
  revokeNamespace(user: string, namespace: string): boolean {
    return this.sql('DELETE FROM user_namespaces WHERE namespace = ? AND user_id = (SELECT id FROM users WHERE name = ?)').run(namespace, user).changes > 0;
  }

  userMapped(user: string, repo: string): boolean {
    return this.sql('SELECT 1 FROM repositories_users ru JOIN users u ON u.id = ru.user_id JOIN repositories r ON r.id = ru.repository_id WHERE u.name = ? AND r.name = ?').get(user, repo) !== undefined;
  }

  /** A user of standalone mode: 'created', or 'exists' (the password is not changed). */
  addUser(name: string, passwordHash: string): 'created' | 'exists' {
    const existing = this.sql('SELECT password_hash FROM users WHERE name = ?').get(name) as { password_hash: string | null } | undefined;
    if (existing?.password_hash) return 'exists';
    this.sql('INSERT INTO users (name, password_hash) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash').run(name, passwordHash);
    return 'created';
  }

  /** Users with a password here (standalone accounts), sorted. */
  standaloneUsers(): string[] {
    return this.sql('SELECT name FROM users WHERE password_hash IS NOT NULL ORDER BY name').pluck().all() as string[];
  }

  /**
   * Removing a user revokes its tokens, mappings and namespaces (ON DELETE
   * CASCADE); its repositories stay, with their content and visibility, but
   * ownerless (ON DELETE SET NULL): a user added later under the same name is
   * a different user and gets none of them. Returns the repositories it owned
   * (pending ones included), or undefined when there is no such user.
   */
  removeUser(name: string): { orphaned: string[] } | undefined {
    return this.db.transaction(() => {
      const orphaned = this.sql('SELECT r.name FROM repositories r JOIN users u ON u.id = r.owner_id WHERE u.name = ? ORDER BY r.name').pluck().all(name) as string[];
      if (this.sql('DELETE FROM users WHERE name = ?').run(name).changes === 0) return undefined;
      return { orphaned };
    }).immediate();
  }

  /** Listed repositories (pending ones, with no manifest yet, are not), sorted. */
  repositories(): Array<{ name: string; public: boolean; owner?: string }> {
    const rows = this.sql('SELECT r.name, r.auth_required, u.name AS owner FROM repositories r LEFT JOIN users u ON u.id = r.owner_id WHERE r.pending = 0 ORDER BY r.name').all() as Array<{ name: string; auth_required: number; owner: string | null }>;
    return rows.map((r) => ({ name: r.name, public: r.auth_required === 0, ...(r.owner ? { owner: r.owner } : {}) }));
  }

  setPublic(name: string, isPublic: boolean): boolean {
    return this.sql('UPDATE repositories SET auth_required = ? WHERE name = ? AND pending = 0').run(isPublic ? 0 : 1, name).changes > 0;
  }

  // --- proxyctl: passwords, repository grants, tokens, deletion ---------

  /** A standalone user's new password hash; false when there is no such user. Its tokens stay valid. */
  setPassword(user: string, passwordHash: string): boolean {
    return this.sql('UPDATE users SET password_hash = ? WHERE name = ? AND password_hash IS NOT NULL').run(passwordHash, user).changes > 0;
  }

  /**
   * Let a standalone user read a repository (a private one: public ones are
   * readable by all anyway). 'no user' / 'no repository' when either is unknown.
   */
  grantRepository(user: string, repo: string): 'granted' | 'no user' | 'no repository' {
    const userId = this.sql('SELECT id FROM users WHERE name = ? AND password_hash IS NOT NULL').pluck().get(user) as number | undefined;
    if (userId === undefined) return 'no user';
    const repoId = this.sql('SELECT id FROM repositories WHERE name = ? AND listed = 1 AND pending = 0').pluck().get(repo) as number | undefined;
    if (repoId === undefined) return 'no repository';
    this.sql('INSERT OR IGNORE INTO repositories_users (repository_id, user_id) VALUES (?, ?)').run(repoId, userId);
    return 'granted';
  }

  /** Take a grant back: false when the user had none on that repository. */
  revokeRepository(user: string, repo: string): boolean {
    return this.sql('DELETE FROM repositories_users WHERE user_id = (SELECT id FROM users WHERE name = ?) AND repository_id = (SELECT id FROM repositories WHERE name = ?)').run(user, repo).changes > 0;
  }

  /** The repositories granted to a user, sorted; undefined when there is no such user. */
  grantedRepositories(user: string): string[] | undefined {
    if (this.sql('SELECT 1 FROM users WHERE name = ?').get(user) === undefined) return undefined;
    return this.sql('SELECT r.name FROM repositories_users ru JOIN users u ON u.id = ru.user_id JOIN repositories r ON r.id = ru.repository_id WHERE u.name = ? ORDER BY r.name').pluck().all(user) as string[];
  }

  /** Drop every stored token of a user (its next request is challenged); undefined when there is no such user, else how many. */
  revokeTokens(user: string): number | undefined {
    const id = this.sql('SELECT id FROM users WHERE name = ?').pluck().get(user) as number | undefined;
    if (id === undefined) return undefined;
    return this.sql('DELETE FROM authentication_tokens WHERE user_id = ?').run(id).changes;
  }

  /**
   * Delete a repository with its tags, manifests, blob links, uploads and
   * mappings (ON DELETE CASCADE); the blobs only it linked are left to gc.
   * False when there is no such repository.
   */
  deleteRepository(name: string): boolean {
    return this.sql('DELETE FROM repositories WHERE name = ?').run(name).changes > 0;
  }

  /** A repository's tags and the digest each points to, by name; undefined when there is no such repository. */
  tagsOf(name: string): Array<{ tag: string; digest: string }> | undefined {
    const id = this.sql('SELECT id FROM repositories WHERE name = ? AND listed = 1').pluck().get(name) as number | undefined;
    if (id === undefined) return undefined;
    return this.sql('SELECT name AS tag, digest FROM tags WHERE repository_id = ? ORDER BY name').all(id) as Array<{ tag: string; digest: string }>;
  }

  /** The owner and grants of an unexpired token. */
  tokenRecord(checksum: string): { user: string; scopes?: unknown } | undefined {
    const row = this.sql('SELECT u.name AS user, t.scopes FROM authentication_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_checksum = ? AND t.expire_at > ?').get(checksum, Date.now()) as { user: string; scopes: string | null } | undefined;
    return row && { user: row.user, ...(row.scopes ? { scopes: JSON.parse(row.scopes) as unknown } : {}) };
  }

  /**
   * Store a token's checksum, with its scopes (JSON: what a standalone token
   * grants, or what a main-server token was asked for); drop expired tokens
   * and any older copy, in one transaction.
   */
  storeToken(checksum: string, expireAtMs: number, user: string, scopes?: unknown): void {
    this.db.transaction(() => {
      this.sql('DELETE FROM authentication_tokens WHERE token_checksum = ? OR expire_at <= ?').run(checksum, Date.now());
      this.sql('INSERT INTO authentication_tokens (token_checksum, expire_at, user_id, scopes) VALUES (?, ?, ?, ?)').run(checksum, expireAtMs, this.userId(user), scopes === undefined ? null : JSON.stringify(scopes));
    }).immediate();
  }
}
