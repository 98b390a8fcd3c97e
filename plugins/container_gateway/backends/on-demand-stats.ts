// What on-demand serving did since the daemon started, for `proxyctl status`:
// reads served from the store (hits), reads that had to ask the main server
// (misses), and the bytes fetched from it.
export class OnDemandStats {
  hits = 0;
  misses = 0;
  bytesFetched = 0;

  hit(): void {
    this.hits += 1;
  }

  miss(): void {
    this.misses += 1;
  }

  fetched(bytes: number): void {
    this.bytesFetched += bytes;
  }
}
