// Which database the gateways of a test file run on. By default each gateway
// has its SQLite file at its sqlite_db_path. With PROXYD_TEST_POSTGRES set to
// the URL of a PostgreSQL server (a database on it we may create databases
// from), every gateway the helpers start gets its own PostgreSQL database
// instead, named after its sqlite_db_path: a daemon restarted on the same
// path finds its data again, and two gateways never share one. The wrappers
// under test/postgres/ start the file's private cluster and set it
// (usePostgres in postgres.ts).
//
// Tests and helpers that look at what a gateway stored read it through
// `gatewayRows`, the same on both: rows as plain objects, integers as
// numbers, bytes as Buffers.
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';

export const POSTGRES_ENV = 'PROXYD_TEST_POSTGRES';

/**
 * How test databases are created: with a natural-language default collation,
 * as a distribution's server usually has (the cluster itself is initialised
 * with the C locale), so that anything sorted or compared without byte order
 * lists differently here than on SQLite, and a test sees it.
 */
export const NATURAL_COLLATION = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'";

/** The PostgreSQL server the gateways of this process use, or undefined (SQLite). */
export function testPostgres(): string | undefined {
  const url = process.env[POSTGRES_ENV];
  return url === undefined || url === '' ? undefined : url;
}

/** The PostgreSQL database name of the gateway whose sqlite_db_path is `sqlitePath`. */
function databaseName(sqlitePath: string): string {
  return `gw_${createHash('sha256').update(resolve(sqlitePath)).digest('hex').slice(0, 24)}`;
}

const typesAsNumbers = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    // int8 and numeric as numbers, as the gateway's own pool reads them.
    if ((oid === 20 || oid === 1700) && format !== 'binary') return (text: string) => Number(text);
    return pg.types.getTypeParser(oid, format as 'text');
  },
} as pg.CustomTypesConfig;

function clientFor(url: string, database: string): pg.Client {
  const u = new URL(url);
  return new pg.Client({ host: u.hostname, port: Number(u.port || 5432), user: decodeURIComponent(u.username) || undefined, password: decodeURIComponent(u.password) || undefined, database, types: typesAsNumbers });
}

/**
 * The database settings of a gateway with `sqlitePath`: none on SQLite; on
 * PostgreSQL the connection string of its database, created when new.
 */
export async function gatewayDatabaseSettings(sqlitePath: string): Promise<{ db_connection_string?: string }> {
  const url = testPostgres();
  if (url === undefined) return {};
  const name = databaseName(sqlitePath);
  const admin = clientFor(url, new URL(url).pathname.slice(1) || 'postgres');
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE "${name}" ${NATURAL_COLLATION}`);
  } finally {
    await admin.end();
  }
  const u = new URL(url);
  u.pathname = `/${name}`;
  return { db_connection_string: u.toString() };
}

export interface GatewayRows {
  /** Rows of a query written in the shared subset (`?` parameters). */
  all<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** A write (tests that seed or age rows). */
  run(sql: string, params?: unknown[]): Promise<number>;
  close(): Promise<void>;
}

/** `?` as $1, $2, ... (the tests' SQL has no `?` inside literals). */
const numbered = (sql: string) => {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
};

/** The database of the gateway with `sqlitePath`, from outside the daemon. */
export async function gatewayRows(sqlitePath: string): Promise<GatewayRows> {
  const url = testPostgres();
  if (url === undefined) {
    const db = new Database(sqlitePath, { fileMustExist: true, timeout: 5000 });
    return {
      all: async <T>(sql: string, params: unknown[] = []) => {
        // A write answers no rows (as pg does), rather than an error.
        const statement = db.prepare(sql);
        if (statement.reader) return statement.all(...params) as T[];
        statement.run(...params);
        return [];
      },
      run: async (sql: string, params: unknown[] = []) => db.prepare(sql).run(...params).changes,
      close: async () => void db.close(),
    };
  }
  const client = clientFor(url, databaseName(sqlitePath));
  await client.connect();
  return {
    all: async <T>(sql: string, params: unknown[] = []) => (await client.query(numbered(sql), params)).rows as T[],
    run: async (sql: string, params: unknown[] = []) => (await client.query(numbered(sql), params)).rowCount ?? 0,
    close: () => client.end(),
  };
}

/** One query on the gateway's database, opened and closed around it. */
export async function queryGateway<T = Record<string, unknown>>(sqlitePath: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const db = await gatewayRows(sqlitePath);
  try {
    return await db.all<T>(sql, params);
  } finally {
    await db.close();
  }
}
