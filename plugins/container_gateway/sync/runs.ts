// Sync runs in the database (table sync_runs), so every worker process sees the
// same state: at most one run is `running`; a running row whose process is
// gone (SIGKILL) or that stopped reporting counts as `interrupted`. A row
// names its node too: where several share the database, only the node that
// runs a sync can ask whether its process lives; the others go by its reports.
import type { Sql, SqlQueries } from '../db/sql.ts';
import type { RetryNotice } from '../upstream/main-registry.ts';

export type RunState = 'running' | 'succeeded' | 'failed' | 'interrupted';

export interface SyncProgress {
  repositories: { done: number; total: number };
  tags: { done: number; total: number };
  /** `transferred`: blobs downloaded; the others were in the store already. */
  blobs: { done: number; total: number; transferred: number };
  /** Bytes downloaded. */
  bytes: number;
  /** Repositories without tags on the main server (tags/list empty, or 404 for one its catalog lists, e.g. left by a failed push): synced as empty. */
  untagged?: string[];
  /** The main server is failing and the current request waits to be retried. */
  retrying?: RetryNotice;
}

export interface SyncRun {
  id: number;
  state: RunState;
  /** The repositories asked for; null: the whole catalog. */
  repositories: string[] | null;
  started_at: string;
  finished_at?: string;
  progress: SyncProgress;
  error?: string;
  retrying?: RetryNotice;
  pid: number;
}

interface Row {
  id: number;
  state: RunState;
  repositories: string | null;
  started_at: number;
  finished_at: number | null;
  updated_at: number;
  progress: string;
  error: string | null;
  pid: number;
  /** node_name of the node running it ('' in rows from before nodes were named: this node's). */
  node: string;
}

/** A running run that has not reported for this long is taken for dead (its pid may be reused). */
export const STALE_MS = 60_000;

export function emptyProgress(): SyncProgress {
  return { repositories: { done: 0, total: 0 }, tags: { done: 0, total: 0 }, blobs: { done: 0, total: 0, transferred: 0 }, bytes: 0 };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function toRun(row: Row): SyncRun {
  const { retrying, ...progress } = JSON.parse(row.progress) as SyncProgress;
  return {
    id: row.id,
    state: row.state,
    repositories: row.repositories === null ? null : (JSON.parse(row.repositories) as string[]),
    started_at: new Date(Number(row.started_at)).toISOString(),
    ...(row.finished_at === null ? {} : { finished_at: new Date(Number(row.finished_at)).toISOString() }),
    progress,
    ...(row.error === null ? {} : { error: row.error }),
    ...(retrying && row.state === 'running' ? { retrying } : {}),
    pid: row.pid,
  };
}

export class SyncRuns {
  /** `ownRuns`: ids this process is running right now (a row with our node and pid but not listed is a previous life's). */
  constructor(
    private readonly sql: Sql,
    private readonly ownRuns: () => ReadonlySet<number>,
    private readonly node: string,
  ) {}

  /** Mark running rows whose process is gone as interrupted (another node's: when it stopped reporting). */
  async reap(now = Date.now(), q: SqlQueries = this.sql): Promise<void> {
    const rows = await q.all<Pick<Row, 'id' | 'pid' | 'node' | 'updated_at'>>("SELECT id, pid, node, updated_at FROM sync_runs WHERE state = 'running'");
    for (const r of rows) {
      const stale = now - Number(r.updated_at) > STALE_MS;
      const here = r.node === this.node || r.node === '';
      const dead = !here ? stale : r.pid === process.pid ? !this.ownRuns().has(r.id) : !pidAlive(r.pid) || stale;
      if (dead) {
        await q.run("UPDATE sync_runs SET state = 'interrupted', finished_at = ?, error = ? WHERE id = ? AND state = 'running'", [
          now,
          'interrupted: the daemon process running it stopped (run the sync again to resume)',
          r.id,
        ]);
      }
    }
  }

  /** A new running run, or the one already running. */
  start(repositories: string[] | null, pid = process.pid): Promise<{ run: SyncRun } | { running: SyncRun }> {
    return this.sql.transaction(async (tx) => {
      const now = Date.now();
      await this.reap(now, tx);
      const running = await tx.get<Row>("SELECT * FROM sync_runs WHERE state = 'running'");
      if (running) return { running: toRun(running) };
      // Two nodes starting at the same instant (PostgreSQL, read committed) both
      // find none running; the unique index lets one insert, the other inserts
      // nothing once the first commits, and reads the run that won.
      const row = await tx.get<Row>(
        "INSERT INTO sync_runs (state, repositories, started_at, updated_at, progress, pid, node) VALUES ('running', ?, ?, ?, ?, ?, ?) ON CONFLICT (state) WHERE state = 'running' DO NOTHING RETURNING *",
        [
          repositories === null ? null : JSON.stringify(repositories),
          now,
          now,
          JSON.stringify(emptyProgress()),
          pid,
          this.node,
        ],
      );
      if (row) return { run: toRun(row) };
      const winner = await tx.get<Row>("SELECT * FROM sync_runs WHERE state = 'running'");
      if (winner) return { running: toRun(winner) };
      throw new Error('a sync run was started and ended elsewhere while this one was starting: start it again');
    });
  }

  /** Progress (and heartbeat) of a running run. */
  async update(id: number, progress: SyncProgress): Promise<void> {
    await this.sql.run("UPDATE sync_runs SET progress = ?, updated_at = ? WHERE id = ? AND state = 'running'", [JSON.stringify(progress), Date.now(), id]);
  }

  async finish(id: number, state: Exclude<RunState, 'running'>, progress: SyncProgress, error?: string): Promise<void> {
    const now = Date.now();
    const { retrying: _, ...rest } = progress;
    await this.sql.run("UPDATE sync_runs SET state = ?, progress = ?, error = ?, finished_at = ?, updated_at = ? WHERE id = ? AND state = 'running'", [state, JSON.stringify(rest), error ?? null, now, now, id]);
  }

  async get(id: number): Promise<SyncRun | undefined> {
    const row = await this.sql.get<Row>('SELECT * FROM sync_runs WHERE id = ?', [id]);
    return row && toRun(row);
  }

  async latest(): Promise<SyncRun | undefined> {
    const row = await this.sql.get<Row>('SELECT * FROM sync_runs ORDER BY id DESC LIMIT 1');
    return row && toRun(row);
  }
}
