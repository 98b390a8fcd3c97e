// The gateway's cache of the main server's view: repositories, users, token
// checksums, hosts, and who may read what; and standalone mode's own accounts.
// Every replacement runs in one transaction so readers never see a gap.
import type { Reads } from './read-cache.ts';
import type { Sql, SqlQueries } from './sql.ts';
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
  /**
   * `reads` serves what access decides on every request (tokens, repositories
   * and who may read them, known hosts): a per-process cache on PostgreSQL
   * (db/read-cache.ts), `sql` itself otherwise. Writes always go to `sql`.
   */
  constructor(
    readonly sql: Sql,
    private readonly reads: Reads = sql,
  ) {}

  async repository(name: string): Promise<Repository | undefined> {
    const row = await this.reads.get<{ id: number; name: string; auth_required: number }>('SELECT id, name, auth_required FROM repositories WHERE name = ? AND listed = 1', [name]);
    return row && { id: row.id, name: row.name, authRequired: row.auth_required === 1 };
  }

  /** Who may read a repository (public, owner, mapped user, mapped host); an unlisted repository reads as unknown. */
  async canRead(viewer: Viewer, name: string): Promise<boolean> {
    const repo = await this.repository(name);
    if (!repo) return false;
    if (!repo.authRequired) return true;
    if (viewer.kind === 'user') {
      if ((await this.reads.get('SELECT 1 FROM repositories r JOIN users u ON u.id = r.owner_id WHERE r.id = ? AND u.name = ?', [repo.id, viewer.name])) !== undefined) return true;
      return (await this.reads.get('SELECT 1 FROM repositories_users ru JOIN users u ON u.id = ru.user_id WHERE ru.repository_id = ? AND u.name = ?', [repo.id, viewer.name])) !== undefined;
    }
    if (viewer.kind === 'host') {
      return (await this.reads.get('SELECT 1 FROM hosts_repositories hr JOIN hosts h ON h.id = hr.host_id WHERE hr.repository_id = ? AND h.uuid = ?', [repo.id, viewer.uuid])) !== undefined;
    }
    return false;
  }

  /** Names the viewer may see, sorted, after `last` (exclusive), at most `limit`; never a pending repository (no manifest yet). */
  visible(viewer: Viewer, opts: { last?: string; limit: number; contains?: string }): Promise<string[]> {
    const filters = ['r.pending = 0', 'r.name > ?'];
    const params: Array<string | number> = [opts.last ?? ''];
    if (opts.contains) {
      filters.push(this.sql.dialect.contains('r.name'));
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
    return this.sql.column<string>(sql, [...params, opts.limit]);
  }

  /**
   * Full replacement of the repository set (Katello's repository_list): upsert
   * by name (mappings of kept ones survive). A repository left out loses its
   * user and host mappings and becomes unlisted (private, unreadable, out of
   * the catalog); its stored content is kept for gc (`reclaimUnlisted`), and a
   * later list naming it again lists it again. Rows without any content are
   * simply deleted.
   */
  replaceRepositories(entries: RepositoryEntry[]): Promise<{ unlisted: number }> {
    const omitted = `SELECT id FROM repositories WHERE name NOT IN (${this.sql.dialect.jsonList()})`;
    return this.sql.transaction(async (tx) => {
      for (const e of entries) {
        await tx.run('INSERT INTO repositories (name, auth_required) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET auth_required = excluded.auth_required, listed = 1', [e.name, e.authRequired ? 1 : 0]);
      }
      const names = JSON.stringify(entries.map((e) => e.name));
      await tx.run(`DELETE FROM repositories_users WHERE repository_id IN (${omitted})`, [names]);
      await tx.run(`DELETE FROM hosts_repositories WHERE repository_id IN (${omitted})`, [names]);
      await tx.run(`DELETE FROM repositories WHERE id IN (${omitted}) AND ${WITHOUT_CONTENT}`, [names]);
      const unlisted = (await tx.run(`UPDATE repositories SET listed = 0, auth_required = 1 WHERE id IN (${omitted}) AND listed = 1`, [names])).changes;
      return { unlisted };
    });
  }

  /** gc: delete unlisted repositories with their tags, manifests and blob links (the blobs then become collectable). */
  reclaimUnlisted(): Promise<string[]> {
    return this.sql.transaction(async (tx) => {
      const names = await tx.column<string>('SELECT name FROM repositories WHERE listed = 0 ORDER BY name');
      await tx.run('DELETE FROM repositories WHERE listed = 0');
      return names;
    });
  }

  private async userId(tx: SqlQueries, name: string): Promise<number> {
    await tx.run('INSERT INTO users (name) VALUES (?) ON CONFLICT(name) DO NOTHING', [name]);
    return (await tx.value<number>('SELECT id FROM users WHERE name = ?', [name]))!;
  }

  private async hostId(tx: SqlQueries, uuid: string): Promise<number> {
    await tx.run('INSERT INTO hosts (uuid) VALUES (?) ON CONFLICT(uuid) DO NOTHING', [uuid]);
    return (await tx.value<number>('SELECT id FROM hosts WHERE uuid = ?', [uuid]))!;
  }

  private async linkUser(tx: SqlQueries, userId: number, names: string[]): Promise<void> {
    await tx.run('DELETE FROM repositories_users WHERE user_id = ?', [userId]);
    await tx.run(
      `INSERT INTO repositories_users (repository_id, user_id) SELECT id, ? FROM repositories WHERE auth_required = 1 AND listed = 1 AND name IN (${this.sql.dialect.jsonList()}) ON CONFLICT DO NOTHING`,
      [userId, JSON.stringify(names)],
    );
  }

  private async linkHost(tx: SqlQueries, hostId: number, names: string[]): Promise<void> {
    await tx.run('DELETE FROM hosts_repositories WHERE host_id = ?', [hostId]);
    await tx.run(
      `INSERT INTO hosts_repositories (host_id, repository_id) SELECT ?, id FROM repositories WHERE auth_required = 1 AND listed = 1 AND name IN (${this.sql.dialect.jsonList()}) ON CONFLICT DO NOTHING`,
      [hostId, JSON.stringify(names)],
    );
  }

  /** user_repository_mapping: full replacement; users are created as needed. Only auth_required entries matter. */
  replaceUserMappings(mapping: Map<string, RepositoryEntry[]>): Promise<void> {
    return this.sql.transaction(async (tx) => {
      await tx.run('DELETE FROM repositories_users');
      for (const [user, entries] of mapping) await this.linkUser(tx, await this.userId(tx, user), entries.filter((e) => e.authRequired).map((e) => e.name));
    });
  }

  /** The user's readable repositories, as Katello listed them at login. */
  setUserRepositories(user: string, names: string[]): Promise<void> {
    return this.sql.transaction(async (tx) => this.linkUser(tx, await this.userId(tx, user), names));
  }

  /** The pusher of a repository may read it here before Katello's next mapping update says so. */
  addUserRepository(user: string, name: string): Promise<void> {
    return this.sql.transaction(async (tx) => {
      // A push through to the main server re-creates an unlisted repository there: the pusher reads it here again.
      await tx.run('INSERT INTO repositories (name, auth_required) VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET listed = 1 WHERE repositories.listed = 0', [name]);
      await tx.run('INSERT INTO repositories_users (repository_id, user_id) SELECT id, ? FROM repositories WHERE name = ? ON CONFLICT DO NOTHING', [await this.userId(tx, user), name]);
    });
  }

  /** update_hosts: full replacement of the known hosts. */
  replaceHosts(uuids: string[]): Promise<void> {
    return this.sql.transaction(async (tx) => {
      for (const uuid of uuids) await tx.run('INSERT INTO hosts (uuid) VALUES (?) ON CONFLICT(uuid) DO NOTHING', [uuid]);
      await tx.run(`DELETE FROM hosts WHERE uuid NOT IN (${this.sql.dialect.jsonList()})`, [JSON.stringify(uuids)]);
    });
  }

  /** host_repository_mapping: full replacement; hosts not known are skipped. */
  replaceHostMappings(mapping: Map<string, RepositoryEntry[]>): Promise<void> {
    return this.sql.transaction(async (tx) => {
      await tx.run('DELETE FROM hosts_repositories');
      for (const [uuid, entries] of mapping) {
        const id = await tx.value<number>('SELECT id FROM hosts WHERE uuid = ?', [uuid]);
        if (id !== undefined) await this.linkHost(tx, id, entries.filter((e) => e.authRequired).map((e) => e.name));
      }
    });
  }

  /** update_host_repositories (and a host's catalog fetched from Katello): create the host, replace its list. */
  setHostRepositories(uuid: string, names: string[]): Promise<void> {
    return this.sql.transaction(async (tx) => this.linkHost(tx, await this.hostId(tx, uuid), names));
  }

  /** The known content hosts' UUIDs, sorted. */
  hosts(): Promise<string[]> {
    return this.sql.column<string>('SELECT uuid FROM hosts ORDER BY uuid');
  }

  async hostKnown(uuid: string): Promise<boolean> {
    return (await this.reads.get('SELECT 1 FROM hosts WHERE uuid = ?', [uuid])) !== undefined;
  }

  users(): Promise<string[]> {
    return this.sql.column<string>('SELECT name FROM users ORDER BY name');
  }

  // --- standalone mode ---------------------------------------------------

  async passwordHash(user: string): Promise<string | undefined> {
    return (await this.sql.value<string | null>('SELECT password_hash FROM users WHERE name = ?', [user])) ?? undefined;
  }

  /** A repository as standalone access sees it; `owner` is the owning user's current name (none once that user is removed). */
  async repositoryInfo(name: string): Promise<{ id: number; authRequired: boolean; owner?: string; pending: boolean } | undefined> {
    const row = await this.reads.get<{ id: number; auth_required: number; pending: number; owner: string | null }>(
      'SELECT r.id, r.auth_required, r.pending, u.name AS owner FROM repositories r LEFT JOIN users u ON u.id = r.owner_id WHERE r.name = ? AND r.listed = 1',
      [name],
    );
    return row && { id: row.id, authRequired: row.auth_required === 1, pending: row.pending === 1, ...(row.owner ? { owner: row.owner } : {}) };
  }

  /** The namespaces an administrator granted to a user, sorted. */
  namespacesOf(user: string): Promise<string[]> {
    return this.sql.column<string>('SELECT n.namespace FROM user_namespaces n JOIN users u ON u.id = n.user_id WHERE u.name = ? ORDER BY n.namespace', [user]);
  }

  /** Grant a standalone user a namespace: false when there is no such user. */
  grantNamespace(user: string, namespace: string): Promise<boolean> {
    return this.sql.transaction(async (tx) => {
      const id = await tx.value<number>('SELECT id FROM users WHERE name = ? AND password_hash IS NOT NULL', [user]);
      if (id === undefined) return false;
      await tx.run('INSERT INTO user_namespaces (user_id, namespace) VALUES (?, ?) ON CONFLICT DO NOTHING', [id, namespace]);
      return true;
    });
  }

  /** Take a namespace back: false when the user did not have it. Repositories already made there keep their owner. */
  async revokeNamespace(user: string, namespace: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM user_namespaces WHERE namespace = ? AND user_id = (SELECT id FROM users WHERE name = ?)', [namespace, user])).changes > 0;
  }

  async userMapped(user: string, repo: string): Promise<boolean> {
    return (await this.reads.get('SELECT 1 FROM repositories_users ru JOIN users u ON u.id = ru.user_id JOIN repositories r ON r.id = ru.repository_id WHERE u.name = ? AND r.name = ?', [user, repo])) !== undefined;
  }

  /** A user of standalone mode: 'created', or 'exists' (the password is not changed). */
  addUser(name: string, passwordHash: string): Promise<'created' | 'exists'> {
    return this.sql.transaction(async (tx) => {
      const existing = await tx.get<{ password_hash: string | null }>('SELECT password_hash FROM users WHERE name = ?', [name]);
      if (existing?.password_hash) return 'exists';
      await tx.run('INSERT INTO users (name, password_hash) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash', [name, passwordHash]);
      return 'created';
    });
  }

  /** Users with a password here (standalone accounts), sorted. */
  standaloneUsers(): Promise<string[]> {
    return this.sql.column<string>('SELECT name FROM users WHERE password_hash IS NOT NULL ORDER BY name');
  }

  /**
   * Removing a user revokes its tokens, mappings and namespaces (ON DELETE
   * CASCADE); its repositories stay, with their content and visibility, but
   * ownerless (ON DELETE SET NULL): a user added later under the same name is
   * a different user and gets none of them. Returns the repositories it owned
   * (pending ones included), or undefined when there is no such user.
   */
  removeUser(name: string): Promise<{ orphaned: string[] } | undefined> {
    return this.sql.transaction(async (tx) => {
      const orphaned = await tx.column<string>('SELECT r.name FROM repositories r JOIN users u ON u.id = r.owner_id WHERE u.name = ? ORDER BY r.name', [name]);
      if ((await tx.run('DELETE FROM users WHERE name = ?', [name])).changes === 0) return undefined;
      return { orphaned };
    });
  }

  /** Listed repositories (pending ones, with no manifest yet, are not), sorted. */
  async repositories(): Promise<Array<{ name: string; public: boolean; owner?: string }>> {
    const rows = await this.sql.all<{ name: string; auth_required: number; owner: string | null }>(
      'SELECT r.name, r.auth_required, u.name AS owner FROM repositories r LEFT JOIN users u ON u.id = r.owner_id WHERE r.pending = 0 ORDER BY r.name',
    );
    return rows.map((r) => ({ name: r.name, public: r.auth_required === 0, ...(r.owner ? { owner: r.owner } : {}) }));
  }

  async setPublic(name: string, isPublic: boolean): Promise<boolean> {
    return (await this.sql.run('UPDATE repositories SET auth_required = ? WHERE name = ? AND pending = 0', [isPublic ? 0 : 1, name])).changes > 0;
  }

  // --- proxyctl: passwords, repository grants, tokens, deletion ---------

  /** A standalone user's new password hash; false when there is no such user. Its tokens stay valid. */
  async setPassword(user: string, passwordHash: string): Promise<boolean> {
    return (await this.sql.run('UPDATE users SET password_hash = ? WHERE name = ? AND password_hash IS NOT NULL', [passwordHash, user])).changes > 0;
  }

  /**
   * Let a standalone user read a repository (a private one: public ones are
   * readable by all anyway). 'no user' / 'no repository' when either is unknown.
   */
  grantRepository(user: string, repo: string): Promise<'granted' | 'no user' | 'no repository'> {
    return this.sql.transaction(async (tx) => {
      const userId = await tx.value<number>('SELECT id FROM users WHERE name = ? AND password_hash IS NOT NULL', [user]);
      if (userId === undefined) return 'no user';
      const repoId = await tx.value<number>('SELECT id FROM repositories WHERE name = ? AND listed = 1 AND pending = 0', [repo]);
      if (repoId === undefined) return 'no repository';
      await tx.run('INSERT INTO repositories_users (repository_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING', [repoId, userId]);
      return 'granted';
    });
  }

  /** Take a grant back: false when the user had none on that repository. */
  async revokeRepository(user: string, repo: string): Promise<boolean> {
    return (
      (await this.sql.run('DELETE FROM repositories_users WHERE user_id = (SELECT id FROM users WHERE name = ?) AND repository_id = (SELECT id FROM repositories WHERE name = ?)', [user, repo]))
        .changes > 0
    );
  }

  /** The repositories granted to a user, sorted; undefined when there is no such user. */
  async grantedRepositories(user: string): Promise<string[] | undefined> {
    if ((await this.sql.get('SELECT 1 FROM users WHERE name = ?', [user])) === undefined) return undefined;
    return this.sql.column<string>('SELECT r.name FROM repositories_users ru JOIN users u ON u.id = ru.user_id JOIN repositories r ON r.id = ru.repository_id WHERE u.name = ? ORDER BY r.name', [user]);
  }

  /** Drop every stored token of a user (its next request is challenged); undefined when there is no such user, else how many. */
  revokeTokens(user: string): Promise<number | undefined> {
    return this.sql.transaction(async (tx) => {
      const id = await tx.value<number>('SELECT id FROM users WHERE name = ?', [user]);
      if (id === undefined) return undefined;
      return (await tx.run('DELETE FROM authentication_tokens WHERE user_id = ?', [id])).changes;
    });
  }

  /**
   * Delete a repository with its tags, manifests, blob links, uploads and
   * mappings (ON DELETE CASCADE); the blobs only it linked are left to gc.
   * False when there is no such repository.
   */
  async deleteRepository(name: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM repositories WHERE name = ?', [name])).changes > 0;
  }

  /** A repository's tags and the digest each points to, by name; undefined when there is no such repository. */
  async tagsOf(name: string): Promise<Array<{ tag: string; digest: string }> | undefined> {
    const id = await this.sql.value<number>('SELECT id FROM repositories WHERE name = ? AND listed = 1', [name]);
    if (id === undefined) return undefined;
    return this.sql.all<{ tag: string; digest: string }>('SELECT name AS tag, digest FROM tags WHERE repository_id = ? ORDER BY name', [id]);
  }

  /** The owner and grants of an unexpired token. */
  async tokenRecord(checksum: string): Promise<{ user: string; scopes?: unknown } | undefined> {
    // Expiry is checked here, not in SQL, so that the same query (and cached row) serves every request of the token's life.
    const row = await this.reads.get<{ user: string; scopes: string | null; expire_at: number }>(
      'SELECT u.name AS user, t.scopes, t.expire_at FROM authentication_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_checksum = ?',
      [checksum],
    );
    if (!row || Number(row.expire_at) <= Date.now()) return undefined;
    return { user: row.user, ...(row.scopes ? { scopes: JSON.parse(row.scopes) as unknown } : {}) };
  }

  /**
   * Store a token's checksum, with its scopes (JSON: what a standalone token
   * grants, or what a main-server token was asked for); drop expired tokens
   * and any older copy, in one transaction.
   */
  storeToken(checksum: string, expireAtMs: number, user: string, scopes?: unknown): Promise<void> {
    return this.sql.transaction(async (tx) => {
      await tx.run('DELETE FROM authentication_tokens WHERE token_checksum = ? OR expire_at <= ?', [checksum, Date.now()]);
      const userId = await this.userId(tx, user);
      await tx.run('INSERT INTO authentication_tokens (token_checksum, expire_at, user_id, scopes) VALUES (?, ?, ?, ?)', [checksum, expireAtMs, userId, scopes === undefined ? null : JSON.stringify(scopes)]);
    });
  }
}
