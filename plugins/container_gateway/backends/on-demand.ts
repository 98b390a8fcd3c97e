// The download policies on_demand and streamed (smart-proxy mode, embedded
// store): a wrapper of the embedded backend that fetches what the store lacks
// from the main server, as this proxy's own account, instead of answering 404.
// Access was decided before: a client that may not read a repository never
// gets here, so never causes an upstream request.
//
// Manifests: a miss (by tag or digest) is fetched once however many clients
// ask at once (one promise per repository and reference), verified, stored
// (on_demand) and served as the store serves it; an index's children are
// fetched only when asked for. A stored tag is served without asking upstream
// for manifest_check_interval after its last check (kept in the database:
// workers and nodes share it); then one HEAD decides: same digest, changed
// (fetched, the tag moves, in the main server's order as for pushes), or
// gone. Digests never revalidate. Blobs: a hit is the inner backend's, a miss
// is the shared fetch (on-demand-blobs.ts). streamed: the same, but nothing fetched is kept.
//
// Main server unreachable: what is stored is served (a warning at most once
// per interval, and for a few seconds stale tags are served without asking),
// a miss answers 503 with Retry-After at once: requests here are never retried
// while a client waits.
import type { Logger } from '../../../lib/plugins/api.ts';
import { UNREACHABLE_RETRY_AFTER } from '../auth/katello-login.ts';
import { RegistryError } from '../oci/errors.ts';
import type { BlobFetches } from '../store/blob-fetches.ts';
import { manifestRecord } from '../store/content-index.ts';
import type { LocalStore } from '../store/local-store.ts';
import type { TagOrder } from '../store/tag-order.ts';
import type { MainRegistry } from '../upstream/main-registry.ts';
import type { ContentBackend, ContentWrites, Exchange, ManifestReference } from './content-backend.ts';
import { serveBlobOnDemand } from './on-demand-blobs.ts';
import { fetchManifest, headTag, MainUnreachable, sendManifest, unreachable, type FetchedManifest } from './on-demand-manifests.ts';
import type { TagChecks } from './on-demand-records.ts';
import { failedUpstream, servedFrom } from '../metrics.ts';
import { UpstreamError } from '../upstream/http-upstream.ts';
import type { OnDemandStats } from './on-demand-stats.ts';

export interface OnDemandDependencies {
  store: LocalStore;
  tagOrder: TagOrder;
  /** The main server's registry as this proxy's account, with no retries (made once, closed by its owner). */
  main: MainRegistry;
  fetches: BlobFetches;
  checks: TagChecks;
  stats: OnDemandStats;
  policy: 'on_demand' | 'streamed';
  /** manifest_check_interval in ms (0: every tag read asks upstream). */
  checkIntervalMs: number;
  logger: Logger;
}

/** How a manifest read is answered, decided once for every request waiting on it. */
type Resolution = { kind: 'stored' } | { kind: 'fetched'; manifest: FetchedManifest } | { kind: 'gone' };

export class OnDemandBackend implements ContentBackend {
  readonly writes?: ContentWrites;
  readonly referrers?: ContentBackend['referrers'];
  readonly ping?: ContentBackend['ping'];
  readonly flatpakIndex?: ContentBackend['flatpakIndex'];
  private readonly keep: boolean;
  /** Manifest reads in flight, by repository and reference: concurrent misses share one upstream request. */
  private readonly inflight = new Map<string, Promise<Resolution>>();
  /** Until then, stale tags are served without asking: the main server was just found unreachable. */
  private downUntil = 0;
  private lastWarning = 0;

  constructor(
    private readonly inner: ContentBackend,
    private readonly deps: OnDemandDependencies,
  ) {
    this.keep = deps.policy === 'on_demand';
    if (inner.writes) this.writes = inner.writes;
    if (inner.referrers) this.referrers = (x, digest) => inner.referrers!(x, digest);
    if (inner.ping) this.ping = (req) => inner.ping!(req);
    if (inner.flatpakIndex) this.flatpakIndex = (x, query) => inner.flatpakIndex!(x, query);
  }

  async getManifest(x: Exchange, ref: ManifestReference): Promise<void> {
    const repositoryId = x.access.repositoryId;
    // Readable but without a row cannot happen (access reads the same table); the store answers NAME_UNKNOWN.
    if (repositoryId === undefined) return this.inner.getManifest(x, ref);
    const key = `${repositoryId}\0${ref.reference}`;
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.resolve(x.access.name, repositoryId, ref).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    let r: Resolution;
    try {
      r = await pending;
    } catch (err) {
      throw this.failure(x, err);
    }
    if (r.kind === 'stored') {
      this.deps.stats.hit();
      return this.inner.getManifest(x, ref);
    }
    this.deps.stats.miss();
    servedFrom(x.res, 'main');
    if (r.kind === 'gone') throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to registry', { reference: ref.reference });
    if (this.keep) return this.inner.getManifest(x, ref);
    sendManifest(x.req, x.res, r.manifest, ref.reference);
  }

