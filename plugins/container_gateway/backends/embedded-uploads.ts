// Blob uploads to the embedded store: a session, a monolithic upload or a
// cross-repository mount; chunks in order only (416 otherwise). Bytes go to a
// temporary file, are verified against the digest, then renamed: never a
// partial blob.
//
// An upload another node is writing right now (a second request on the same
// session at once, e.g. a retry through the load balancer) is answered as a
// chunk the upload cannot take at its place (out of order): 416 RANGE_INVALID,
// with the Range held so far; the client asks where to resume (GET) and goes
// on from there, and nothing of the other request's write is disturbed.
import type { Request, Response } from 'express';
import { RegistryError } from '../oci/errors.ts';
import type { LocalStore } from '../store/local-store.ts';
import { DigestMismatchError, SizeMismatchError, UploadBusyError, UploadRangeError } from '../store/blob-store.ts';
import { checkDigest, isSha256Digest } from '../oci/grammar.ts';

function uploadHeaders(req: Request, res: Response, name: string, uuid: string, size: number): void {
  res.set({
    Location: `${req.baseUrl}/${name}/blobs/uploads/${uuid}`,
    'Docker-Upload-UUID': uuid,
    // Inclusive end, no "bytes=": docker parses it as %d-%d.
    Range: `0-${Math.max(0, size - 1)}`,
  });
}

