// Blobs of the embedded store: GET/HEAD (with Range → 206) and DELETE (202).
import type { Request, Response } from 'express';
import { RegistryError } from '../../oci/errors.ts';
import type { Gateway } from '../../gateway.ts';
import { sendFile } from './stream-file.ts';
import { parseRange } from './range.ts';

export async function getBlob(gw: Gateway, req: Request, res: Response, repositoryId: number, digest: string): Promise<void> {
  const store = gw.localStore();
  const linked = store.index.blobInRepository(repositoryId, digest);
  const onDisk = linked && (await store.blobs.stat(digest));
  if (!onDisk) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
  const size = onDisk.size;
  res.set({ 'Docker-Content-Digest': digest, 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes', ETag: `"${digest}"` });
  const range = parseRange(req.get('range'), size);
  if (range === 'unsatisfiable') {
    res.set('Content-Range', `bytes */${size}`);
    throw new RegistryError('RANGE_INVALID', `the range is outside the blob's ${size} bytes`);
  }
  if (range) {
    res.status(206).set({ 'Content-Range': `bytes ${range.start}-${range.end}/${size}`, 'Content-Length': String(range.end - range.start + 1) });
  } else {
    res.status(200).set('Content-Length', String(size));
  }
  if (req.method === 'HEAD' || size === 0) {
    res.end();
    return;
  }
  await sendFile(store.blobs.path(digest), range ?? { start: 0, end: size - 1 }, res);
}

export function deleteBlob(gw: Gateway, res: Response, repositoryId: number, digest: string): void {
  if (!gw.localStore().index.unlinkBlob(repositoryId, digest)) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
  res.status(202).end();
}