  async getBlob(x: Exchange, digest: string): Promise<void> {
    const { store, stats } = this.deps;
    const repositoryId = x.access.repositoryId;
    if (repositoryId === undefined || ((await store.index.blobInRepository(repositoryId, digest)) && (await store.blobs.stat(digest)))) {
      if (repositoryId !== undefined) stats.hit();
      return this.inner.getBlob(x, digest);
    }
    stats.miss();
    servedFrom(x.res, 'main');
    const main = this.deps.main;
    try {
      await serveBlobOnDemand(x, digest, {
        store,
        fetches: this.deps.fetches,
        keep: this.keep,
        stats,
        open: (name, d, method) =>
          main.request(method, `/${name}/blobs/${d}`).catch((err: unknown) => {
            throw unreachable(err) ? new MainUnreachable((err as Error).message) : err;
          }),
      });
    } catch (err) {
      if (x.res.headersSent) throw err;
      throw this.failure(x, err);
    }
  }

  tags(x: Exchange, last: string | undefined, limit: number): Promise<string[]> {
    return this.inner.tags(x, last, limit);
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }

  /** What a manifest read needs, asked of the main server only as far as needed. */
  private async resolve(name: string, repositoryId: number, ref: ManifestReference): Promise<Resolution> {
    const { store, checks } = this.deps;
    if (ref.isDigest) {
      if (await store.index.manifest(repositoryId, ref.reference)) return { kind: 'stored' };
      return this.fetch(name, repositoryId, ref);
    }
    const tag = ref.reference;
    const stored = await store.index.tagged(repositoryId, tag);
    if (!stored) return this.fetch(name, repositoryId, ref);
    const now = Date.now();
    const interval = this.deps.checkIntervalMs;
    if (interval > 0 && now - ((await checks.checkedAt(repositoryId, tag)) ?? 0) < interval) return { kind: 'stored' };
    if (now < this.downUntil) return { kind: 'stored' };
    let current: string | undefined | 'unknown';
    try {
      current = await headTag(this.deps.main, name, tag);
    } catch (err) {
      return this.servedAsStored(err, `${name}:${tag}`);
    }
    if (current === stored.digest) {
      await checks.checked(repositoryId, tag);
      return { kind: 'stored' };
    }
    // Moved (or the HEAD did not say where): GET it; gone: the tag goes here too.
    return this.fetch(name, repositoryId, ref, stored.digest);
  }

  /** GET a manifest upstream; keep it (on_demand) with its tag, placed in the main server's order. */
  private async fetch(name: string, repositoryId: number, ref: ManifestReference, storedDigest?: string): Promise<Resolution> {
    const { store, checks, stats } = this.deps;
    const tag = ref.isDigest ? undefined : ref.reference;
    const order = this.deps.tagOrder;
    // Taken before asking, like a push's after its 201: a push stored upstream later takes a higher one and wins.
    const ticket = tag !== undefined && this.keep ? await order.ticket(repositoryId, tag) : undefined;
    let m: FetchedManifest | undefined;
    try {
      m = await fetchManifest(this.deps.main, name, ref.reference);
    } catch (err) {
      if (storedDigest === undefined) throw err;
      return this.servedAsStored(err, `${name}:${ref.reference}`);
    }
    if (!m) {
      // Gone upstream: gone here too (streamed changes nothing stored).
      if (tag !== undefined && ticket !== undefined) {
        await order.settle(repositoryId, tag, ticket, undefined);
        await checks.forget(repositoryId, tag);
      }
      return { kind: 'gone' };
    }
    stats.fetched(m.body.length);
    if (!this.keep) return { kind: 'fetched', manifest: m };
    await store.index.putManifest(repositoryId, manifestRecord(m.digest, m.body, m.parsed));
    if (tag !== undefined && ticket !== undefined) {
      await order.settle(repositoryId, tag, ticket, m.digest);
      await checks.checked(repositoryId, tag);
    }
    return { kind: 'fetched', manifest: m };
  }

  /**
   * The main server could not tell where a stored tag points now: unreachable,
   * or refusing this proxy's account (e.g. no sync_username), or answering
   * oddly. What is stored is served; a definite 404 is the only way a tag goes.
   */
  private servedAsStored(err: unknown, what: string): Resolution {
    if (unreachable(err)) this.wentDown(err, `${what} is served as stored`);
    else if (err instanceof RegistryError) this.warnEvery(`on-demand: ${what} is served as stored: ${err.message}`);
    else throw err;
    return { kind: 'stored' };
  }

  private warnEvery(message: string): void {
    const now = Date.now();
    const every = this.deps.checkIntervalMs > 0 ? this.deps.checkIntervalMs : 60_000;
    if (now - this.lastWarning < every) return;
    this.lastWarning = now;
    this.deps.logger.warn(message);
  }

  /** The main server did not answer: remember it briefly, and say so at most once per interval. */
  private wentDown(err: unknown, consequence: string): void {
    const now = Date.now();
    this.downUntil = now + UNREACHABLE_RETRY_AFTER * 1000;
    this.warnEvery(`on-demand: the main server is unreachable (${(err as Error).message}): stored content is served (${consequence}), misses answer 503`);
  }

  /** A failed read as the client hears it: unreachable is 503 with Retry-After, at once. */
  private failure(x: Exchange, err: unknown): unknown {
    if (!unreachable(err)) return err;
    this.wentDown(err, 'a miss answered 503');
    failedUpstream(x.res, err instanceof UpstreamError ? err.kind : 'main_unreachable');
    x.res.set('Retry-After', String(UNREACHABLE_RETRY_AFTER));
    return new RegistryError('UNAVAILABLE', 'the main server is unreachable: this content is not stored here yet, try again later');
  }
}
