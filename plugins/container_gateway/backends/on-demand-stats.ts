// What on-demand serving did since the daemon started, for `proxyctl status`:
// reads served from the store (hits), reads that had to ask the main server
// (misses), and the bytes fetched from it.
import type { GatewayMetrics } from '../metrics.ts';

export class OnDemandStats {
  constructor(private readonly metrics?: GatewayMetrics) {}

  hits = 0;
  misses = 0;
  bytesFetched = 0;

  hit(): void {
    this.hits += 1;
    this.metrics?.onDemandRead(true);
  }

  miss(): void {
    this.misses += 1;
    this.metrics?.onDemandRead(false);
  }

  fetched(bytes: number): void {
    this.bytesFetched += bytes;
    this.metrics?.onDemandFetched(bytes);
  }
}
