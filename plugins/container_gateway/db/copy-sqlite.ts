// Moving a gateway from SQLite to PostgreSQL: every row of an SQLite gateway
// database copied into an empty, migrated PostgreSQL one, in one transaction
// (a failed copy leaves the target empty, so it can simply run again), parents
// before children so that every foreign key holds as rows arrive. This is the
// one place that reads SQLite without the executor: the file is opened
// read-only and directly, whatever the daemon's own database is.
import Database from 'better-sqlite3';
import { advisoryLockKey } from './postgres-cluster.ts';
import { POSTGRES_MIGRATIONS, SQLITE_SCHEMA_VERSION } from './postgres-migrations.ts';
import type { PostgresSql } from './postgres-sql.ts';
import type { SqlValue } from './sql.ts';

/** Every table, parents first; `identity`: its id column numbers new rows (a sequence to move past the copied ids). */
export const COPY_ORDER: readonly { table: string; identity?: boolean }[] = [
  { table: 'users', identity: true },
  { table: 'repositories', identity: true },
  { table: 'authentication_tokens', identity: true },
  { table: 'repositories_users' },
  { table: 'hosts', identity: true },
  { table: 'hosts_repositories' },
  { table: 'blobs' },
  { table: 'repository_blobs' },
  { table: 'manifests' },
  { table: 'manifest_children' },
  { table: 'tags' },
  { table: 'uploads' },
  { table: 'sync_runs', identity: true },
  { table: 'user_namespaces' },
  { table: 'tag_order' },
  { table: 'login_failures' },
  { table: 'login_cache' },
  { table: 'tag_checks' },
  { table: 'on_demand_counters' },
];

/** Rows sent in one INSERT (PostgreSQL takes at most 65535 parameters per statement). */
const ROWS_PER_INSERT = 500;

export interface CopyReport {
  /** Rows copied per table, in copy order. */
  readonly tables: Record<string, number>;
  readonly rows: number;
}

/** Why a copy was refused before anything was written (at start: the database was already moved, or another node copied it). */
export class CopyRefused extends Error {
  /** 'not-empty': the target already holds data (at start: it was moved before, or another node moved it). */
  constructor(message: string, readonly reason: 'not-empty' | 'incompatible' = 'incompatible') {
    super(message);
    this.name = 'CopyRefused';
  }
}

const quote = (name: string) => `"${name.replace(/"/g, '""')}"`;

/**
 * Copies the SQLite gateway database at `sqlitePath` (at the latest SQLite
 * migration) into `pg`, which must be migrated and hold no rows. Refuses
 * (CopyRefused, nothing written) when either is not so.
 */
export async function copySqliteToPostgres(sqlitePath: string, pg: PostgresSql): Promise<CopyReport> {
  let source: Database.Database;
  try {
    source = new Database(sqlitePath, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new CopyRefused(`cannot open the SQLite database ${sqlitePath}: ${(err as Error).message}`);
  }
  try {
    const version = source.pragma('user_version', { simple: true }) as number;
    if (version !== SQLITE_SCHEMA_VERSION) {
      throw new CopyRefused(`${sqlitePath} is at SQLite schema version ${version}; this gateway copies version ${SQLITE_SCHEMA_VERSION} only (start the gateway on it once with SQLite to migrate it)`);
    }
    const known = new Set(COPY_ORDER.map((c) => c.table));
    const unknown = (source.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").pluck().all() as string[]).filter((n) => !known.has(n));
    if (unknown.length > 0) throw new CopyRefused(`${sqlitePath} has tables this gateway does not know: ${unknown.join(', ')}`);
    return await pg.transaction(async (tx) => {
      // Nodes starting at once on one database copy one after the other: the second finds data and is refused.
      await tx.value('SELECT pg_advisory_xact_lock(?::bigint)', [advisoryLockKey('container_gateway copy from SQLite')]);
      const pgVersion = await tx.value<number>('SELECT max(version) FROM schema_migrations');
      if (pgVersion !== POSTGRES_MIGRATIONS.length) throw new CopyRefused(`the PostgreSQL database is at schema version ${pgVersion ?? 0}, not ${POSTGRES_MIGRATIONS.length}`);
      for (const { table } of COPY_ORDER) {
        if ((await tx.value(`SELECT 1 FROM ${quote(table)} LIMIT 1`)) !== undefined) {
          throw new CopyRefused(`the PostgreSQL database is not empty (table ${table} has rows): copy only into a new database`, 'not-empty');
        }
      }
      const tables: Record<string, number> = {};
      let total = 0;
      for (const { table, identity } of COPY_ORDER) {
        const columns = (source.pragma(`table_info(${quote(table)})`) as { name: string }[]).map((c) => c.name);
        const target = await tx.column<string>('SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position', [table]);
        if (columns.length === 0 || [...columns].sort().join() !== [...target].sort().join()) {
          throw new CopyRefused(`table ${table}: SQLite has columns (${columns.join(', ')}), PostgreSQL (${target.join(', ')})`);
        }
        const columnList = columns.map(quote).join(', ');
        let count = 0;
        let batch: SqlValue[][] = [];
        const flush = async () => {
          if (batch.length === 0) return;
          const rowMarks = `(${columns.map(() => '?').join(', ')})`;
          await tx.run(`INSERT INTO ${quote(table)} (${columnList}) VALUES ${batch.map(() => rowMarks).join(', ')}`, batch.flat());
          count += batch.length;
          batch = [];
        };
        for (const row of source.prepare(`SELECT ${columnList} FROM ${quote(table)}`).raw().iterate() as Iterable<SqlValue[]>) {
          batch.push(row);
          if (batch.length >= ROWS_PER_INSERT) await flush();
        }
        await flush();
        if (identity) {
          // The next id after the largest copied one (1 for an empty table).
          await tx.value(`SELECT setval(pg_get_serial_sequence(?, 'id'), COALESCE((SELECT max(id) FROM ${quote(table)}), 0) + 1, false)`, [table]);
        }
        tables[table] = count;
        total += count;
      }
      return { tables, rows: total };
    });
  } finally {
    source.close();
  }
}
