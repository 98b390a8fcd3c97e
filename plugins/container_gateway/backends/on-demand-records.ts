// What on-demand serving keeps in the database, so that every worker of the daemon
// sees the same: when each tag was last checked against the main server (a
// tag checked by one worker is fresh for all), and each worker's counters,
// added to its own row every second and summed for `proxyctl status`.
import cluster from 'node:cluster';
import type { Sql } from '../db/sql.ts';
import type { OnDemandStats } from './on-demand-stats.ts';

/** Last checks of tags against the main server; invalidated by Katello's repository_list and by a sync. */
export class TagChecks {
  constructor(private readonly sql: Sql) {}

  /** When the tag was last found current upstream (ms since epoch), if ever since the last invalidation. */
  async checkedAt(repositoryId: number, tag: string): Promise<number | undefined> {
    const at = await this.sql.value<number | string>('SELECT checked_at FROM tag_checks WHERE repository_id = ? AND name = ?', [repositoryId, tag]);
    return at === undefined ? undefined : Number(at);
  }

  async checked(repositoryId: number, tag: string, at = Date.now()): Promise<void> {
    await this.sql.run('INSERT INTO tag_checks (repository_id, name, checked_at) VALUES (?, ?, ?) ON CONFLICT(repository_id, name) DO UPDATE SET checked_at = excluded.checked_at', [repositoryId, tag, at]);
  }

  async forget(repositoryId: number, tag: string): Promise<void> {
    await this.sql.run('DELETE FROM tag_checks WHERE repository_id = ? AND name = ?', [repositoryId, tag]);
  }

  /** The next read of any tag (of `name` only, when given) asks the main server. */
  async invalidate(name?: string): Promise<void> {
    if (name === undefined) await this.sql.run('DELETE FROM tag_checks');
    else await this.sql.run('DELETE FROM tag_checks WHERE repository_id IN (SELECT id FROM repositories WHERE name = ?)', [name]);
  }
}

/** How often a worker adds its counts to its row. */
const FLUSH_MS = 1000;

export interface OnDemandTotals {
  hits: number;
  misses: number;
  bytes_fetched: number;
  /** Workers that counted something since the daemon started. */
  workers: number;
}

/**
 * Counts of this daemon run, across its workers. A run is named by its node
 * (node_name: several nodes may share the database) and the primary's pid (a
 * single process is its own primary): a worker restarted after a crash keeps
 * adding to the same run, and this node's rows of earlier runs are deleted
 * when a process of a new run starts.
 */
export class SharedCounters {
  private readonly daemon = cluster.isWorker ? process.ppid : process.pid;
  private readonly worker = process.pid;
  private readonly flushed = { hits: 0, misses: 0, bytesFetched: 0 };
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sql: Sql,
    private readonly stats: OnDemandStats,
    private readonly node: string,
  ) {}

  /** Drop the rows of earlier runs, then flush every second. */
  async start(): Promise<void> {
    await this.sql.transaction(async (tx) => {
      await tx.run('DELETE FROM on_demand_counters WHERE node = ? AND daemon != ?', [this.node, this.daemon]);
      // A single process reusing an old pid starts from nothing too.
      await tx.run('DELETE FROM on_demand_counters WHERE node = ? AND worker = ?', [this.node, this.worker]);
    });
    // A failed flush keeps its counts for the next one.
    this.timer = setInterval(() => void this.flush().catch(() => undefined), FLUSH_MS);
    this.timer.unref();
  }

  /** Add what was counted since the last flush to this worker's row. */
  async flush(): Promise<void> {
    const s = this.stats;
    const d = { hits: s.hits - this.flushed.hits, misses: s.misses - this.flushed.misses, bytes: s.bytesFetched - this.flushed.bytesFetched };
    if (d.hits === 0 && d.misses === 0 && d.bytes === 0) return;
    // Counted as flushed before the query runs, so that a flush running meanwhile does not add them again.
    this.flushed.hits += d.hits;
    this.flushed.misses += d.misses;
    this.flushed.bytesFetched += d.bytes;
    try {
      await this.sql.run(
        `INSERT INTO on_demand_counters (node, daemon, worker, hits, misses, bytes_fetched) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(node, daemon, worker) DO UPDATE SET hits = on_demand_counters.hits + excluded.hits, misses = on_demand_counters.misses + excluded.misses,
           bytes_fetched = on_demand_counters.bytes_fetched + excluded.bytes_fetched`,
        [this.node, this.daemon, this.worker, d.hits, d.misses, d.bytes],
      );
    } catch (err) {
      this.flushed.hits -= d.hits;
      this.flushed.misses -= d.misses;
      this.flushed.bytesFetched -= d.bytes;
      throw err;
    }
  }

  /** The whole daemon's counts (this worker's flushed first; others' are at most a second old). */
  async totals(): Promise<OnDemandTotals> {
    await this.flush();
    const row = await this.sql.get<Record<keyof OnDemandTotals, number | string>>(
      'SELECT COALESCE(SUM(hits), 0) AS hits, COALESCE(SUM(misses), 0) AS misses, COALESCE(SUM(bytes_fetched), 0) AS bytes_fetched, COUNT(*) AS workers FROM on_demand_counters WHERE node = ? AND daemon = ?',
      [this.node, this.daemon],
    );
    return { hits: Number(row!.hits), misses: Number(row!.misses), bytes_fetched: Number(row!.bytes_fetched), workers: Number(row!.workers) };
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
