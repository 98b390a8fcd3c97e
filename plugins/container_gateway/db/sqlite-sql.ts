// The `Sql` of SQLite: better-sqlite3, one connection per process, WAL, a busy
// timeout, foreign keys, migrations at open. better-sqlite3 is synchronous, so
// a query outside a transaction runs at once and its promise is already
// settled. A transaction's body awaits between its queries: other async work
// of the process could then query the same connection in the middle of it, so
// while one is open every other query (and transaction) of the process waits
// in a queue until it ends, in the order they were asked.
import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS } from './migrations.ts';
import type { Dialect, Sql, SqlQueries, SqlRunResult, SqlValue } from './sql.ts';

export const SQLITE_DIALECT: Dialect = {
  kind: 'sqlite',
  jsonList: () => 'SELECT value FROM json_each(?)',
  contains: (haystack) => `instr(${haystack}, ?) > 0`,
};

/**
 * Apply the migrations this database lacks (PRAGMA user_version counts those
 * applied). Several workers may open a new database at once: each migration
 * is applied under the write lock, and only if no one applied it first.
 */
export function migrateSqlite(db: Database.Database): void {
  const version = () => db.pragma('user_version', { simple: true }) as number;
  if (version() > MIGRATIONS.length) throw new Error(`database schema version ${version()} is newer than this gateway (${MIGRATIONS.length})`);
  for (let v = 0; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      if (version() > v) return;
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
}

/** Prepared statements, prepared once per SQL text (preparing costs more than running most queries); the pluck mode is set on every use. */
class SqliteQueries implements SqlQueries {
  private readonly cache = new Map<string, Database.Statement>();

  constructor(readonly db: Database.Database) {}

  statement(text: string): Database.Statement {
    let stmt = this.cache.get(text);
    if (!stmt) {
      stmt = this.db.prepare(text);
      this.cache.set(text, stmt);
    }
    return stmt;
  }

  allNow<T>(text: string, params: readonly SqlValue[]): T[] {
    const stmt = this.statement(text);
    return (stmt.reader ? stmt.pluck(false) : stmt).all(...params) as T[];
  }

  getNow<T>(text: string, params: readonly SqlValue[]): T | undefined {
    const stmt = this.statement(text);
    return (stmt.reader ? stmt.pluck(false) : stmt).get(...params) as T | undefined;
  }

  valueNow<T>(text: string, params: readonly SqlValue[]): T | undefined {
    return this.statement(text).pluck(true).get(...params) as T | undefined;
  }

  columnNow<T>(text: string, params: readonly SqlValue[]): T[] {
    return this.statement(text).pluck(true).all(...params) as T[];
  }

  runNow(text: string, params: readonly SqlValue[]): SqlRunResult {
    return { changes: this.statement(text).run(...params).changes };
  }

  all<T>(text: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return settled(() => this.allNow<T>(text, params));
  }

  get<T>(text: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return settled(() => this.getNow<T>(text, params));
  }

  value<T>(text: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return settled(() => this.valueNow<T>(text, params));
  }

  column<T>(text: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return settled(() => this.columnNow<T>(text, params));
  }

  run(text: string, params: readonly SqlValue[] = []): Promise<SqlRunResult> {
    return settled(() => this.runNow(text, params));
  }
}

function settled<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err);
  }
}

/** The queries of one open transaction; refused once it has ended. */
class TransactionQueries implements SqlQueries {
  open = true;

  constructor(private readonly queries: SqliteQueries) {}

  private check<T>(fn: () => T): Promise<T> {
    if (!this.open) return Promise.reject(new Error('query on a transaction that has ended'));
    return settled(fn);
  }

  all<T>(text: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.check(() => this.queries.allNow<T>(text, params));
  }

  get<T>(text: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return this.check(() => this.queries.getNow<T>(text, params));
  }

  value<T>(text: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return this.check(() => this.queries.valueNow<T>(text, params));
  }

  column<T>(text: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.check(() => this.queries.columnNow<T>(text, params));
  }

  run(text: string, params: readonly SqlValue[] = []): Promise<SqlRunResult> {
    return this.check(() => this.queries.runNow(text, params));
  }
}

export class SqliteSql implements Sql {
  readonly dialect = SQLITE_DIALECT;
  private readonly queries: SqliteQueries;
  /** A transaction is open: queries of the process wait in `waiting`. */
  private busy = false;
  private readonly waiting: Array<() => void> = [];
  /** Set inside a transaction's body, to tell a nested call (an error) from another async path (which waits). */
  private readonly inside = new AsyncLocalStorage<SqliteSql>();

  /** Open (creating the file and its folder if needed) and migrate. `:memory:` is a private database. */
  constructor(path: string, busyTimeoutMs: number) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path, { timeout: busyTimeoutMs });
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('foreign_keys = ON');
      db.pragma('synchronous = NORMAL');
      migrateSqlite(db);
    } catch (err) {
      db.close();
      throw err;
    }
    this.queries = new SqliteQueries(db);
  }

  /** Run `fn` now when no transaction is open, else when its turn comes. */
  private when<T>(fn: () => T): Promise<T> {
    if (!this.busy) return settled(fn);
    if (this.inside.getStore() === this) return Promise.reject(new Error('query on the connection inside its own transaction: use the transaction\'s queries'));
    return new Promise<T>((resolve, reject) => {
      this.waiting.push(() => {
        try {
          resolve(fn());
        } catch (err) {
          reject(err as Error);
        }
      });
    });
  }

  /** The transaction ended: run what waited, in order, until one of them opens the next transaction. */
  private release(): void {
    this.busy = false;
    while (!this.busy && this.waiting.length > 0) this.waiting.shift()!();
  }

  all<T>(text: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.when(() => this.queries.allNow<T>(text, params));
  }

  get<T>(text: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return this.when(() => this.queries.getNow<T>(text, params));
  }

  value<T>(text: string, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return this.when(() => this.queries.valueNow<T>(text, params));
  }

  column<T>(text: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.when(() => this.queries.columnNow<T>(text, params));
  }

  run(text: string, params: readonly SqlValue[] = []): Promise<SqlRunResult> {
    return this.when(() => this.queries.runNow(text, params));
  }

  transaction<T>(body: (tx: SqlQueries) => Promise<T>): Promise<T> {
    if (this.inside.getStore() === this) return Promise.reject(new Error('nested transaction: a transaction body must use its own queries only'));
    if (!this.busy) return this.runTransaction(body);
    return new Promise<T>((resolve, reject) => {
      this.waiting.push(() => {
        this.runTransaction(body).then(resolve, reject);
      });
    });
  }

  /** BEGIN IMMEDIATE now (synchronously: `busy` is set before anything else can run), then the body, COMMIT or ROLLBACK. */
  private runTransaction<T>(body: (tx: SqlQueries) => Promise<T>): Promise<T> {
    const db = this.queries.db;
    try {
      this.queries.statement('BEGIN IMMEDIATE').run();
    } catch (err) {
      return Promise.reject(err);
    }
    this.busy = true;
    const tx = new TransactionQueries(this.queries);
    const end = (commit: boolean) => {
      tx.open = false;
      try {
        if (commit) this.queries.statement('COMMIT').run();
      } finally {
        try {
          if (db.inTransaction) this.queries.statement('ROLLBACK').run();
        } finally {
          this.release();
        }
      }
    };
    return this.inside.run(this, async () => {
      let result: T;
      try {
        result = await body(tx);
      } catch (err) {
        end(false);
        throw err;
      }
      end(true);
      return result;
    });
  }

  async close(): Promise<void> {
    this.queries.db.close();
  }
}
