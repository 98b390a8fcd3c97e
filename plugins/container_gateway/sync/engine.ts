// One sync run: the repositories (the main server's catalog for the proxy's
// identity, or those asked for), then per repository its tags, each tag's
// manifest with its blobs, and local tags the main server no longer has are
// dropped. Parallel within `concurrency` transfers, blobs deduplicated by
// digest. Resumable by construction: a tag whose manifest is stored complete
// is skipped, a blob already in the store is linked, not downloaded, and a
// blob only becomes visible once BlobStore.ingest has verified it.
import { validRepositoryName } from '../auth/standalone.ts';
import type { LocalStore } from '../store/local-store.ts';
import { MainRegistryError, MainRegistryUnavailable } from '../upstream/main-registry.ts';
import { manifestComplete, MirrorError, type RegistryFetch, type StoreMirror } from './mirror.ts';
import { MANIFEST_ACCEPT, parseManifest } from '../oci/manifest.ts';
import { TAG } from '../oci/grammar.ts';
import { Limiter, limitedFetch, mapLimit } from './pool.ts';
import type { SyncProgress } from './runs.ts';

/** What the sync reads from the main server (MainRegistry implements it). */
export interface SyncSource {
  fetch: RegistryFetch;
  catalog(): Promise<string[]>;
  tags(name: string): Promise<string[]>;
}

export interface SyncJob {
  /** The embedded store, and the downloads in flight into it. */
  mirror: StoreMirror;
  source: SyncSource;
  /** null: every repository of the catalog. */
  repositories: string[] | null;
  concurrency: number;
  signal: AbortSignal;
  /** Updated in place; `changed` is called after every update. */
  progress: SyncProgress;
  changed(): void;
  /** A repository's tags changed (e.g. to drop cached manifests). */
  repositoryDone?(name: string): Promise<void>;
  log: { info(msg: string): void; warn(msg: string): void };
  /** A failure that ends the run: stop the rest now (requests in flight, backoff waits). */
  abort(err: unknown): void;
}

export interface SyncResult {
  /** The repositories of the run (valid names), mirrored or not. */
  repositories: string[];
  /** Repositories (or tags) that could not be mirrored; the others were. */
  failures: Array<{ repository: string; error: string }>;
}

