// With content_backend: pulp, a push through the proxy reaches this proxy's
// Pulp only through a capsule sync, which push_sync_trigger: capsule_sync asks
// Katello for. Pushes of several blobs and manifests come in bursts: the
// requests of one burst are folded into one sync.
import type { Logger } from '../../../lib/plugins/api.ts';
import type { KatelloClient } from './katello.ts';

const QUIET_MS = 2000;

/** What a capsule-sync request needs: Katello, this proxy's id there, and the proxy's own account. */
export interface CapsuleSyncTarget {
  katello: KatelloClient;
  capsuleId: number | undefined;
  /** The Authorization of this proxy's account (sync credentials), if it has one. */
  authorization: string | undefined;
}

/** Requests folded per burst; the pending one is dropped by close(). */
export class CapsuleSyncTrigger {
  private pending: NodeJS.Timeout | undefined;
  /** Pushes folded into the sync that is pending. */
  private folded = 0;

  constructor(private readonly target: CapsuleSyncTarget) {}

  request(log: Logger): void {
    if (this.pending) clearTimeout(this.pending);
    this.folded += 1;
    this.pending = setTimeout(() => {
      const pushes = this.folded;
      this.pending = undefined;
      this.folded = 0;
      void requestSync(this.target, log, pushes);
    }, QUIET_MS);
    this.pending.unref();
  }

  close(): void {
    if (this.pending) clearTimeout(this.pending);
    this.pending = undefined;
  }
}

async function requestSync(target: CapsuleSyncTarget, log: Logger, pushes: number): Promise<void> {
  const id = target.capsuleId;
  if (id === undefined) return;
  try {
    const reply = await target.katello.capsuleSync(id, target.authorization);
    if (reply.status >= 200 && reply.status < 300) log.info(`asked the main server to sync capsule ${id} after ${pushes === 1 ? 'a push' : `${pushes} pushes`}`);
    else log.warn(`capsule sync request answered ${reply.status}: ${reply.text.slice(0, 300)}`);
  } catch (err) {
    // Nobody awaits this request: every failure ends here, in the log.
    log.warn(`capsule sync request failed: ${(err as Error).message}`);
  }
}
