// Sync runs of this process: started by the admin API, run in the background
// of the worker that took the request, their state written to sync_runs
// (throttled, with a heartbeat) so any worker can answer about them. After the
// content, access is refreshed (sync/refresh.ts). Stopping the daemon marks
// its runs interrupted; a rerun resumes.
import type { Gateway } from '../gateway.ts';
import { runSync } from './engine.ts';
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

const services = new Set<SyncService>();

/** Stop the runs of every service of this process (plugin stop, before the database closes). */
export function stopSyncs(): void {
  for (const s of services) s.stop();
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class SyncService {
  readonly runs: SyncRuns;
  private readonly active = new Map<number, Active>();

  constructor(private readonly gw: Gateway) {
    this.runs = new SyncRuns(gw.db.db, () => new Set(this.active.keys()));
    services.add(this);
  }

  /** Why this gateway cannot sync (a configuration matter), or undefined. */
  unavailable(): string | undefined {
    if (!this.gw.store) return 'sync needs content_backend: local (this gateway serves content from pulp_endpoint)';
    if (!this.gw.ctx.global.foreman_url) return 'sync needs a main server: foreman_url is unset (standalone mode)';
    return undefined;
  }

  /** Start a run unless one is running (in any worker). */
  start(repositories: string[] | null): { run: SyncRun } | { running: SyncRun } {
    const started = this.runs.start(repositories);
    if ('run' in started) this.execute(started.run);
    return started;
  }

  get(id: number): SyncRun | undefined {
    this.runs.reap();
    return this.runs.get(id);
  }

  latest(): SyncRun | undefined {
    this.runs.reap();
    return this.runs.latest();
  }

  stop(): void {
    for (const [id, a] of this.active) {
      a.stopping = true;
      a.quiet();
      a.controller.abort();
      this.runs.finish(id, 'interrupted', a.progress, 'interrupted: the daemon stopped (run the sync again to resume)');
    }
    this.active.clear();
    services.delete(this);
  }

  private execute(run: SyncRun): void {
    const { gw } = this;
    const s = gw.settings;
    let pending: NodeJS.Timeout | undefined;
    const quiet = () => {
      clearTimeout(pending);
      clearInterval(heartbeat);
    };
    const a: Active = { controller: new AbortController(), progress: emptyProgress(), stopping: false, quiet };
    this.active.set(run.id, a);
    const flush = () => {
      pending = undefined;
      if (!a.stopping) this.runs.update(run.id, a.progress);
    };
    const changed = () => {
      if (pending) return;
      pending = setTimeout(flush, FLUSH_MS);
    };
    const heartbeat = setInterval(flush, HEARTBEAT_MS);
    const registry = gw.main!.proxyReader({
      retries: s.sync_retries,
      signal: a.controller.signal,
      onRetry: (notice) => {
        if (notice) gw.logger.warn(`sync #${run.id}: ${notice.message}`);
        else gw.logger.info(`sync #${run.id}: the main server answers again`);
        if (notice) a.progress.retrying = notice;
        else delete a.progress.retrying;
        changed();
      },
    });
    const what = run.repositories ? `${run.repositories.length} repositories` : 'the catalog';
    gw.logger.info(`sync #${run.id}: started (${what} of ${registry.url})`);
    const job = runSync({
      store: gw.store!,
      source: registry,
      repositories: run.repositories,
      concurrency: s.sync_concurrency,
      signal: a.controller.signal,
      progress: a.progress,
      changed,
      repositoryDone: () => gw.manifests.clear(),
      log: { info: (m) => gw.logger.info(m), warn: (m) => gw.logger.warn(m) },
      abort: (err) => {
        a.reason ??= err;
        a.controller.abort();
      },
    });
    const refreshed = job.then(async (result) => {
      const r = await refreshAccess(gw, result.repositories, s.sync_concurrency, { warn: (m) => gw.logger.warn(m) });
      gw.logger.info(`sync #${run.id}: ${r.public} of ${result.repositories.length} repositories public (Katello's anonymous catalog), ${r.hosts} content host mappings refreshed`);
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
      .then(({ state, error }) => {
        quiet();
        registry.close();
        if (a.stopping) return;
        this.active.delete(run.id);
        this.runs.finish(run.id, state, a.progress, error);
        const p = a.progress;
        const summary = `${p.repositories.done}/${p.repositories.total} repositories, ${p.blobs.transferred} blobs (${p.bytes} bytes) downloaded${p.untagged?.length ? `, ${p.untagged.length} without tags on the main server (synced as empty)` : ''}`;
        if (state === 'succeeded') gw.logger.info(`sync #${run.id}: succeeded: ${summary}`);
        else gw.logger.error(`sync #${run.id}: failed: ${error} (${summary})`);
      })
      .catch((err: unknown) => gw.logger.error(`sync #${run.id}: could not record its end: ${message(err)}`));
  }
}
