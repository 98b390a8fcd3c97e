// The gateway's one database, chosen once from settings when the plugin is
// set up: the `Sql` every part queries through, and the `Cluster` that
// coordinates the processes sharing it. Migrations have run when it is
// returned, so nothing is served before the schema is current.
//
// Moving to PostgreSQL: when db_connection_string names an empty PostgreSQL
// database and a SQLite database exists at sqlite_db_path, its data is copied
// over once, in one transaction, before anything is served (nodes starting at
// once copy once: the copy holds a lock and refuses a database with data).
import { existsSync } from 'node:fs';
import { LocalCluster, type Cluster } from './cluster.ts';
import { describeDbConnection, openPostgres, parseDbConnection, type DbConnection } from './connection.ts';
import { COPY_ORDER, copySqliteToPostgres, CopyRefused } from './copy-sqlite.ts';
import type { PostgresSql } from './postgres-sql.ts';
import { CachedReads, type Reads, type ReadCacheStats } from './read-cache.ts';
import type { Sql } from './sql.ts';
import { SqliteSql } from './sqlite-sql.ts';

export interface DatabaseSettings {
  readonly sqlite_db_path: string;
  /** Milliseconds a query waits for another process's write lock. */
  readonly sqlite_timeout: number;
  readonly db_connection_string?: string;
  readonly db_max_connections: number;
  /** Seconds a query waits for a free PostgreSQL connection. */
  readonly db_pool_timeout: number;
}

export interface PoolStats {
  total: number;
  idle: number;
  waiting: number;
  max: number;
}

export interface OpenDatabase {
  readonly sql: Sql;
  /** What registry requests read on every call (tokens, repositories, tags): cached per process on PostgreSQL, `sql` itself on SQLite. */
  readonly reads: Reads;
  readonly cluster: Cluster;
  /** Kind and place, never a password (logs, `proxyctl status`). */
  readonly description: string;
  readonly kind: DbConnection['kind'];
  /** The connection pool of this process (PostgreSQL only). */
  poolStats(): PoolStats | undefined;
  /** The read cache of this process (PostgreSQL only): answers it gave, reads it passed on, what it holds. */
  readCacheStats(): ReadCacheStats | undefined;
  /** Is the database answering? One trivial query, given up after `timeoutMs`. */
  ping(timeoutMs: number): Promise<Reachability>;
  close(): Promise<void>;
}

/** How long `proxyctl status` and /readyz wait for the database: long enough for a loaded server, short enough for a probe. */
export const PING_TIMEOUT_MS = 2000;

export type Reachability = { reachable: true; latency_ms: number } | { reachable: false; error: string };

/** `SELECT 1` on `sql`, answered within `timeoutMs` or reported unreachable (the query itself is left to end on its own). */
async function ping(sql: Sql, timeoutMs: number): Promise<Reachability> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([sql.value('SELECT 1'), late]);
    return { reachable: true, latency_ms: Date.now() - started };
  } catch (err) {
    return { reachable: false, error: (err as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

export async function openDatabase(settings: DatabaseSettings, log: { info(msg: string): void; warn(msg: string): void }): Promise<OpenDatabase> {
  const conn = parseDbConnection(settings.db_connection_string, settings.sqlite_db_path);
  const description = describeDbConnection(conn);
  if (conn.kind === 'sqlite') {
    const sql = new SqliteSql(conn.path, settings.sqlite_timeout);
    const cluster = new LocalCluster();
    return { sql, reads: sql, cluster, description, kind: 'sqlite', poolStats: () => undefined, readCacheStats: () => undefined, ping: (ms) => ping(sql, ms), close: async () => { await cluster.close(); await sql.close(); } };
  }
  const pg = await openPostgres(conn, {
    maxConnections: settings.db_max_connections,
    poolTimeoutMs: settings.db_pool_timeout * 1000,
    onError: (err) => log.warn(`database connection lost (${description}): ${err.message}`),
  });
  let reads: CachedReads;
  try {
    await moveFromSqlite(pg, settings, description, log);
    reads = await CachedReads.open(pg, pg.cluster);
  } catch (err) {
    await pg.close().catch(() => undefined);
    throw err;
  }
  const close = async () => {
    await reads.close();
    await pg.close();
  };
  return { sql: pg, reads, cluster: pg.cluster, description, kind: 'postgres', poolStats: () => pg.poolStats(), readCacheStats: () => reads.stats(), ping: (ms) => ping(pg, ms), close };
}

async function moveFromSqlite(pg: PostgresSql, settings: DatabaseSettings, description: string, log: { info(msg: string): void }): Promise<void> {
  const path = settings.sqlite_db_path;
  if (!existsSync(path)) return;
  // Already moved (the usual start): the SQLite file is not even opened.
  const holdsData = await pg.value(COPY_ORDER.map((c) => `SELECT 1 FROM "${c.table}"`).join(' UNION ALL ') + ' LIMIT 1');
  if (holdsData !== undefined) return;
  // An older SQLite schema is brought to the latest first: the copy reads that one only.
  await new SqliteSql(path, settings.sqlite_timeout).close();
  try {
    const report = await copySqliteToPostgres(path, pg);
    log.info(`copied the SQLite database ${path} into ${description}: ${report.rows} rows (${Object.entries(report.tables).filter(([, n]) => n > 0).map(([t, n]) => `${t} ${n}`).join(', ') || 'no rows'})`);
  } catch (err) {
    if (err instanceof CopyRefused && err.reason === 'not-empty') return;
    throw new Error(`moving ${path} into ${description}: ${(err as Error).message}`, { cause: err });
  }
}
