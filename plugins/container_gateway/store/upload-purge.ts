// The background purge of abandoned uploads: upload sessions and temporary
// files of failed or killed pushes, syncs and fetches that nobody wrote to
// for `upload_purge_age` are removed (as `proxyctl gc` does too), so repeated
// failures cannot fill the disk. Sessions in use are never touched (see
// blob-gc.ts purgeUploads).
import type { BlobStore, PurgeResult } from './blob-store.ts';

/** The purge runs at least this often, and never more often than every second. */
const MAX_INTERVAL_MS = 10 * 60 * 1000;
const MIN_INTERVAL_MS = 1000;

export interface PurgeLog {
  info(msg: string): void;
  error(msg: string): void;
}

export class UploadPurger {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly store: BlobStore,
    private readonly ageMs: number,
    private readonly log: PurgeLog,
  ) {}

  /** Every half purge age (bounded): a session is gone at most 1.5 × the age after its last write. */
  start(): void {
    const every = Math.min(MAX_INTERVAL_MS, Math.max(MIN_INTERVAL_MS, Math.floor(this.ageMs / 2)));
    this.timer = setInterval(() => this.tick(), every);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private tick(): void {
    if (this.running) return; // the previous pass is still going
    this.running = this.store
      .purgeUploads(this.ageMs)
      .then((r: PurgeResult) => {
        if (r.uploads > 0) this.log.info(`upload purge: ${r.uploads} abandoned uploads (${r.bytes} bytes) removed, idle for over ${Math.round(this.ageMs / 1000)} s`);
      })
      .catch((err: unknown) => this.log.error(`upload purge failed: ${err instanceof Error ? err.message : String(err)}`))
      .finally(() => (this.running = undefined));
  }
}
