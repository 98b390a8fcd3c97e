// The `Sql` contract (db/sql.ts) over a node-postgres pool, for gateways that
// share one PostgreSQL database. The gateway's SQL is written once with `?`
// parameters and integer times: here they are numbered ($1, $2, ...) and
// BIGINT/NUMERIC columns read back as JS numbers, with type parsers of this
// pool only (pg's global parsers stay untouched for anything else in the
// process). A query waits at most db_pool_timeout for a free connection and
// then fails saying so, instead of queueing without end.
import pg from 'pg';
import { PostgresCluster } from './postgres-cluster.ts';
import type { Dialect, Sql, SqlQueries, SqlRunResult, SqlValue } from './sql.ts';

/** Where node-postgres connects: a TCP host, or the directory of a unix socket. */
export interface PostgresConfig {
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user?: string;
  readonly password?: string;
  /** false: plain; 'require': TLS without verification (libpq's sslmode=require); 'verify-full': TLS, verified. */
  readonly ssl: false | 'require' | 'verify-full';
  readonly applicationName?: string;
}

export interface PostgresOptions {
  /** db_max_connections: connections of this process's pool. */
  readonly maxConnections: number;
  /** db_pool_timeout in milliseconds: the longest a query waits for a connection. */
  readonly poolTimeoutMs: number;
  /** Errors of idle connections (the server restarted, the network dropped): the pool replaces them. */
  readonly onError?: (err: Error) => void;
  /**
   * Named prepared statements, one per SQL text and connection (default on:
   * parsed and planned once per connection; an indexed join measured 1.5 to
   * 2.4 times the queries per second of unnamed ones on this machine).
   */
  readonly prepare?: boolean;
}

/** SQLSTATEs after which the whole transaction may succeed when run again. */
const RETRYABLE = new Set(['40001', '40P01']); // serialization_failure, deadlock_detected
const MAX_ATTEMPTS = 5;

const INT8_OID = 20;
const NUMERIC_OID = 1700;

/** This pool's parsers: int8 and numeric as numbers (times in ms and sizes fit well within 2^53), the rest as pg does. */
const POOL_TYPES = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if ((oid === INT8_OID || oid === NUMERIC_OID) && format !== 'binary') return (text: string) => Number(text);
    return pg.types.getTypeParser(oid, format as 'text');
  },
} as pg.CustomTypesConfig;

/** node-postgres's client settings for a config (shared by the pool and the listening connection). */
export function clientConfig(config: PostgresConfig, connectTimeoutMs: number): pg.ClientConfig {
  return {
    host: config.host,
    port: config.port,
    database: config.database,
    user: config.user,
    password: config.password,
    ssl: config.ssl === false ? false : { rejectUnauthorized: config.ssl === 'verify-full' },
    application_name: config.applicationName ?? 'proxyd container_gateway',
    connectionTimeoutMillis: connectTimeoutMs,
    types: POOL_TYPES,
  };
}

/**
 * `?` parameters numbered as `$1`, `$2`, ...; a `?` inside a quoted literal,
 * a quoted identifier or a comment is left alone.
 */
export function numberPlaceholders(text: string): string {
  let out = '';
  let n = 0;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    let end = i + 1;
    if (c === "'" || c === '"') {
      end = text.indexOf(c, i + 1);
      // A doubled quote is an escaped one: keep scanning past it.
      while (end !== -1 && text[end + 1] === c) end = text.indexOf(c, end + 2);
      end = end === -1 ? text.length : end + 1;
    } else if (c === '-' && text[i + 1] === '-') {
      end = text.indexOf('\n', i);
      if (end === -1) end = text.length;
    } else if (c === '/' && text[i + 1] === '*') {
      end = text.indexOf('*/', i + 2);
      end = end === -1 ? text.length : end + 2;
    } else if (c === '?') {
      out += `$${++n}`;
      i = end;
      continue;
    }
    out += text.slice(i, end);
    i = end;
  }
  return out;
}

