// Sync runs of this process: started by the admin API, run in the background
// of the worker that took the request, their state written to sync_runs
// (throttled, with a heartbeat) so any worker can answer about them. After the
// content, access is refreshed (sync/refresh.ts). Stopping the daemon marks
// its runs interrupted; a rerun resumes. Made once in setup, stopped by its
// closer before the database closes.
import type { GatewayMetrics } from '../metrics.ts';
import type { Logger } from '../../../lib/plugins/api.ts';
import type { GatewayDb } from '../db/database.ts';
import type { GatewaySettings } from '../settings.ts';
import type { MainServer } from '../upstream/main-server.ts';
import { runSync } from './engine.ts';
import type { StoreMirror } from './mirror.ts';
import { refreshAccess } from './refresh.ts';
import { emptyProgress, SyncRuns, type SyncProgress, type SyncRun } from './runs.ts';

/** Progress is written at most this often (every change is kept in memory). */
const FLUSH_MS = 250;
/** A running run writes at least this often, so others can tell it is alive. */
const HEARTBEAT_MS = 5_000;

interface Active {
  controller: AbortController;
  progress: SyncProgress;
  /** The first failure that ended the run early. */
  reason?: unknown;
  /** The daemon is stopping: the run is already marked interrupted. */
  stopping: boolean;
  /** Clear its timers. */
  quiet(): void;
}

export interface SyncDependencies {
  db: GatewayDb;
  /** The embedded store runs write into (through its mirror); undefined with the pulp backend. */
  local: StoreMirror | undefined;
  /** The main server runs read; undefined in standalone mode. */
  main: MainServer | undefined;
  settings: GatewaySettings;
  logger: Logger;
  /** A repository's tags changed (cached manifests must go). */
  onRepositoryDone(name: string): Promise<void>;
  /** Told of every run's end (GET /metrics). */
  metrics?: GatewayMetrics;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class SyncService {
  readonly runs: SyncRuns;
  private readonly active = new Map<number, Active>();

  constructor(private readonly deps: SyncDependencies) {
    this.runs = new SyncRuns(deps.db.sql, () => new Set(this.active.keys()), deps.settings.node_name);
  }

  /** Why this gateway cannot sync (a configuration matter), or undefined. */
  unavailable(): string | undefined {
    if (!this.deps.local) return 'sync needs content_backend: local (this gateway serves content from pulp_endpoint)';
    if (!this.deps.main) return 'sync needs a main server: foreman_url is unset (standalone mode)';
    return undefined;
  }

  /** Start a run unless one is running (in any worker). */
  async start(repositories: string[] | null): Promise<{ run: SyncRun } | { running: SyncRun }> {
    const started = await this.runs.start(repositories);
    if ('run' in started) this.execute(started.run);
    return started;
  }

  async get(id: number): Promise<SyncRun | undefined> {
    await this.runs.reap();
    return this.runs.get(id);
  }

  async latest(): Promise<SyncRun | undefined> {
    await this.runs.reap();
    return this.runs.latest();
  }

  /** Mark the runs of this process interrupted and end them (plugin stop). */
  async stop(): Promise<void> {
    const stopping = [...this.active];
    for (const [, a] of stopping) {
      a.stopping = true;
      a.quiet();
      a.controller.abort();
    }
    for (const [id, a] of stopping) await this.runs.finish(id, 'interrupted', a.progress, 'interrupted: the daemon stopped (run the sync again to resume)');
    this.active.clear();
  }

  private execute(run: SyncRun): void {
    const { db, logger, settings: s } = this.deps;
    const local = this.deps.local!;
    const main = this.deps.main!;
    let pending: NodeJS.Timeout | undefined;
    const quiet = () => {
      clearTimeout(pending);
      clearInterval(heartbeat);
    };
    const a: Active = { controller: new AbortController(), progress: emptyProgress(), stopping: false, quiet };
    this.active.set(run.id, a);
    const flush = () => {
      pending = undefined;
      if (!a.stopping) this.runs.update(run.id, a.progress).catch((err: unknown) => logger.warn(`sync #${run.id}: progress not recorded: ${message(err)}`));
    };
    const changed = () => {
      if (pending) return;
      pending = setTimeout(flush, FLUSH_MS);
    };
    const heartbeat = setInterval(flush, HEARTBEAT_MS);
    const registry = main.proxyReader({
      retries: s.sync_retries,
      signal: a.controller.signal,
      onRetry: (notice) => {
        if (notice) logger.warn(`sync #${run.id}: ${notice.message}`);
        else logger.info(`sync #${run.id}: the main server answers again`);
        if (notice) a.progress.retrying = notice;
        else delete a.progress.retrying;
        changed();
      },
    });
    const what = run.repositories ? `${run.repositories.length} repositories` : 'the catalog';
    logger.info(`sync #${run.id}: started (${what} of ${registry.url})`);
    const job = runSync({
      mirror: local,
      source: registry,
      repositories: run.repositories,
      concurrency: s.sync_concurrency,
      signal: a.controller.signal,
      progress: a.progress,
      changed,
      repositoryDone: (name) => this.deps.onRepositoryDone(name),
      log: { info: (m) => logger.info(m), warn: (m) => logger.warn(m) },
      abort: (err) => {
        a.reason ??= err;
        a.controller.abort();
      },
    });
    const refreshed = job.then(async (result) => {
      const r = await refreshAccess(db, main.katello, result.repositories, s.sync_concurrency, { warn: (m) => logger.warn(m) });
      logger.info(`sync #${run.id}: ${r.public} of ${result.repositories.length} repositories public (Katello's anonymous catalog), ${r.hosts} content host mappings refreshed`);
      return result;
    });
    refreshed
      .then(
        ({ failures }) => {
          if (failures.length === 0) return { state: 'succeeded' as const };
          const shown = failures.slice(0, 3).map((f) => `${f.repository}: ${f.error}`).join('; ');
          const total = a.progress.repositories.total;
          return { state: 'failed' as const, error: `${failures.length} of ${total || failures.length} repositories failed: ${shown}${failures.length > 3 ? '; ...' : ''}` };
        },
        (err: unknown) => ({ state: 'failed' as const, error: message(a.reason ?? err) }),
      )
      .then(async ({ state, error }) => {
        quiet();
        registry.close();
        if (a.stopping) return;
        // Recorded before it leaves `active`: meanwhile a reap still sees it as this process's own.
        await this.runs.finish(run.id, state, a.progress, error);
        this.active.delete(run.id);
        const p = a.progress;
        this.deps.metrics?.syncEnded(state, p.blobs.transferred, p.bytes);
        const summary = `${p.repositories.done}/${p.repositories.total} repositories, ${p.blobs.transferred} blobs (${p.bytes} bytes) downloaded${p.untagged?.length ? `, ${p.untagged.length} without tags on the main server (synced as empty)` : ''}`;
        if (state === 'succeeded') logger.info(`sync #${run.id}: succeeded: ${summary}`);
        else logger.error(`sync #${run.id}: failed: ${error} (${summary})`);
      })
      .catch((err: unknown) => logger.error(`sync #${run.id}: could not record its end: ${message(err)}`));
  }
}
