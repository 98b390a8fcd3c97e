// The embedded store's route handlers, each after its access decision.
import type { Request, Response } from 'express';
import type { Gateway } from '../../gateway.ts';
import { RegistryError } from '../../oci/errors.ts';
import { authorizeLocal, canPull } from './access.ts';
import { deleteBlob, getBlob } from './blobs.ts';
import { localTags, referrers } from './discovery.ts';
import { deleteManifest, getManifest, putManifest } from './manifests.ts';
import { cancelUpload, finishUpload, patchUpload, startUpload, uploadStatus } from './uploads.ts';

function existing(id: number | undefined, name: string): number {
  if (id === undefined) throw new RegistryError('NAME_UNKNOWN', 'Repository name unknown', { name });
  return id;
}

export const local = {
  async manifest(gw: Gateway, req: Request, res: Response, name: string, reference: string, isDigest: boolean): Promise<void> {
    if (req.method === 'GET' || req.method === 'HEAD') {
      const { repositoryId } = await authorizeLocal(gw, req, res, name, 'pull');
      return getManifest(gw, req, res, existing(repositoryId, name), reference, isDigest);
    }
    if (req.method === 'PUT') {
      const { repositoryId, user } = await authorizeLocal(gw, req, res, name, 'push');
      // The repository is created only when the manifest is stored.
      return putManifest(gw, req, res, name, repositoryId, () => gw.localStore().index.ensureRepository(name, user), reference, isDigest);
    }
    const { repositoryId } = await authorizeLocal(gw, req, res, name, 'delete');
    return deleteManifest(gw, res, existing(repositoryId, name), reference, isDigest);
  },

  async blob(gw: Gateway, req: Request, res: Response, name: string, digest: string): Promise<void> {
    if (req.method === 'DELETE') {
      const { repositoryId } = await authorizeLocal(gw, req, res, name, 'delete');
      return deleteBlob(gw, res, existing(repositoryId, name), digest);
    }
    const { repositoryId } = await authorizeLocal(gw, req, res, name, 'pull');
    return getBlob(gw, req, res, existing(repositoryId, name), digest);
  },

  async uploads(gw: Gateway, req: Request, res: Response, name: string, uuid: string | undefined): Promise<void> {
    const { repositoryId, user, client } = await authorizeLocal(gw, req, res, name, 'push');
    if (uuid === undefined) {
      if (req.method !== 'POST') throw new RegistryError('UNSUPPORTED', `${req.method} is not supported here`);
      // Starting an upload is the first step of a push: it creates the repository,
      // pending (unlisted, readable by its pusher) until its first manifest.
      const created = repositoryId ?? gw.localStore().index.ensureRepository(name, user, true);
      return startUpload(gw, req, res, name, created, (repo) => canPull(gw, client, repo));
    }
    // A session belongs to an existing repository; a request about none creates nothing.
    if (repositoryId === undefined) throw new RegistryError('BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry', { uuid });
    const id = repositoryId;
    if (req.method === 'PATCH') return patchUpload(gw, req, res, name, id, uuid);
    if (req.method === 'PUT') return finishUpload(gw, req, res, name, id, uuid);
    if (req.method === 'GET') return uploadStatus(gw, req, res, name, id, uuid);
    if (req.method === 'DELETE') return cancelUpload(gw, res, id, uuid);
    throw new RegistryError('UNSUPPORTED', `${req.method} is not supported here`);
  },

  async tags(gw: Gateway, req: Request, res: Response, name: string): Promise<void> {
    const { repositoryId } = await authorizeLocal(gw, req, res, name, 'pull');
    localTags(gw, req, res, name, existing(repositoryId, name));
  },

  async referrers(gw: Gateway, req: Request, res: Response, name: string, digest: string): Promise<void> {
    const { repositoryId } = await authorizeLocal(gw, req, res, name, 'pull');
    referrers(gw, req, res, existing(repositoryId, name), digest);
  },
};