export const POSTGRES_DIALECT: Dialect = {
  kind: 'postgres',
  jsonList: () => 'SELECT json_array_elements_text(?::json) AS value',
  contains: (haystack: string) => `strpos(${haystack}, ?) > 0`,
};

type Querier = Pick<pg.PoolClient, 'query'>;

/** The SQL texts this pool has seen: their numbered form and the name of their prepared statement. */
class StatementNames {
  private readonly known = new Map<string, { text: string; name: string }>();

  constructor(private readonly prepare: boolean) {}

  query(text: string, params: readonly SqlValue[] | undefined, rowMode?: 'array'): pg.QueryConfig & { rowMode?: 'array' } {
    let entry = this.known.get(text);
    if (!entry) {
      entry = { text: numberPlaceholders(text), name: `gw${this.known.size + 1}` };
      this.known.set(text, entry);
    }
    return { text: entry.text, values: params ? [...params] : [], ...(this.prepare && { name: entry.name }), ...(rowMode && { rowMode }) };
  }
}

/** The five query forms of the contract, over whatever runs one query (the pool, or a transaction's client). */
class PostgresQueries implements SqlQueries {
  constructor(
    private readonly statements: StatementNames,
    private readonly exec: (q: pg.QueryConfig) => Promise<pg.QueryResult>,
  ) {}

  async all<T>(text: string, params?: readonly SqlValue[]): Promise<T[]> {
    return (await this.exec(this.statements.query(text, params))).rows as T[];
  }

  async get<T>(text: string, params?: readonly SqlValue[]): Promise<T | undefined> {
    return (await this.exec(this.statements.query(text, params))).rows[0] as T | undefined;
  }

  async value<T>(text: string, params?: readonly SqlValue[]): Promise<T | undefined> {
    const rows = (await this.exec(this.statements.query(text, params, 'array'))).rows as unknown as unknown[][];
    return rows[0]?.[0] as T | undefined;
  }

  async column<T>(text: string, params?: readonly SqlValue[]): Promise<T[]> {
    const rows = (await this.exec(this.statements.query(text, params, 'array'))).rows as unknown as unknown[][];
    return rows.map((r) => r[0] as T);
  }

  async run(text: string, params?: readonly SqlValue[]): Promise<SqlRunResult> {
    return { changes: (await this.exec(this.statements.query(text, params))).rowCount ?? 0 };
  }
}

/** A server error (it has an SQLSTATE) leaves the connection usable; anything else may not. */
const isServerError = (err: unknown): boolean => typeof (err as { code?: unknown }).code === 'string' && /^[0-9A-Z]{5}$/.test((err as { code: string }).code);

/**
 * A statement this connection prepared before another node migrated the
 * schema: the connection is dropped (a new one prepares afresh) and the query
 * runs again.
 */
const isStalePlan = (err: unknown): boolean => (err as { code?: unknown }).code === '0A000' && /cached plan must not change result type/.test((err as Error).message);
const STALE_PLAN_RETRIES = 3;

export class PostgresSql implements Sql {
  readonly dialect = POSTGRES_DIALECT;
  readonly pool: pg.Pool;
  /** Advisory locks and LISTEN/NOTIFY on this database. */
  readonly cluster: PostgresCluster;
  private readonly statements: StatementNames;
  private readonly queries: PostgresQueries;

  constructor(
    readonly config: PostgresConfig,
    private readonly options: PostgresOptions,
  ) {
    const base = clientConfig(config, options.poolTimeoutMs);
    this.pool = new pg.Pool({ ...base, max: options.maxConnections, idleTimeoutMillis: 30_000 });
    this.pool.on('error', (err) => options.onError?.(err));
    this.statements = new StatementNames(options.prepare ?? true);
    this.queries = new PostgresQueries(this.statements, (q) => this.query(q));
    this.cluster = new PostgresCluster(this, base, options.onError);
  }

