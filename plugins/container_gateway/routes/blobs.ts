// /v2/<name>/blobs/<digest>.
import type { DigestPath, ResourceHandler } from './paths.ts';
import { writesOf } from './paths.ts';

export const getBlob: ResourceHandler<DigestPath> = (gw, x, p) => gw.content.getBlob(x, p.digest);
export const deleteBlob: ResourceHandler<DigestPath> = (gw, x, p) => writesOf(gw).deleteBlob(x, p.digest);