/** Failures that concern one repository or tag; anything else (main server down, disk full, stopped) ends the run. */
function local(err: unknown, signal: AbortSignal): boolean {
  if (signal.aborted || err instanceof MainRegistryUnavailable) return false;
  return err instanceof MirrorError || (err instanceof MainRegistryError && err.status !== undefined && err.status < 500);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Every tag of a repository in the index. */
async function localTags(store: LocalStore, repositoryId: number): Promise<string[]> {
  const out: string[] = [];
  for (let page = await store.index.tags(repositoryId, undefined, 1000); page.length > 0; page = await store.index.tags(repositoryId, page[page.length - 1], 1000)) out.push(...page);
  return out;
}

export async function runSync(job: SyncJob): Promise<SyncResult> {
  const { mirror, progress, signal } = job;
  const store = mirror.store;
  const failures: SyncResult['failures'] = [];
  const names = [...new Set(job.repositories ?? (await job.source.catalog()))].sort();
  const valid = names.filter((n) => {
    if (validRepositoryName(n)) return true;
    failures.push({ repository: n, error: 'not a valid repository name' });
    return false;
  });
  progress.repositories.total = valid.length;
  job.changed();
  const fatal = (err: unknown) => {
    if (!signal.aborted) job.abort(err);
    return err;
  };
  // One bound for every transfer, however repositories, tags and blobs nest.
  const fetch = limitedFetch(job.source.fetch, new Limiter(job.concurrency));

  // A repository the catalog lists whose tag list is unknown (404) has no
  // tags there (a push that failed after its blobs): it is synced as empty.
  // A repository asked for by name that is unknown stays a failure (a typo).
  const fromCatalog = job.repositories === null;
  const upstreamTags = async (name: string): Promise<string[]> => {
    try {
      return await job.source.tags(name);
    } catch (err) {
      if (!fromCatalog || signal.aborted || !(err instanceof MainRegistryError) || err.status !== 404) throw err;
      job.log.info(`sync: ${name}: the main server lists it without tags (tags/list answered 404): synced as empty`);
      return [];
    }
  };

  const syncTag = async (name: string, repositoryId: number, tag: string) => {
    // Known digest, stored complete: nothing to transfer, at most the tag moves.
    const head = await fetch('HEAD', `/${name}/manifests/${tag}`, { Accept: MANIFEST_ACCEPT });
    head.resume();
    const digest = head.headers['docker-content-digest'];
    const stored = head.statusCode === 200 && typeof digest === 'string' ? await manifestComplete(store, repositoryId, digest) : undefined;
    if (stored !== undefined) {
      // Its blobs count as done: every run's totals cover the whole content.
      progress.blobs.total += stored;
      progress.blobs.done += stored;
      job.changed();
      if ((await store.index.tagged(repositoryId, tag))?.digest !== digest) {
        const m = await store.index.manifest(repositoryId, digest as string);
        // Deleted since it was found complete: fetched again below.
        if (m) {
          const parsed = parseManifest(m.content, m.mediaType);
          await store.index.putManifest(repositoryId, { ...m, children: [...parsed.blobs, ...parsed.manifests] }, tag);
          return;
        }
      } else return;
    }
    await mirror.manifest(fetch, name, repositoryId, tag, {
      concurrency: job.concurrency,
      onBlobsFound: (n) => {
        progress.blobs.total += n;
        job.changed();
      },
      onBlob: (bytes) => {
        progress.blobs.done++;
        if (bytes > 0) progress.blobs.transferred++;
        job.changed();
      },
      // Bytes as they arrive, so the bar moves within a big blob too.
      onBytes: (n) => {
        progress.bytes += n;
        job.changed();
      },
    });
  };

  const syncRepository = async (name: string) => {
    const upstream = await upstreamTags(name);
    if (upstream.length === 0) {
      (progress.untagged ??= []).push(name);
      progress.untagged.sort();
    }
    const tags = upstream.filter((t) => TAG.test(t));
    if (tags.length < upstream.length) job.log.warn(`sync: ${name}: ${upstream.length - tags.length} tags with invalid names skipped`);
    // A new repository is private until the main server says otherwise (repository_list).
    const repositoryId = await store.index.ensureRepository(name, undefined);
    progress.tags.total += tags.length;
    job.changed();
    const failed: string[] = [];
    await mapLimit(tags, job.concurrency, async (tag) => {
      if (signal.aborted) throw new MainRegistryError('the sync was stopped');
      try {
        await syncTag(name, repositoryId, tag);
      } catch (err) {
        if (!local(err, signal)) throw fatal(err);
        failed.push(`${tag}: ${message(err)}`);
      }
      progress.tags.done++;
      job.changed();
    });
    const keep = new Set(upstream);
    const gone = (await localTags(store, repositoryId)).filter((t) => !keep.has(t));
    for (const t of gone) await store.index.deleteTag(repositoryId, t);
    if (gone.length > 0) job.log.info(`sync: ${name}: ${gone.length} tags no longer on the main server removed`);
    await job.repositoryDone?.(name);
    if (failed.length > 0) throw new MirrorError(`${failed.length} of ${tags.length} tags failed (${failed[0]}${failed.length > 1 ? ', ...' : ''})`);
  };

  await mapLimit(valid, job.concurrency, async (name) => {
    if (signal.aborted) throw new MainRegistryError('the sync was stopped');
    try {
      await syncRepository(name);
    } catch (err) {
      if (!local(err, signal)) throw fatal(err);
      failures.push({ repository: name, error: message(err) });
      job.log.warn(`sync: ${name}: ${message(err)}`);
    }
    progress.repositories.done++;
    job.changed();
  });
  return { repositories: valid, failures };
}
