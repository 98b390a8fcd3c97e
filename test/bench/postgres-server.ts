// The benchmark's own PostgreSQL server: the cluster of test/helpers/postgres.ts
// (Debian's binaries, initdb into a temp dir, loopback only, a port picked at
// run time, run as the `postgres` user when we are root), without tap, and
// with pg_stat_statements loaded so that the benchmark can count the queries
// one request makes. stop() is synchronous (pg_ctl), so it can run from a
// process 'exit' handler when the benchmark is interrupted.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { initCluster, postgresBin, runPg } from '../helpers/postgres.ts';
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

export async function startBenchPostgres(): Promise<BenchPostgres> {
  const bin = postgresBin();
  const { dir, data, socketDir } = initCluster(bin, 'proxyd-bench-pg-');
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
