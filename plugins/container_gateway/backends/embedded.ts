// The embedded store as a content backend: blob files by digest and what
// repositories hold in the database, served and written here. It takes writes and
// knows referrers (it indexes every manifest's subject). A request about a
// repository that does not exist answers NAME_UNKNOWN; only a push creates
// one (an upload makes it pending, its first manifest makes it listed).
import type { Request, Response } from 'express';
import { RegistryError } from '../oci/errors.ts';
import { OCI_INDEX } from '../oci/manifest.ts';
import type { LocalStore } from '../store/local-store.ts';
import type { ContentBackend, ContentWrites, Exchange, FlatpakAnswer, FlatpakExchange, FlatpakQuery, ManifestReference } from './content-backend.ts';
import { EmbeddedFlatpakIndex } from './embedded-flatpak.ts';
import { deleteManifest, getManifest, putManifest } from './embedded-manifests.ts';
import { cancelUpload, finishUpload, patchUpload, startUpload, uploadStatus } from './embedded-uploads.ts';
import { answerBlobRange } from './range.ts';
import { sendFile } from './stream-file.ts';

function existing(x: Exchange): number {
  if (x.access.repositoryId === undefined) throw new RegistryError('NAME_UNKNOWN', 'Repository name unknown', { name: x.access.name });
  return x.access.repositoryId;
}

/** A session belongs to an existing repository; a request about none creates nothing. */
function sessionRepository(x: Exchange, uuid: string): number {
  if (x.access.repositoryId === undefined) throw new RegistryError('BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry', { uuid });
  return x.access.repositoryId;
}

export class EmbeddedBackend implements ContentBackend {
  readonly writes: ContentWrites;
  private readonly flatpak: EmbeddedFlatpakIndex;

  constructor(private readonly store: LocalStore) {
    this.writes = embeddedWrites(store);
    this.flatpak = new EmbeddedFlatpakIndex(store);
  }

  /** Built here from the stored images' configs: flatpak works without Pulp. */
  flatpakIndex(x: FlatpakExchange, query: FlatpakQuery): Promise<FlatpakAnswer> {
    return this.flatpak.build(x, query);
  }

  async getManifest(x: Exchange, ref: ManifestReference): Promise<void> {
    await getManifest(this.store, x.req, x.res, existing(x), ref);
  }

  async getBlob(x: Exchange, digest: string): Promise<void> {
    await sendBlob(this.store, x.req, x.res, existing(x), digest);
  }

  async tags(x: Exchange, last: string | undefined, limit: number): Promise<string[]> {
    return this.store.index.tags(existing(x), last, limit);
  }

  /** Always 200 with an image index (empty when nothing refers to the digest). */
  async referrers(x: Exchange, digest: string): Promise<void> {
    const { req, res } = x;
    const filter = typeof req.query.artifactType === 'string' ? req.query.artifactType : undefined;
    const manifests = await this.store.index.referrers(existing(x), digest, filter);
    if (filter !== undefined) res.set('OCI-Filters-Applied', 'artifactType');
    // Exactly the index media type: a string body would get '; charset=utf-8' added.
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));
    res.status(200).set({ 'Content-Type': OCI_INDEX, 'Content-Length': String(body.length) }).end(body);
  }
}

function embeddedWrites(store: LocalStore): ContentWrites {
  return {
    async putManifest(x, ref) {
      const { name, repositoryId, user } = x.access;
      // The repository is created only when the manifest is stored.
      await putManifest(store, x.req, x.res, name, repositoryId, () => store.index.ensureRepository(name, user), ref);
    },
    async deleteManifest(x, ref) {
      await deleteManifest(store, x.res, existing(x), ref);
    },
    async deleteBlob(x, digest) {
      if (!(await store.index.unlinkBlob(existing(x), digest))) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
      x.res.status(202).end();
    },
    async startUpload(x) {
      const { name, repositoryId, user } = x.access;
      // Starting an upload is the first step of a push: it creates the repository,
      // pending (unlisted, readable by its pusher) until its first manifest.
      const created = repositoryId ?? (await store.index.ensureRepository(name, user, true));
      await startUpload(store, x.req, x.res, name, created, (repo) => x.access.canPull(repo));
    },
    patchUpload: (x, uuid) => patchUpload(store, x.req, x.res, x.access.name, sessionRepository(x, uuid), uuid),
    finishUpload: (x, uuid) => finishUpload(store, x.req, x.res, x.access.name, sessionRepository(x, uuid), uuid),
    uploadStatus: (x, uuid) => uploadStatus(store, x.req, x.res, x.access.name, sessionRepository(x, uuid), uuid),
    cancelUpload: (x, uuid) => cancelUpload(store, x.res, sessionRepository(x, uuid), uuid),
  };
}

/** GET/HEAD of a stored blob, with one Range → 206. */
async function sendBlob(store: LocalStore, req: Request, res: Response, repositoryId: number, digest: string): Promise<void> {
  const linked = await store.index.blobInRepository(repositoryId, digest);
  const onDisk = linked && (await store.blobs.stat(digest));
  if (!onDisk) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
  const size = onDisk.size;
  res.set({ 'Docker-Content-Digest': digest, 'Content-Type': 'application/octet-stream', ETag: `"${digest}"` });
  const range = answerBlobRange(res, req.get('range'), size);
  if (req.method === 'HEAD' || size === 0) {
    res.end();
    return;
  }
  await sendFile(store.blobs.path(digest), range ?? { start: 0, end: size - 1 }, res);
}
