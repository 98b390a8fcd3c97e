// The benchmark's own PostgreSQL server: the recipe of test/helpers/postgres.ts
// (Debian's binaries, initdb into a temp dir, loopback only, a port picked at
// run time, run as the `postgres` user when we are root), without tap, and
// with pg_stat_statements loaded so that the benchmark can count the queries
// one request makes. stop() is synchronous (pg_ctl), so it can run from a
// process 'exit' handler when the benchmark is interrupted.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../helpers/proxyd.ts';

export interface BenchPostgres {
  readonly port: number;
  readonly version: string;
  /** The data directory (postmaster.pid names the server's pid). */
  readonly dataDir: string;
  /** The directory of its unix socket. */
  readonly socketDir: string;
  /** A new empty database with pg_stat_statements; its connection string (TCP, user postgres, no password). */
  createDatabase(name: string): Promise<string>;
  /** Stops the server (immediate) and removes its files; safe to call twice. */
  stop(): void;
}

function postgresBin(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (!versions[0]) throw new Error('PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)');
  return join(root, versions[0], 'bin');
}

const asRoot = userInfo().uid === 0;

function runPg(bin: string, args: string[]): string {
  const r = asRoot
    ? spawnSync('su', ['postgres', '-s', '/bin/sh', '-c', [bin, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')], { encoding: 'utf8' })
    : spawnSync(bin, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${bin} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

export async function startBenchPostgres(): Promise<BenchPostgres> {
  const bin = postgresBin();
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-bench-pg-'));
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
  let running = false;
  const stop = () => {
    if (running) {
      running = false;
      try {
        runPg(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } catch {
        // already gone: its files go below all the same
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    runPg(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
    const port = await freePort();
    // Server defaults otherwise (fsync on, shared_buffers 128 MB): as a packaged server runs.
    const options = `-p ${port} -k ${socketDir} -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_preload_libraries=pg_stat_statements`;
    running = true;
    runPg(join(bin, 'pg_ctl'), ['-D', data, '-w', '-l', join(data, 'server.log'), '-o', options, 'start']);
    const version = runPg(join(bin, 'postgres'), ['--version']).trim();
    return {
      port,
      version,
      dataDir: data,
      socketDir,
      stop,
      async createDatabase(name: string) {
        const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
        await admin.connect();
        try {
          await admin.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
        } finally {
          await admin.end();
        }
        const url = `postgresql://postgres@127.0.0.1:${port}/${encodeURIComponent(name)}`;
        const db = new pg.Client({ connectionString: url });
        await db.connect();
        try {
          await db.query('CREATE EXTENSION pg_stat_statements');
        } finally {
          await db.end();
        }
        return url;
      },
    };
  } catch (err) {
    stop();
    throw err;
  }
}

/** What pg_stat_statements counted in one database since its last reset. */
export interface StatementCounts {
  /** Calls of all statements but the benchmark's own (reset and this read). */
  calls: number;
  /** The statements by calls, most first: calls, mean ms, text (first 100 characters). */
  top: Array<{ calls: number; meanMs: number; query: string }>;
}

export async function resetStatements(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('SELECT pg_stat_statements_reset()');
  } finally {
    await c.end();
  }
}

export async function readStatements(url: string): Promise<StatementCounts> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query<{ calls: string; mean: number; query: string }>(
      `SELECT s.calls, s.mean_exec_time AS mean, s.query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = current_database() AND s.query NOT ILIKE '%pg_stat_statements%' ORDER BY s.calls DESC`,
    );
    const top = r.rows.map((x) => ({ calls: Number(x.calls), meanMs: x.mean, query: x.query.replace(/\s+/g, ' ').slice(0, 100) }));
    return { calls: top.reduce((n, x) => n + x.calls, 0), top };
  } finally {
    await c.end();
  }
}
