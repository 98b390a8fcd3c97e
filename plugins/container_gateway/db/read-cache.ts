// The rows every registry request reads (its token, its repository, the
// manifest a tag points at), kept in each process on PostgreSQL: there each
// query is a round trip to the server, and a manifest GET made three of them
// (0.38x the requests per second of SQLite, whose reads stay in-process).
//
// Invariant: a read through the cache answers what the database held at some
// moment after the read was asked for, exactly as a query would; a change
// committed on any node before a request arrived is seen by that request.
// - Every cached table announces each change on commit (a statement trigger
//   calling pg_notify, PostgreSQL migration 4), whoever wrote it: a node,
//   `proxyctl`, an operator in psql.
// - Before answering, a read waits for the cluster's barrier: one round trip
//   on the connection that listens, after which every change committed before
//   the read began has been heard here (and has emptied the cache). Reads that
//   wait at the same time share one round trip.
// - A value loaded while a change was heard is returned but not kept.
// - No listening connection (the server restarted, the network dropped):
//   reads go to the database and nothing is kept until it listens again;
//   a new listening connection empties the cache (it may have missed news).
// On SQLite the database itself is the reader (db/open.ts): no cache.
import type { Cluster } from './cluster.ts';
import type { Sql, SqlQueries, SqlValue } from './sql.ts';

/** The read forms the cached call sites use (one row, one value): what a cached reader offers. */
export type Reads = Pick<SqlQueries, 'get' | 'value'>;

/** Where changes to cached tables are announced (migration 4's triggers; payload: the table). */
export const ROW_CHANGES = 'container_gateway_rows';

export interface ReadCacheLimits {
  /** Entries kept at most; the least recently used go first. */
  readonly entries: number;
  /** Bytes of row values kept at most (manifests are the big ones). */
  readonly bytes: number;
}

/** A token, repository and tag row is well under 1 KiB; a manifest a few KiB: ~10k entries stay within 16 MiB. */
export const DEFAULT_READ_CACHE_LIMITS: ReadCacheLimits = { entries: 10_000, bytes: 16 * 1024 * 1024 };

export interface ReadCacheStats {
  hits: number;
  misses: number;
  entries: number;
  bytes: number;
}

interface Entry {
  readonly value: unknown;
  readonly bytes: number;
}

/** Rough bytes of a row value: what it holds, plus a fixed cost per entry. */
function sizeOf(value: unknown): number {
  if (value === null || value === undefined) return 8;
  if (typeof value === 'string') return 2 * value.length;
  if (Buffer.isBuffer(value)) return value.length;
  if (typeof value === 'object') return Object.values(value).reduce<number>((n, v) => n + sizeOf(v), 32);
  return 8;
}

const keyPart = (p: SqlValue): string => (Buffer.isBuffer(p) ? `b${p.toString('hex')}` : p === null ? 'n' : `${typeof p}${String(p)}`);

/**
 * Reads through a per-process cache that a change anywhere empties. Cached
 * values are shared between callers: they never modify what they are given.
 */
export class CachedReads implements Reads {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;
  /** Counts the changes heard: a load that saw it move is not kept. */
  private generation = 0;
  /** The listening connection the entries were checked against. */
  private epoch: number | undefined;
  private stopListening: (() => Promise<void>) | undefined;
  private hits = 0;
  private misses = 0;

  private constructor(
    private readonly sql: Sql,
    private readonly cluster: Cluster,
    private readonly limits: ReadCacheLimits,
  ) {}

  /** A cache that listens for changes before it keeps anything. */
  static async open(sql: Sql, cluster: Cluster, limits: ReadCacheLimits = DEFAULT_READ_CACHE_LIMITS): Promise<CachedReads> {
    const cache = new CachedReads(sql, cluster, limits);
    cache.stopListening = await cluster.listen(ROW_CHANGES, { onPayload: () => cache.clear(), onMissed: () => cache.clear() });
    return cache;
  }

  get<T>(text: string, params?: readonly SqlValue[]): Promise<T | undefined> {
    return this.read('g', text, params, () => this.sql.get<T>(text, params));
  }
  value<T>(text: string, params?: readonly SqlValue[]): Promise<T | undefined> {
    return this.read('v', text, params, () => this.sql.value<T>(text, params));
  }

  /** Reads answered from the cache and passed to the database since start; entries and bytes kept now. */
  stats(): ReadCacheStats {
    return { hits: this.hits, misses: this.misses, entries: this.entries.size, bytes: this.bytes };
  }

  clear(): void {
    this.generation += 1;
    this.entries.clear();
    this.bytes = 0;
  }

  async close(): Promise<void> {
    this.clear();
    await this.stopListening?.();
    this.stopListening = undefined;
  }

  private async read<T>(form: string, text: string, params: readonly SqlValue[] | undefined, load: () => Promise<T>): Promise<T> {
    const epoch = await this.cluster.barrier();
    if (epoch === undefined || !this.stopListening) {
      this.clear();
      this.epoch = undefined;
      return load();
    }
    if (epoch !== this.epoch) {
      this.clear();
      this.epoch = epoch;
    }
    const key = `${form}\u0000${text}\u0000${(params ?? []).map(keyPart).join('\u0000')}`;
    const hit = this.entries.get(key);
    if (hit) {
      this.hits += 1;
      // Least recently used last: a hit moves to the end.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.value as T;
    }
    this.misses += 1;
    const generation = this.generation;
    const value = await load();
    if (generation === this.generation && epoch === this.epoch) this.keep(key, value);
    return value;
  }

  private keep(key: string, value: unknown): void {
    const bytes = sizeOf(value) + 2 * key.length;
    if (bytes > this.limits.bytes / 16) return;
    // Two reads that missed at once both load: the second replaces the first.
    const before = this.entries.get(key);
    if (before) {
      this.entries.delete(key);
      this.bytes -= before.bytes;
    }
    this.entries.set(key, { value, bytes });
    this.bytes += bytes;
    for (const [oldest, entry] of this.entries) {
      if (this.entries.size <= this.limits.entries && this.bytes <= this.limits.bytes) break;
      this.entries.delete(oldest);
      this.bytes -= entry.bytes;
    }
  }
}
