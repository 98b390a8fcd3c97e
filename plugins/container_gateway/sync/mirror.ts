// Copying content from the main server's registry into the embedded store,
// for sync and for the push path: a blob (downloaded only when the store
// lacks it, verified by the store before it becomes visible) and a manifest
// with everything it refers to (children first, so a stored manifest is
// always complete). One StoreMirror per store, made in setup and shared by
// sync and pushes; its blob downloads go through the store's BlobFetches, so
// a blob wanted by sync, pushes and on-demand reads at once is downloaded
// once; across processes the store's atomic renames make a double download
// harmless.
import { RegistryError } from '../oci/errors.ts';
import type { LocalStore } from '../store/local-store.ts';
import type { RegistryFetch } from '../oci/registry-fetch.ts';
import { DigestMismatchError, InvalidDigestError } from '../store/blob-store.ts';
import { MANIFEST_ACCEPT, MANIFEST_LIMIT, parseManifest } from '../oci/manifest.ts';
import { isSha256Digest, sha256Digest, TAG } from '../oci/grammar.ts';
import { manifestRecord } from '../store/content-index.ts';
import { readBounded } from '../upstream/http-upstream.ts';
import { lendBody } from '../upstream/lent-body.ts';
import { mapLimit } from './pool.ts';
import { BlobFetches, BlobFetchError } from '../store/blob-fetches.ts';

export type { RegistryFetch };

/** A blob body that breaks off is fetched again this many times in all (the fetch retries connection failures itself). */
const BODY_ATTEMPTS = 3;

/** The main server's content cannot be mirrored (unknown, refused, not what it claims to be). */
export class MirrorError extends Error {
  override readonly name = 'MirrorError';
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface MirrorOptions {
  /** Blobs of one manifest downloaded in parallel (default 4). */
  concurrency?: number;
  /** Each blob done: bytes downloaded (0 when the store had it). */
  onBlob?: (bytes: number, deduplicated: boolean) => void;
  /** Blobs a manifest about to be mirrored refers to (for progress totals). */
  onBlobsFound?: (count: number) => void;
  /** Bytes of blobs as they arrive (a retried download counts again). */
  onBytes?: (bytes: number) => void;
}

function isTag(reference: string): boolean {
  return TAG.test(reference);
}

/** The blob is in the store: make sure the repository links it. */
async function linkStored(store: LocalStore, repositoryId: number, digest: string): Promise<boolean> {
  if ((await store.index.blobInRepository(repositoryId, digest)) && (await store.blobs.stat(digest))) return true;
  const st = await store.blobs.stat(digest);
  if (!st) return false;
  // Link first, then look again: a gc that judged the file unreferenced
  // before the link may have removed it meanwhile; then download it anew.
  await store.index.linkBlob(repositoryId, digest, st.size);
  return (await store.blobs.stat(digest)) !== undefined;
}

/** Carries a failure that is not worth another attempt. */
class FinalFailure {
  constructor(readonly cause: unknown) {}
}

/** A download failure as sync reports it. */
function mirrorFailure(err: unknown, name: string, digest: string): unknown {
  if (err instanceof MirrorError) return err;
  if (err instanceof BlobFetchError) {
    return err.status !== undefined ? new MirrorError(`blob ${digest} of ${name}: the main server answered ${err.status}`, err.status) : new MirrorError(`blob ${digest} of ${name}: ${err.message}`);
  }
  if (err instanceof DigestMismatchError) return new MirrorError(`blob ${digest} of ${name} from the main server does not match its digest (${err.actual})`);
  return err;
}

/** Descriptor sizes by digest (config, layers), to check what the main server sends. */
function sizesOf(body: Buffer): Map<string, number> {
  const sizes = new Map<string, number>();
  const doc = JSON.parse(body.toString('utf8')) as { config?: { digest?: unknown; size?: unknown }; layers?: Array<{ digest?: unknown; size?: unknown }> };
  for (const d of [doc.config, ...(Array.isArray(doc.layers) ? doc.layers : [])]) {
    if (d && typeof d.digest === 'string' && typeof d.size === 'number') sizes.set(d.digest, d.size);
  }
  return sizes;
}

/** Copies into one embedded store; its blob downloads are the store's shared ones (BlobFetches). */
export class StoreMirror {
  constructor(
    readonly store: LocalStore,
    /** The store's downloads, shared with on-demand reads (one made here when the store has none yet). */
    readonly fetches: BlobFetches = new BlobFetches(store.blobs, undefined, lendBody),
  ) {}

