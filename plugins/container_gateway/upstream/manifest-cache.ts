// A small in-memory cache of manifests fetched from the backend, so that many
// hosts pulling the same tag cost one backend request, not one each. Access is
// still decided per request before the cache is consulted. Entries live for
// manifest_cache_ttl seconds, the whole cache is bounded in bytes, concurrent
// misses for one key share one fetch, and Katello's repository_list call (sent
// after every capsule sync) empties it so synced tags are fresh at once. Each
// process has its own; the gateway tells the others sharing its database
// when it empties its own (gateway.ts).

export interface CachedManifest {
  body: Buffer;
  contentType: string;
  digest: string;
}

interface Entry {
  value: CachedManifest;
  expires: number;
}

export class ManifestCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<unknown>>();
  private bytes = 0;

  constructor(
    private readonly ttlMs: number,
    private readonly maxBytes: number,
    /** Told of every lookup while the cache is on (metrics). */
    private readonly lookedUp: (hit: boolean) => void = () => {},
  ) {}

  get enabled(): boolean {
    return this.ttlMs > 0;
  }

  static key(name: string, reference: string, accept: string | undefined): string {
    return `${name}\u0000${reference}\u0000${accept ?? ''}`;
  }

  get(key: string): CachedManifest | undefined {
    const entry = this.entries.get(key);
    const fresh = entry !== undefined && entry.expires > Date.now();
    if (this.enabled) this.lookedUp(fresh);
    if (!entry) return undefined;
    if (!fresh) {
      this.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key: string, value: CachedManifest): void {
    if (!this.enabled || value.body.length > this.maxBytes / 4) return;
    this.delete(key);
    this.entries.set(key, { value, expires: Date.now() + this.ttlMs });
    this.bytes += value.body.length;
    // Maps iterate in insertion order: the oldest entries go first.
    for (const k of this.entries.keys()) {
      if (this.bytes <= this.maxBytes) break;
      this.delete(k);
    }
  }

  private delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.bytes -= entry.value.body.length;
    this.entries.delete(key);
  }

  /** Drop the entries of repository `name`, or every entry. */
  clear(name?: string): void {
    if (name === undefined) {
      this.entries.clear();
      this.bytes = 0;
      return;
    }
    const prefix = `${name}\u0000`; // as key() begins
    for (const k of [...this.entries.keys()]) if (k.startsWith(prefix)) this.delete(k);
  }

  /** Run `work` once for concurrent callers of the same key. */
  shared<T>(key: string, work: () => Promise<T>): Promise<T> {
    // With the cache off, every request goes to the backend, as the operator asked.
    if (!this.enabled) return work();
    const running = this.inflight.get(key) as Promise<T> | undefined;
    if (running) return running;
    const p = work().finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }
}
