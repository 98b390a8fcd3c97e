// The one data-access contract of the gateway: every query of db/, store/,
// auth/, sync/ and backends/ goes through an `Sql`, whichever database is
// behind it (db/sqlite-sql.ts: better-sqlite3, one connection per process;
// db/postgres-sql.ts: a pg pool shared by the process).
//
// SQL is written once, in the subset both dialects run:
// - parameters are `?` (the PostgreSQL executor numbers them: $1, $2, ...);
// - booleans are INTEGER 0/1, times are INTEGER milliseconds (BIGINT there,
//   read back as numbers), bytes are Buffers (BLOB / BYTEA);
// - `INSERT ... ON CONFLICT ... DO NOTHING|DO UPDATE`, never `INSERT OR IGNORE`;
// - new ids come from `RETURNING id`;
// - what differs is asked of `dialect` (a list passed as one JSON parameter,
//   substring search).

export type SqlValue = string | number | bigint | Buffer | null;

export interface SqlRunResult {
  /** Rows inserted, updated or deleted. */
  changes: number;
}

/** Queries on a connection, or inside one transaction. */
export interface SqlQueries {
  all<T>(text: string, params?: readonly SqlValue[]): Promise<T[]>;
  get<T>(text: string, params?: readonly SqlValue[]): Promise<T | undefined>;
  /** The first column of the first row (undefined when there is no row). */
  value<T>(text: string, params?: readonly SqlValue[]): Promise<T | undefined>;
  /** The first column of every row. */
  column<T>(text: string, params?: readonly SqlValue[]): Promise<T[]>;
  run(text: string, params?: readonly SqlValue[]): Promise<SqlRunResult>;
}

export interface Dialect {
  readonly kind: 'sqlite' | 'postgres';
  /** A subquery yielding one `value` column per element of a JSON array of strings given as the parameter `?`. */
  jsonList(): string;
  /** A condition: `haystack` contains the parameter `?` as a substring (case-sensitive). */
  contains(haystack: string): string;
}

export interface Sql extends SqlQueries {
  readonly dialect: Dialect;
  /**
   * Run `body` in one transaction that takes the write lock at once (SQLite:
   * BEGIN IMMEDIATE; PostgreSQL: one pooled connection). The body queries
   * through `tx` only, and does nothing but database work between its awaits:
   * on SQLite other queries of the process wait until it ends. Rolled back
   * when the body throws.
   */
  transaction<T>(body: (tx: SqlQueries) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
