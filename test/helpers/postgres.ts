// A private PostgreSQL cluster for one test file: Debian's server binaries,
// initdb into a temp dir, a port picked at run time, loopback and a socket
// directory in the temp dir only, stopped when the file's tests end. As root
// (CI) the server runs as the `postgres` user the package creates, since
// PostgreSQL refuses to run as root. One cluster per file, one database per test.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './proxyd.ts';
import { NATURAL_COLLATION, POSTGRES_ENV } from './test-database.ts';

export interface PostgresCluster {
  readonly port: number;
  /** The unix socket directory. */
  readonly socketDir: string;
  /** A new empty database; its connection string (TCP, user postgres, no password). */
  createDatabase(name: string): Promise<string>;
  /** Stops the server (done by teardown too; safe to call twice). */
  stop(): void;
  /** Starts it again after stop(), on the same port and data. */
  start(): void;
}

interface Teardown {
  teardown(fn: () => void | Promise<void>): void;
}

/** The newest installed server's bin directory. */
export function postgresBin(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (!versions[0]) throw new Error('PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)');
  return join(root, versions[0], 'bin');
}

const asRoot = userInfo().uid === 0;

/** Runs a server program, as the postgres user when we are root; its standard output. */
export function runPg(bin: string, args: string[]): string {
  const r = asRoot
    ? spawnSync('su', ['postgres', '-s', '/bin/sh', '-c', [bin, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')], { encoding: 'utf8' })
    : spawnSync(bin, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${bin} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A temp dir with a data directory made by initdb and a socket directory, both owned by the server's user. */
export function initCluster(bin: string, prefix: string): { dir: string; data: string; socketDir: string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  const data = join(dir, 'data');
  const socketDir = join(dir, 'sock');
  mkdirSync(data, { mode: 0o700 });
  mkdirSync(socketDir);
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(data, uid, gid);
    chownSync(socketDir, uid, gid);
  }
  try {
    runPg(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return { dir, data, socketDir };
}

/** Starts a cluster for the calling test file; stopped and removed at `t`'s teardown. */
export async function startPostgres(t: Teardown): Promise<PostgresCluster> {
  const bin = postgresBin();
  const { dir, data, socketDir } = initCluster(bin, 'proxyd-pg-');
  const port = await freePort();
  let running = false;
  const stop = () => {
    if (!running) return;
    running = false;
    runPg(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']);
  };
  t.teardown(() => {
    try {
      stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  // fsync off: the cluster lives as long as the test file; crash safety is not under test.
  const options = `-p ${port} -k ${socketDir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
  const start = () => {
    if (running) return;
    running = true;
    runPg(join(bin, 'pg_ctl'), ['-D', data, '-w', '-l', join(data, 'server.log'), '-o', options, 'start']);
  };
  start();
  return {
    port,
    socketDir,
    stop,
    start,
    async createDatabase(name: string) {
      const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE "${name.replace(/"/g, '""')}" ${NATURAL_COLLATION}`);
      } finally {
        await admin.end();
      }
      return `postgresql://postgres@127.0.0.1:${port}/${encodeURIComponent(name)}`;
    },
  };
}

/**
 * Starts this file's private cluster and points every gateway the helpers
 * start at it, each on a database of its own (the test/postgres/ wrappers,
 * before they import the suite they run).
 */
export async function usePostgres(t: Teardown): Promise<PostgresCluster> {
  const cluster = await startPostgres(t);
  process.env[POSTGRES_ENV] = `postgresql://postgres@127.0.0.1:${cluster.port}/postgres`;
  t.teardown(() => {
    delete process.env[POSTGRES_ENV];
  });
  return cluster;
}

/**
 * A last test of a test/postgres/ wrapper: the suite's gateways really stored
 * their rows in this cluster (a database of the gateway schema holding users
 * or repositories), not in SQLite files beside it.
 */
export async function gatewayDatabasesIn(cluster: PostgresCluster): Promise<{ name: string; rows: number }[]> {
  const admin = new pg.Client({ host: '127.0.0.1', port: cluster.port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  let names: string[];
  try {
    names = (await admin.query("SELECT datname FROM pg_database WHERE datname LIKE 'gw\\_%' ORDER BY datname")).rows.map((r: { datname: string }) => r.datname);
  } finally {
    await admin.end();
  }
  const out: { name: string; rows: number }[] = [];
  for (const name of names) {
    const db = new pg.Client({ host: '127.0.0.1', port: cluster.port, user: 'postgres', database: name });
    await db.connect();
    try {
      const migrated = (await db.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS yes")).rows[0].yes as boolean;
      const rows = migrated ? Number((await db.query('SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM repositories) AS n')).rows[0].n) : 0;
      out.push({ name, rows });
    } finally {
      await db.end();
    }
  }
  return out;
}
