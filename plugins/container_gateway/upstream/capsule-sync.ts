// With content_backend: pulp, a push through the proxy reaches this proxy's
// Pulp only through a capsule sync. push_sync_trigger: capsule_sync asks
// Katello for one (POST /katello/api/capsules/:id/content/sync, katello-api.md
// §6) with the sync credentials. Pushes of several blobs and manifests come
// in bursts: the requests of one burst are folded into one sync.
import axios from 'axios';
import type { Logger } from '../../../lib/plugins/api.ts';
import type { Agent } from 'node:https';
import type { GatewaySettings } from '../settings.ts';

const QUIET_MS = 2000;

/** What a capsule-sync request needs: this proxy's settings, Foreman's URL and the TLS agent towards it. */
export interface CapsuleSyncTarget {
  settings: GatewaySettings;
  foreman: string | undefined;
  agent: Agent | undefined;
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
  const s = target.settings;
  const foreman = target.foreman;
  if (!foreman || s.capsule_id === undefined) return;
  const url = new URL(`katello/api/capsules/${s.capsule_id}/content/sync`, foreman).href;
  try {
    const res = await axios.post(url, {}, {
      ...(s.sync_username && s.sync_password ? { auth: { username: s.sync_username, password: s.sync_password } } : {}),
      headers: { Accept: 'application/json' },
      httpsAgent: target.agent,
      timeout: s.upstream_response_timeout * 1000,
      validateStatus: () => true,
      proxy: false,
    });
    if (res.status >= 200 && res.status < 300) log.info(`asked the main server to sync capsule ${s.capsule_id} after ${pushes === 1 ? 'a push' : `${pushes} pushes`}`);
    else log.warn(`capsule sync request answered ${res.status}: ${JSON.stringify(res.data).slice(0, 300)}`);
  } catch (err) {
    log.warn(`capsule sync request failed: ${(err as Error).message}`);
  }
}