function blobCreated(req: Request, res: Response, name: string, digest: string): void {
  res.status(201).set({ Location: `${req.baseUrl}/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' });
  res.end();
}

function hasBody(req: Request): boolean {
  const length = req.get('content-length');
  return (length !== undefined && length !== '0') || req.get('transfer-encoding') !== undefined;
}

function digestParam(req: Request): string | undefined {
  const d = req.query.digest;
  if (d === undefined) return undefined;
  if (typeof d !== 'string') throw new RegistryError('DIGEST_INVALID', 'digest must be given once');
  checkDigest(d);
  // The store verifies sha256; refuse others before any state changes.
  const shown = d.slice(0, 80);
  if (isSha256Digest(d)) return d;
  throw new RegistryError('DIGEST_INVALID', `only sha256 digests are supported, got '${shown}'`);
}

function mapStoreError(err: unknown): never {
  if (err instanceof DigestMismatchError) throw new RegistryError('DIGEST_INVALID', err.message);
  if (err instanceof SizeMismatchError) throw new RegistryError('SIZE_INVALID', err.message);
  throw err;
}

export async function startUpload(store: LocalStore, req: Request, res: Response, name: string, repositoryId: number, canPull: (repo: string) => Promise<boolean>): Promise<void> {
  const mount = isSha256Digest(req.query.mount) ? req.query.mount : undefined;
  if (mount) {
    const from = typeof req.query.from === 'string' ? req.query.from : undefined;
    const source = from ? await store.index.repositoryId(from) : undefined;
    const mountable = from
      ? source !== undefined && (await canPull(from)) && (await store.index.blobInRepository(source, mount)) !== undefined
      : await someReadable(await store.index.repositoriesLinking(mount), canPull);
    const info = mountable ? await store.blobs.stat(mount) : undefined;
    if (info) {
      await store.index.linkBlob(repositoryId, mount, info.size);
      return blobCreated(req, res, name, mount);
    }
    // Unable to mount: open a session instead (202), as the spec says.
  }
  const digest = digestParam(req);
  if (digest && hasBody(req)) {
    const { size } = await store.blobs.ingest(digest, req).catch(mapStoreError);
    await store.index.linkBlob(repositoryId, digest, size);
    return blobCreated(req, res, name, digest);
  }
  const uuid = await store.index.startUpload(repositoryId);
  await store.blobs.createUpload(uuid);
  uploadHeaders(req, res, name, uuid, 0);
  res.status(202).set('Content-Length', '0').end();
}

async function someReadable(names: string[], canPull: (repo: string) => Promise<boolean>): Promise<boolean> {
  for (const name of names) if (await canPull(name)) return true;
  return false;
}

async function session(store: LocalStore, repositoryId: number, uuid: string): Promise<void> {
  if (!/^[0-9a-f-]{36}$/.test(uuid) || (await store.index.uploadRepository(uuid)) !== repositoryId) {
    throw new RegistryError('BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry', { uuid });
  }
}

export async function patchUpload(store: LocalStore, req: Request, res: Response, name: string, repositoryId: number, uuid: string): Promise<void> {
  await session(store, repositoryId, uuid);
  const size = await appendChunk(store, req, res, name, uuid, chunkStart(req));
  uploadHeaders(req, res, name, uuid, size);
  res.status(202).set('Content-Length', '0').end();
}

/** Where a chunk's Content-Range says it starts (undefined without one); malformed → 416, length mismatch → 400. */
function chunkStart(req: Request): number | undefined {
  const contentRange = req.get('content-range');
  if (contentRange === undefined) return undefined;
  const m = /^(\d+)-(\d+)$/.exec(contentRange.trim());
  if (!m || Number(m[2]) < Number(m[1])) throw new RegistryError('BLOB_UPLOAD_INVALID', `Content-Range must be <start>-<end>, got '${contentRange.slice(0, 100)}'`, undefined, 416);
  const start = Number(m[1]);
  const length = req.get('content-length');
  if (length !== undefined && Number(length) !== Number(m[2]) - start + 1) {
    throw new RegistryError('SIZE_INVALID', `Content-Length ${length} does not match Content-Range ${contentRange}`);
  }
  return start;
}

/** Append the body at `start` (when given, it must be the upload's size: else 416 and nothing written). */
async function appendChunk(store: LocalStore, req: Request, res: Response, name: string, uuid: string, start: number | undefined): Promise<number> {
  try {
    return await store.blobs.append(uuid, req, start === undefined ? {} : { start });
  } catch (err) {
    if (err instanceof UploadRangeError) {
      uploadHeaders(req, res, name, uuid, err.size);
      throw new RegistryError('RANGE_INVALID', `the chunk must start at ${err.size}`, { expectedStart: err.size });
    }
    return busy(store, req, res, name, uuid, err);
  }
}

/** Another request holds the upload: 416 with what it holds so far (see the header); any other error is rethrown. */
async function busy(store: LocalStore, req: Request, res: Response, name: string, uuid: string, err: unknown): Promise<never> {
  if (!(err instanceof UploadBusyError)) throw err;
  uploadHeaders(req, res, name, uuid, (await store.blobs.uploadSize(uuid).catch(() => undefined)) ?? 0);
  throw new RegistryError('RANGE_INVALID', 'another request is writing to this upload: ask where it stands (GET) and resume from there', { uuid });
}

export async function finishUpload(store: LocalStore, req: Request, res: Response, name: string, repositoryId: number, uuid: string): Promise<void> {
  await session(store, repositoryId, uuid);
  const digest = digestParam(req);
  if (!digest) throw new RegistryError('DIGEST_INVALID', 'the digest query parameter is required to complete an upload');
  // A final chunk is held to the same Content-Range rules as a PATCH.
  const start = chunkStart(req);
  if (hasBody(req) || start !== undefined) await appendChunk(store, req, res, name, uuid, start);
  try {
    const { size } = await store.blobs.commit(uuid, digest);
    await store.index.linkBlob(repositoryId, digest, size);
  } catch (err) {
    if (err instanceof UploadBusyError) return busy(store, req, res, name, uuid, err);
    // A failed verification ends the session: the client starts over.
    await store.index.endUpload(uuid);
    await store.blobs.cancel(uuid).catch(() => undefined);
    mapStoreError(err);
  }
  await store.index.endUpload(uuid);
  blobCreated(req, res, name, digest);
}

export async function uploadStatus(store: LocalStore, req: Request, res: Response, name: string, repositoryId: number, uuid: string): Promise<void> {
  await session(store, repositoryId, uuid);
  const size = await store.blobs.uploadSize(uuid);
  if (size === undefined) throw new RegistryError('BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry', { uuid });
  uploadHeaders(req, res, name, uuid, size);
  res.status(204).end();
}

export async function cancelUpload(store: LocalStore, res: Response, repositoryId: number, uuid: string): Promise<void> {
  await session(store, repositoryId, uuid);
  // The file first: an upload another node is writing stays whole (and known).
  await store.blobs.cancel(uuid).catch((err: unknown) => {
    if (err instanceof UploadBusyError) throw new RegistryError('RANGE_INVALID', 'another request is writing to this upload: cancel it once that has ended', { uuid });
    throw err;
  });
  await store.index.endUpload(uuid);
  res.status(204).end();
}
