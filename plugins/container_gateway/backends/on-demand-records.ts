// What on-demand serving keeps in SQLite, so that every worker of the daemon
// sees the same: when each tag was last checked against the main server (a
// tag checked by one worker is fresh for all), and each worker's counters,
// added to its own row every second and summed for `proxyctl status`.
import cluster from 'node:cluster';
import type Database from 'better-sqlite3';
import { Statements } from '../db/statements.ts';
import type { OnDemandStats } from './on-demand-stats.ts';

/** Last checks of tags against the main server; invalidated by Katello's repository_list and by a sync. */
export class TagChecks {
  private readonly statements: Statements;

  constructor(db: Database.Database) {
    this.statements = new Statements(db);
  }

  /** When the tag was last found current upstream (ms since epoch), if ever since the last invalidation. */
  checkedAt(repositoryId: number, tag: string): number | undefined {
    return this.statements.get('SELECT checked_at FROM tag_checks WHERE repository_id = ? AND name = ?').pluck().get(repositoryId, tag) as number | undefined;
  }

  checked(repositoryId: number, tag: string, at = Date.now()): void {
    this.statements
      .get('INSERT INTO tag_checks (repository_id, name, checked_at) VALUES (?, ?, ?) ON CONFLICT(repository_id, name) DO UPDATE SET checked_at = excluded.checked_at')
      .run(repositoryId, tag, at);
  }

  forget(repositoryId: number, tag: string): void {
    this.statements.get('DELETE FROM tag_checks WHERE repository_id = ? AND name = ?').run(repositoryId, tag);
  }

  /** The next read of any tag (of `name` only, when given) asks the main server. */
  invalidate(name?: string): void {
    if (name === undefined) this.statements.get('DELETE FROM tag_checks').run();
    else this.statements.get('DELETE FROM tag_checks WHERE repository_id IN (SELECT id FROM repositories WHERE name = ?)').run(name);
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
  private readonly statements: Statements;
  private readonly daemon = cluster.isWorker ? process.ppid : process.pid;
  private readonly worker = process.pid;
  private readonly flushed = { hits: 0, misses: 0, bytesFetched: 0 };
  private readonly timer: NodeJS.Timeout;

  constructor(
    db: Database.Database,
    private readonly stats: OnDemandStats,
    private readonly node: string,
  ) {
    this.statements = new Statements(db);
    db.transaction(() => {
      this.statements.get('DELETE FROM on_demand_counters WHERE node = ? AND daemon != ?').run(this.node, this.daemon);
      // A single process reusing an old pid starts from nothing too.
      this.statements.get('DELETE FROM on_demand_counters WHERE node = ? AND worker = ?').run(this.node, this.worker);
    }).immediate();
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** Add what was counted since the last flush to this worker's row. */
  flush(): void {
    const s = this.stats;
    const d = { hits: s.hits - this.flushed.hits, misses: s.misses - this.flushed.misses, bytes: s.bytesFetched - this.flushed.bytesFetched };
    if (d.hits === 0 && d.misses === 0 && d.bytes === 0) return;
    this.statements
      .get(
        `INSERT INTO on_demand_counters (node, daemon, worker, hits, misses, bytes_fetched) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(node, daemon, worker) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses, bytes_fetched = bytes_fetched + excluded.bytes_fetched`,
      )
      .run(this.node, this.daemon, this.worker, d.hits, d.misses, d.bytes);
    this.flushed.hits = s.hits;
    this.flushed.misses = s.misses;
    this.flushed.bytesFetched = s.bytesFetched;
  }

  /** The whole daemon's counts (this worker's flushed first; others' are at most a second old). */
  totals(): OnDemandTotals {
    this.flush();
    const row = this.statements
      .get('SELECT COALESCE(SUM(hits), 0) AS hits, COALESCE(SUM(misses), 0) AS misses, COALESCE(SUM(bytes_fetched), 0) AS bytes_fetched, COUNT(*) AS workers FROM on_demand_counters WHERE node = ? AND daemon = ?')
      .get(this.node, this.daemon) as OnDemandTotals;
    return row;
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
