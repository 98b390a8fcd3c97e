// STAND-IN (H6's branch only): H5 owns this module (a blob the store lacks,
// fetched once and followed by every requester as its bytes arrive). This
// minimal version fetches the whole blob, then serves it, so that the
// on-demand backend can be tested before H5's lands; H5's replaces it.
import type http from 'node:http';
import { RegistryError } from '../oci/errors.ts';
import type { BlobFetches } from '../store/blob-fetches.ts';
import type { LocalStore } from '../store/local-store.ts';
import { streamTo } from '../upstream/stream.ts';
import type { Exchange } from './content-backend.ts';
import type { OnDemandStats } from './on-demand-stats.ts';
import { sendFile } from './stream-file.ts';

export interface OnDemandBlobDeps {
  store: LocalStore;
  fetches: BlobFetches;
  open(name: string, digest: string, method: 'GET' | 'HEAD'): Promise<http.IncomingMessage>;
  keep: boolean;
  stats: OnDemandStats;
}

export async function serveBlobOnDemand(x: Exchange, digest: string, deps: OnDemandBlobDeps): Promise<void> {
  const { req, res } = x;
  const repositoryId = x.access.repositoryId!;
  let size = deps.keep ? (await deps.store.blobs.stat(digest))?.size : undefined;
  if (size === undefined) {
    const up = await deps.open(x.access.name, digest, deps.keep ? 'GET' : (req.method as 'GET' | 'HEAD'));
    if (up.statusCode === 404) {
      up.resume();
      throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
    }
    if (up.statusCode !== 200) {
      up.resume();
      throw new RegistryError('UNAVAILABLE', `the main server answered ${up.statusCode}`, undefined, 502);
    }
    up.on('data', (c: Buffer) => deps.stats.fetched(c.length));
    if (!deps.keep) {
      res.status(200).set({ 'Docker-Content-Digest': digest, 'Content-Type': 'application/octet-stream', 'Content-Length': up.headers['content-length'] ?? '' });
      await streamTo(up, res);
      return;
    }
    size = (await deps.store.blobs.ingest(digest, up)).size;
  }
  deps.store.index.linkBlob(repositoryId, digest, size);
  res.status(200).set({ 'Docker-Content-Digest': digest, 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) });
  if (req.method === 'HEAD' || size === 0) return void res.end();
  await sendFile(deps.store.blobs.path(digest), { start: 0, end: size - 1 }, res);
}