  /** Connections: open, idle, and queries waiting for one. */
  poolStats(): { total: number; idle: number; waiting: number; max: number } {
    return { total: this.pool.totalCount, idle: this.pool.idleCount, waiting: this.pool.waitingCount, max: this.options.maxConnections };
  }

  /** A pooled connection, or an error saying why there is none within db_pool_timeout. */
  async connect(): Promise<pg.PoolClient> {
    const busy = this.pool.totalCount >= this.options.maxConnections && this.pool.idleCount === 0;
    try {
      return await this.pool.connect();
    } catch (err) {
      const message = (err as Error).message;
      if (!/timeout exceeded when trying to connect/i.test(message)) throw err;
      const seconds = this.options.poolTimeoutMs / 1000;
      throw new Error(
        busy
          ? `PostgreSQL: no free connection within db_pool_timeout (${seconds} s): all ${this.options.maxConnections} (db_max_connections) were in use`
          : `PostgreSQL: could not connect to ${this.config.host}:${this.config.port} within db_pool_timeout (${seconds} s)`,
        { cause: err },
      );
    }
  }

  /** Runs `fn` on one pooled connection, released after (dropped if it failed other than by a server error). */
  async withConnection<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.connect();
    try {
      const value = await fn(client);
      client.release();
      return value;
    } catch (err) {
      client.release(isServerError(err) && !isStalePlan(err) ? undefined : (err as Error));
      throw err;
    }
  }

  /** One query on a pooled connection; again on another when the first held a plan the schema outdated. */
  private async query(q: pg.QueryConfig): Promise<pg.QueryResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.withConnection((c) => c.query(q));
      } catch (err) {
        if (!isStalePlan(err) || attempt > STALE_PLAN_RETRIES) throw err;
      }
    }
  }

  all<T>(text: string, params?: readonly SqlValue[]): Promise<T[]> {
    return this.queries.all<T>(text, params);
  }
  get<T>(text: string, params?: readonly SqlValue[]): Promise<T | undefined> {
    return this.queries.get<T>(text, params);
  }
  value<T>(text: string, params?: readonly SqlValue[]): Promise<T | undefined> {
    return this.queries.value<T>(text, params);
  }
  column<T>(text: string, params?: readonly SqlValue[]): Promise<T[]> {
    return this.queries.column<T>(text, params);
  }
  run(text: string, params?: readonly SqlValue[]): Promise<SqlRunResult> {
    return this.queries.run(text, params);
  }

  /**
   * BEGIN, body, COMMIT on one pooled connection; ROLLBACK when the body
   * throws. A serialization failure or a deadlock (the server chose this
   * transaction to fail) runs the whole body again, up to five times: the
   * contract's bodies do database work only, so running one again is safe.
   * So does a prepared statement outdated by another node's migration (on a
   * new connection).
   */
  async transaction<T>(body: (tx: SqlQueries) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1) await new Promise((r) => setTimeout(r, Math.random() * 10 * attempt));
      const client = await this.connect();
      let unusable: Error | undefined;
      try {
        await client.query('BEGIN');
        const value = await body(new PostgresQueries(this.statements, (q) => client.query(q)));
        await client.query('COMMIT');
        return value;
      } catch (err) {
        unusable = (await rollback(client)) ?? (isStalePlan(err) ? (err as Error) : undefined);
        const code = (err as { code?: string }).code;
        const again = (code !== undefined && RETRYABLE.has(code)) || isStalePlan(err);
        if (attempt < MAX_ATTEMPTS && again) continue;
        throw err;
      } finally {
        client.release(unusable);
      }
    }
  }

  async close(): Promise<void> {
    await this.cluster.close();
    await this.pool.end();
  }
}

/** ROLLBACK after a failed body; the error when even that fails (the connection is unusable then). */
async function rollback(client: Querier): Promise<Error | undefined> {
  try {
    await client.query('ROLLBACK');
    return undefined;
  } catch (err) {
    return err as Error;
  }
}
