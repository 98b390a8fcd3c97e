// /v2/<name>/blobs/uploads/[<uuid>]: every step of a blob upload is a write.
import type { RepositoryPath, ResourceHandler, UploadPath } from './paths.ts';
import { writesOf } from './paths.ts';

export const startUpload: ResourceHandler<RepositoryPath> = (gw, x) => writesOf(gw).startUpload(x);
export const patchUpload: ResourceHandler<UploadPath> = (gw, x, p) => writesOf(gw).patchUpload(x, p.uuid);
export const finishUpload: ResourceHandler<UploadPath> = (gw, x, p) => writesOf(gw).finishUpload(x, p.uuid);
export const uploadStatus: ResourceHandler<UploadPath> = (gw, x, p) => writesOf(gw).uploadStatus(x, p.uuid);
export const cancelUpload: ResourceHandler<UploadPath> = (gw, x, p) => writesOf(gw).cancelUpload(x, p.uuid);
