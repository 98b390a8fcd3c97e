// A blob read the store cannot answer (on_demand and streamed policies): the
// on-demand backend calls this once it decided the read is a miss. A GET
// joins or starts the one download of the digest (BlobFetches) and streams
// it as it arrives, its end given only once verified; the blob is then
// linked to the repository, even if this client went away. A HEAD asks
// upstream for the size only. The streamed policy relays each client's own
// upstream body, verified the same way, and keeps nothing. An unreachable
// main server answers 503 at once; a blob it does not have, 404.
import { createHash } from 'node:crypto';
import type http from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Response } from 'express';
import { isSha256Digest } from '../oci/grammar.ts';
import { RegistryError } from '../oci/errors.ts';
import { BlobFetchError, type BlobFetches } from '../store/blob-fetches.ts';
import type { LocalStore } from '../store/local-store.ts';
import { UpstreamError } from '../upstream/http-upstream.ts';
import { MainRegistryError, MainRegistryUnavailable } from '../upstream/main-registry.ts';
import type { Exchange } from './content-backend.ts';
import type { OnDemandStats } from './on-demand-stats.ts';
import { answerBlobRange, type ByteRange } from './range.ts';
import { sendArriving, sendFile } from './stream-file.ts';

export interface OnDemandBlobDeps {
  store: LocalStore;
  /** The store's one set of downloads (shared with sync). */
  fetches: BlobFetches;
  /** The blob from the main server, as this proxy's own account (response head; redirects followed). */
  open(name: string, digest: string, method: 'GET' | 'HEAD'): Promise<http.IncomingMessage>;
  /** false: the streamed policy (relay, store nothing). */
  keep: boolean;
  stats: OnDemandStats;
}

/** A failure to get the blob from upstream, as the client's answer. Anything else is rethrown (a 500). */
export function upstreamFailure(err: unknown, digest: string): unknown {
  const status = err instanceof BlobFetchError || err instanceof MainRegistryError ? err.status : undefined;
  if (status === 404) return new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
  if (status !== undefined) return new RegistryError('UNAVAILABLE', `the main server answered ${status} for the blob`);
  if (err instanceof MainRegistryUnavailable || err instanceof BlobFetchError || (err instanceof UpstreamError && err.kind !== 'aborted')) {
    return new RegistryError('UNAVAILABLE', `the main server is unreachable: ${(err as Error).message}`);
  }
  return err;
}

/** The answer's head for a blob of `size` bytes (when known), with one Range → 206; the range to send. */
function answerHead(res: Response, digest: string, size: number | undefined, rangeHeader: string | undefined): Exclude<ByteRange, 'unsatisfiable'> {
  res.set({ 'Docker-Content-Digest': digest, 'Content-Type': 'application/octet-stream', ETag: `"${digest}"` });
  if (size === undefined) {
    // Size unknown until the end (no Content-Length upstream): the whole blob, chunked.
    res.status(200);
    return undefined;
  }
  return answerBlobRange(res, rangeHeader, size);
}

function contentLength(up: http.IncomingMessage): number | undefined {
  const header = up.headers['content-length'];
  return header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined;
}

/** GET/HEAD of a blob the repository does not hold (or the store lacks). */
export async function serveBlobOnDemand(x: Exchange, digest: string, deps: OnDemandBlobDeps): Promise<void> {
  const { req, res, access } = x;
  if (!isSha256Digest(digest)) throw new RegistryError('DIGEST_INVALID', `unsupported digest '${digest}'`, { digest });
  const link = async (size: number) => {
    if (access.repositoryId !== undefined) await deps.store.index.linkBlob(access.repositoryId, digest, size);
  };
  const stored = await deps.store.blobs.stat(digest);
  if (stored) {
    // Fetched for another repository (or by sync): this one now holds it too.
    await link(stored.size);
    const range = answerHead(res, digest, stored.size, req.get('range'));
    if (req.method === 'HEAD' || stored.size === 0) return void res.end();
    return sendFile(deps.store.blobs.path(digest), range ?? { start: 0, end: stored.size - 1 }, res);
  }
  if (req.method === 'HEAD') return head(x, digest, deps);
  if (!deps.keep) return relay(x, digest, deps);

  const { blob, started } = deps.fetches.fetch(digest, () => deps.open(access.name, digest, 'GET'));
  if (started) {
    blob.done.then(
      ({ downloaded }) => downloaded > 0 && deps.stats.fetched(downloaded),
      (err: unknown) => req.log.warn(`on-demand fetch of ${access.name}@${digest} failed: ${(err as Error).message}`),
    );
  }
  // Linked once verified, whether or not this client stays to the end.
  blob.done.then(({ size }) => link(size), () => undefined).catch((err: unknown) => req.log.warn(`on-demand: ${access.name}@${digest} not linked: ${(err as Error).message}`));
  let size: number | undefined;
  try {
    ({ size } = await blob.ready);
  } catch (err) {
    throw upstreamFailure(err, digest);
  }
  const range = answerHead(res, digest, size, req.get('range'));
  if (size === 0) return void res.end();
  await sendArriving(blob, range, res); // a failed fetch or a client gone: the connection is closed
}

