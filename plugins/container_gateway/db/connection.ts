// Which database the gateway uses, from `db_connection_string` as the Ruby
// gateway accepts it (a Sequel URL): PostgreSQL over TCP or its unix socket,
// or an SQLite file; without one, the SQLite file at `sqlite_db_path`.
// Parsing is pure so that settings checks, the daemon and `proxyctl` agree,
// and no message it makes ever carries the password. openPostgres is the
// PostgreSQL branch of opening the database: pool, reachability, migrations.
import { migratePostgres } from './postgres-migrations.ts';
import { PostgresSql, type PostgresConfig, type PostgresOptions } from './postgres-sql.ts';

export type { PostgresConfig, PostgresOptions };

export type DbConnection = { readonly kind: 'sqlite'; readonly path: string } | { readonly kind: 'postgres'; readonly config: PostgresConfig };

/** The unix socket directory of Debian's and Red Hat's PostgreSQL packages (libpq's default). */
export const DEFAULT_SOCKET_DIR = '/var/run/postgresql';
const DEFAULT_PORT = 5432;

/** A connection string that cannot be used; the message names the problem, never the password. */
export class DbConnectionError extends Error {
  constructor(problem: string) {
    super(problem);
    this.name = 'DbConnectionError';
  }
}

/**
 * The database the settings name: `db_connection_string` when set, else
 * `sqlite_db_path`. Accepted forms:
 * - `postgresql://user:pw@host:port/db` and `postgres://...` (user, password, port optional);
 * - `postgresql:///db` or `postgresql://user@/db`: the unix socket in /var/run/postgresql,
 *   or in the directory given by `?host=/path`;
 * - query parameters `host`, `port`, `user`, `password`, `sslmode` (disable, require, verify-full),
 *   `application_name`;
 * - `sqlite://relative/path.db`, `sqlite:///absolute/path.db`.
 */
export function parseDbConnection(connectionString: string | undefined, sqliteDbPath: string): DbConnection {
  if (connectionString === undefined || connectionString.trim() === '') return { kind: 'sqlite', path: sqliteDbPath };
  const text = connectionString.trim();
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(text)?.[1]?.toLowerCase();
  if (scheme === 'sqlite') {
    if (!text.startsWith('sqlite://')) throw new DbConnectionError(`${JSON.stringify(redact(text))} is not an SQLite URL: write sqlite://relative/path.db or sqlite:///absolute/path.db`);
    const path = decodeURIComponent(text.slice('sqlite://'.length).split('?')[0]!);
    if (path === '') throw new DbConnectionError('sqlite:// needs a file path: sqlite:///absolute/path.db');
    return { kind: 'sqlite', path };
  }
  if (scheme === 'postgresql' || scheme === 'postgres') return { kind: 'postgres', config: parsePostgres(text) };
  throw new DbConnectionError(`${JSON.stringify(redact(text))} is neither postgresql://, postgres:// nor sqlite://`);
}

function parsePostgres(text: string): PostgresConfig {
  // Parsed by hand as libpq does: WHATWG URLs refuse an empty host after
  // user info (postgresql://user@/db, the socket with a user name).
  const decode = (part: string, what: string) => {
    try {
      return decodeURIComponent(part);
    } catch {
      throw new DbConnectionError(`has a badly %-encoded ${what}`);
    }
  };
  const rest = text.slice(text.indexOf('://') + 3).split('#')[0]!;
  const queryAt = rest.indexOf('?');
  const beforeQuery = queryAt === -1 ? rest : rest.slice(0, queryAt);
  const pathAt = beforeQuery.indexOf('/');
  const authority = pathAt === -1 ? beforeQuery : beforeQuery.slice(0, pathAt);
  const path = pathAt === -1 ? '' : beforeQuery.slice(pathAt + 1);
  const at = authority.lastIndexOf('@');
  const userInfo = at === -1 ? '' : authority.slice(0, at);
  const hostPort = at === -1 ? authority : authority.slice(at + 1);
  const colon = userInfo.indexOf(':');
  const urlUser = colon === -1 ? userInfo : userInfo.slice(0, colon);
  const urlPassword = colon === -1 ? '' : userInfo.slice(colon + 1);
  const hostMatch = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(hostPort);
  if (!hostMatch) throw new DbConnectionError(`${JSON.stringify(redact(text))} has a malformed host`);
  const hostname = hostMatch[1]!.replace(/^\[(.*)\]$/, '$1');
  const urlPort = hostMatch[2] ?? '';
  const params = new Map<string, string>(new URLSearchParams(queryAt === -1 ? '' : rest.slice(queryAt + 1)));
  const known = new Set(['host', 'port', 'user', 'password', 'sslmode', 'application_name']);
  for (const k of params.keys()) if (!known.has(k)) throw new DbConnectionError(`has an unsupported parameter '${k}' (supported: ${[...known].join(', ')})`);

  const database = decode(path, 'database name');
  if (database === '' || database.includes('/')) throw new DbConnectionError(`${JSON.stringify(redact(text))} names no database: write postgresql://host/dbname or postgresql:///dbname`);
  const host = params.get('host') ?? (hostname === '' ? DEFAULT_SOCKET_DIR : decode(hostname, 'host'));
  const portText = params.get('port') ?? urlPort;
  const port = portText === '' ? DEFAULT_PORT : /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new DbConnectionError(`has port ${JSON.stringify(portText)}: expected 1 to 65535`);
  const user = params.get('user') ?? (urlUser === '' ? undefined : decode(urlUser, 'user name'));
  const password = params.get('password') ?? (urlPassword === '' ? undefined : decode(urlPassword, 'password'));
  const sslmode = params.get('sslmode') ?? 'disable';
  const ssl = sslmode === 'disable' ? false : sslmode === 'require' || sslmode === 'verify-full' ? sslmode : undefined;
  if (ssl === undefined) throw new DbConnectionError(`has sslmode ${JSON.stringify(sslmode)}: expected disable, require or verify-full`);
  const applicationName = params.get('application_name');
  return { host, port, database, ssl, ...(user !== undefined && { user }), ...(password !== undefined && { password }), ...(applicationName !== undefined && { applicationName }) };
}

/** The connection string with any password replaced by `***` (in the user-info part and in `password=`). */
export function redact(connectionString: string): string {
  return connectionString.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@?#:]*):[^/@?#]*@/i, '$1:***@').replace(/([?&]password=)[^&#]*/gi, '$1***');
}

/** What the logs and `proxyctl status` show of a connection: kind and place, never the password. */
export function describeDbConnection(conn: DbConnection): string {
  if (conn.kind === 'sqlite') return `sqlite ${conn.path}`;
  const c = conn.config;
  const where = c.host.startsWith('/') ? `socket ${c.host}/.s.PGSQL.${c.port}` : `${c.host.includes(':') ? `[${c.host}]` : c.host}:${c.port}`;
  return `postgresql ${c.user ? `${c.user}@` : ''}${where}/${c.database}`;
}

/**
 * The PostgreSQL database of a connection, reachable and migrated; the pool
 * is closed again when either fails. Errors name the database, never the password.
 */
export async function openPostgres(conn: Extract<DbConnection, { kind: 'postgres' }>, options: PostgresOptions): Promise<PostgresSql> {
  const sql = new PostgresSql(conn.config, options);
  try {
    await sql.value('SELECT 1');
    await migratePostgres(sql);
    return sql;
  } catch (err) {
    await sql.close().catch(() => undefined);
    const message = (err as Error).message;
    throw new Error(`${describeDbConnection(conn)}: ${conn.config.password ? message.split(conn.config.password).join('***') : message}`, { cause: err });
  }
}