  /**
   * Make sure the blob is in the store and linked to the repository; downloads
   * (verified by digest) only if the store lacks it, joining a download of it
   * already in flight. Returns bytes transferred (0 when deduplicated).
   */
  async blob(fetch: RegistryFetch, name: string, repositoryId: number, digest: string, size?: number, onBytes?: (n: number) => void): Promise<number> {
    const store = this.store;
    if (!isSha256Digest(digest)) throw new InvalidDigestError(digest);
    if (await linkStored(store, repositoryId, digest)) return 0;
    for (let attempt = 1; ; attempt++) {
      const { blob, started } = this.fetches.fetch(digest, () => fetch('GET', `/${name}/blobs/${digest}`), size === undefined ? {} : { size });
      let counted = 0;
      const unwatch =
        started && onBytes
          ? blob.watch((landed) => {
              onBytes(landed - counted);
              counted = landed;
            })
          : undefined;
      try {
        // A failure before the body (refused, unknown, unreachable) is final; a body that breaks off is fetched again.
        try {
          await blob.ready;
        } catch (err) {
          throw new FinalFailure(mirrorFailure(err, name, digest));
        }
        const { downloaded } = await blob.done;
        if (await linkStored(store, repositoryId, digest)) return started ? downloaded : 0;
        // Collected between placing and linking: fetch it anew.
      } catch (err) {
        if (err instanceof FinalFailure) throw err.cause;
        if (err instanceof DigestMismatchError) throw mirrorFailure(err, name, digest);
        if (attempt >= BODY_ATTEMPTS) throw err;
      } finally {
        unwatch?.();
      }
      if (attempt >= BODY_ATTEMPTS) throw new MirrorError(`blob ${digest} of ${name} vanished from the store ${attempt} times after its download`);
    }
  }

  /**
   * Fetch a manifest by tag or digest, mirror its blobs and child manifests (for an index) first, then store it (and the tag if `reference` is a tag).
   * Resolves with its digest, the blobs downloaded (0 when the store had them all) and their bytes.
   */
  async manifest(fetch: RegistryFetch, name: string, repositoryId: number, reference: string, opts: MirrorOptions = {}): Promise<{ digest: string; blobs: number; bytes: number }> {
    const byDigest = isSha256Digest(reference);
    if (!byDigest && !isTag(reference)) throw new MirrorError(`'${reference}' is neither a tag nor a sha256 digest`);
    const res = await fetch('GET', `/${name}/manifests/${reference}`, { Accept: MANIFEST_ACCEPT });
    const { body, complete } = await readBounded(res, MANIFEST_LIMIT).catch((err: Error) => {
      throw new MirrorError(`manifest ${name}:${reference}: ${err.message}`);
    });
    if (res.statusCode !== 200) throw new MirrorError(`manifest ${name}:${reference}: the main server answered ${res.statusCode}`, res.statusCode);
    if (!complete) throw new MirrorError(`manifest ${name}:${reference}: the body ended early`);
    const digest = sha256Digest(body);
    if (byDigest && digest !== reference) throw new MirrorError(`manifest ${name}@${reference}: the main server sent content of digest ${digest}`);
    const claimed = res.headers['docker-content-digest'];
    if (typeof claimed === 'string' && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new MirrorError(`manifest ${name}:${reference}: Docker-Content-Digest says ${claimed}, the content is ${digest}`);
    }
    let parsed;
    try {
      parsed = parseManifest(body, res.headers['content-type']);
    } catch (err) {
      throw new MirrorError(`manifest ${name}:${reference}: ${err instanceof RegistryError ? err.message : String(err)}`);
    }
    for (const d of [...parsed.blobs, ...parsed.manifests]) if (!isSha256Digest(d)) throw new MirrorError(`manifest ${name}:${reference} refers to ${d}: only sha256 digests are supported`);
    let blobs = 0;
    let bytes = 0;
    // Children of an index first, one at a time: each bounds its own blobs.
    for (const child of parsed.manifests) {
      const r = await this.manifest(fetch, name, repositoryId, child, opts);
      blobs += r.blobs;
      bytes += r.bytes;
    }
    const sizes = sizesOf(body);
    opts.onBlobsFound?.(parsed.blobs.length);
    await mapLimit(parsed.blobs, opts.concurrency ?? 4, async (d) => {
      const n = await this.blob(fetch, name, repositoryId, d, sizes.get(d), opts.onBytes);
      if (n > 0) blobs++;
      bytes += n;
      opts.onBlob?.(n, n === 0);
    });
    await this.store.index.putManifest(repositoryId, manifestRecord(digest, body, parsed), byDigest ? undefined : reference);
    return { digest, blobs, bytes };
  }
}

/**
 * Is this manifest stored in the repository with everything it refers to
 * (blob files included)? Resolves with the number of blobs it (with its
 * child manifests) refers to, or undefined when something is missing.
 */
export async function manifestComplete(store: LocalStore, repositoryId: number, digest: string): Promise<number | undefined> {
  const m = await store.index.manifest(repositoryId, digest);
  if (!m) return undefined;
  let parsed;
  try {
    parsed = parseManifest(m.content, m.mediaType);
  } catch {
    return undefined;
  }
  let blobs = parsed.blobs.length;
  for (const d of parsed.blobs) {
    if (!isSha256Digest(d) || !(await store.index.blobInRepository(repositoryId, d)) || !(await store.blobs.stat(d))) return undefined;
  }
  for (const d of parsed.manifests) {
    const n = await manifestComplete(store, repositoryId, d);
    if (n === undefined) return undefined;
    blobs += n;
  }
  return blobs;
}