/** HEAD: the size from the fetch in flight, else from an upstream HEAD (no body fetched). */
async function head(x: Exchange, digest: string, deps: OnDemandBlobDeps): Promise<void> {
  const { req, res, access } = x;
  const running = deps.fetches.current(digest);
  let size = running?.state === 'running' || running?.state === 'done' ? running.size : undefined;
  if (size === undefined) {
    let up: http.IncomingMessage;
    try {
      up = await deps.open(access.name, digest, 'HEAD');
    } catch (err) {
      throw upstreamFailure(err, digest);
    }
    up.resume();
    if (up.statusCode !== 200) throw upstreamFailure(new BlobFetchError(`HEAD answered ${up.statusCode}`, up.statusCode), digest);
    size = contentLength(up);
  }
  answerHead(res, digest, size, req.get('range'));
  res.end();
}

/**
 * Passes the bytes of `range` (or all), hashing everything; the last chunk is
 * held back until the end proves the digest and size, so a wrong body is cut
 * off, never completed.
 */
class Verified extends Transform {
  private readonly hash = createHash('sha256');
  private seen = 0;
  private held: Buffer | undefined;

  constructor(
    private readonly digest: string,
    private readonly size: number | undefined,
    private readonly range: { start: number; end: number } | undefined,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const at = this.seen;
    this.seen += chunk.length;
    if (this.size !== undefined && this.seen > this.size) return done(new Error(`the main server sent more than ${this.size} bytes of ${this.digest}`));
    this.hash.update(chunk);
    const from = this.range ? Math.max(0, this.range.start - at) : 0;
    const to = this.range ? Math.min(chunk.length, this.range.end + 1 - at) : chunk.length;
    if (this.held) this.push(this.held);
    this.held = undefined;
    const part = from < to ? chunk.subarray(from, to) : undefined;
    // Only a body that reaches the blob's end could pass for a complete blob: a range short of it goes out at once.
    if (part && this.range && this.size !== undefined && this.range.end + 1 < this.size) this.push(part);
    else this.held = part;
    done();
  }

  override _flush(done: TransformCallback): void {
    const actual = `sha256:${this.hash.digest('hex')}`;
    if (this.size !== undefined && this.seen !== this.size) return done(new Error(`the main server sent ${this.seen} of ${this.size} bytes of ${this.digest}`));
    if (actual !== this.digest) return done(new Error(`the main server sent content of digest ${actual} for ${this.digest}`));
    if (this.held) this.push(this.held);
    done();
  }

  get bytes(): number {
    return this.seen;
  }
}

/** The streamed policy: this client's own upstream request, relayed and verified, nothing stored. */
async function relay(x: Exchange, digest: string, deps: OnDemandBlobDeps): Promise<void> {
  const { req, res, access } = x;
  let up: http.IncomingMessage;
  try {
    up = await deps.open(access.name, digest, 'GET');
  } catch (err) {
    throw upstreamFailure(err, digest);
  }
  if (up.statusCode !== 200) {
    up.resume();
    throw upstreamFailure(new BlobFetchError(`GET answered ${up.statusCode}`, up.statusCode), digest);
  }
  const size = contentLength(up);
  let range;
  try {
    range = answerHead(res, digest, size, req.get('range'));
  } catch (err) {
    up.destroy();
    throw err;
  }
  const verified = new Verified(digest, size, range);
  try {
    await pipeline(up, verified, res);
  } catch (err) {
    // A client that went away is no news; a broken or lying upstream is.
    if ((err as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') req.log.warn(`streamed blob ${access.name}@${digest}: ${(err as Error).message}`);
    res.destroy();
  } finally {
    deps.stats.fetched(verified.bytes);
  }
}
