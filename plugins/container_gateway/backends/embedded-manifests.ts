// Manifests of the embedded store. A PUT keeps a digest's media type for good
// (the same bytes are never re-labelled), and is refused while it references
// blobs or manifests this repository does not hold; the repository itself is
// created only when its first manifest is stored.
import type { Request, Response } from 'express';
import { RegistryError } from '../oci/errors.ts';
import { accepts, parseManifest } from '../oci/manifest.ts';
import { sha256Digest } from '../oci/grammar.ts';
import { manifestRecord } from '../store/content-index.ts';
import type { LocalStore } from '../store/local-store.ts';
import type { ManifestReference } from './content-backend.ts';
import { readManifestBody } from './manifest-body.ts';

function find(store: LocalStore, repositoryId: number, { reference, isDigest }: ManifestReference) {
  return isDigest ? store.index.manifest(repositoryId, reference) : store.index.tagged(repositoryId, reference);
}

export async function getManifest(store: LocalStore, req: Request, res: Response, repositoryId: number, ref: ManifestReference): Promise<void> {
  const m = await find(store, repositoryId, ref);
  const reference = ref.reference;
  if (!m) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to registry', { reference });
  if (!accepts(req.get('accept'), m.mediaType)) {
    throw new RegistryError('MANIFEST_UNKNOWN', `the manifest is a ${m.mediaType}, which the Accept header does not admit`, { reference });
  }
  res.status(200).set({ 'Content-Type': m.mediaType, 'Content-Length': String(m.content.length), 'Docker-Content-Digest': m.digest, ETag: `"${m.digest}"` });
  res.end(req.method === 'HEAD' ? undefined : m.content);
}

export async function putManifest(store: LocalStore, req: Request, res: Response, name: string, existingId: number | undefined, create: () => Promise<number>, ref: ManifestReference): Promise<void> {
  const body = await readManifestBody(req);
  const digest = sha256Digest(body);
  if (ref.isDigest && ref.reference !== digest) throw new RegistryError('DIGEST_INVALID', `the manifest's digest is ${digest}, not ${ref.reference}`);
  const parsed = parseManifest(body, req.get('content-type'));
  const children = [...parsed.blobs, ...parsed.manifests];
  const missingError = (missing: string[]) => new RegistryError('MANIFEST_BLOB_UNKNOWN', 'the manifest references blobs or manifests unknown to this repository', { missing });
  if (existingId === undefined && children.length > 0) throw missingError(children);
  const repositoryId = existingId ?? (await create());
  // Checked and stored in one transaction: a child deleted meanwhile cannot slip between.
  const refused = await store.index.putCheckedManifest(repositoryId, manifestRecord(digest, body, parsed), parsed, ref.isDigest ? undefined : ref.reference);
  if (refused && 'storedAs' in refused) {
    throw new RegistryError('MANIFEST_INVALID', `manifest ${digest} is stored as ${refused.storedAs}; it cannot be put again as ${parsed.mediaType}`);
  }
  if (refused) throw missingError(refused.missing);
  if (parsed.subject) res.set('OCI-Subject', parsed.subject);
  res.status(201).set({ Location: `${req.baseUrl}/${name}/manifests/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' });
  res.end();
}

export async function deleteManifest(store: LocalStore, res: Response, repositoryId: number, { reference, isDigest }: ManifestReference): Promise<void> {
  const deleted = await (isDigest ? store.index.deleteManifest(repositoryId, reference) : store.index.deleteTag(repositoryId, reference));
  if (!deleted) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to registry', { reference });
  res.status(202).end();
}
