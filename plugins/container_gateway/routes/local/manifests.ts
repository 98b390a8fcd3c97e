// Manifests of the embedded store: GET/HEAD by tag or digest (Accept
// honoured), PUT (4 MiB limit → 413, a manifest media type required and kept
// for good, referenced blobs checked → MANIFEST_BLOB_UNKNOWN, subject →
// OCI-Subject), DELETE (202).
import type { Request, Response } from 'express';
import { RegistryError } from '../../oci/errors.ts';
import type { Gateway } from '../../gateway.ts';
import { accepts, parseManifest } from '../../oci/manifest.ts';
import { readManifestBody } from '../../backends/manifest-body.ts';
import { sha256Digest } from '../../oci/grammar.ts';
import { manifestRecord } from '../../store/content-index.ts';


function find(gw: Gateway, repositoryId: number, reference: string, isDigest: boolean) {
  const index = gw.localStore().index;
  return isDigest ? index.manifest(repositoryId, reference) : index.tagged(repositoryId, reference);
}

export function getManifest(gw: Gateway, req: Request, res: Response, repositoryId: number, reference: string, isDigest: boolean): void {
  const m = find(gw, repositoryId, reference, isDigest);
  if (!m) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to registry', { reference });
  if (!accepts(req.get('accept'), m.mediaType)) {
    throw new RegistryError('MANIFEST_UNKNOWN', `the manifest is a ${m.mediaType}, which the Accept header does not admit`, { reference });
  }
  res.status(200).set({ 'Content-Type': m.mediaType, 'Content-Length': String(m.content.length), 'Docker-Content-Digest': m.digest, ETag: `"${m.digest}"` });
  res.end(req.method === 'HEAD' ? undefined : m.content);
}

export async function putManifest(gw: Gateway, req: Request, res: Response, name: string, existingId: number | undefined, create: () => number, reference: string, isDigest: boolean): Promise<void> {
  const body = await readManifestBody(req);
  const digest = sha256Digest(body);
  if (isDigest && reference !== digest) throw new RegistryError('DIGEST_INVALID', `the manifest's digest is ${digest}, not ${reference}`);
  const parsed = parseManifest(body, req.get('content-type'));
  const index = gw.localStore().index;
  // A digest's media type is fixed by its first PUT: the same bytes are not re-labelled.
  const stored = existingId === undefined ? undefined : index.manifest(existingId, digest);
  if (stored && stored.mediaType !== parsed.mediaType) {
    throw new RegistryError('MANIFEST_INVALID', `manifest ${digest} is stored as ${stored.mediaType}; it cannot be put again as ${parsed.mediaType}`);
  }
  const children = [...parsed.blobs, ...parsed.manifests];
  const missing = existingId === undefined ? children : index.missingChildren(existingId, parsed.blobs, parsed.manifests);
  if (missing.length > 0) throw new RegistryError('MANIFEST_BLOB_UNKNOWN', 'the manifest references blobs or manifests unknown to this repository', { missing });
  const repositoryId = existingId ?? create();
  index.putManifest(
    repositoryId,
    manifestRecord(digest, body, parsed),
    isDigest ? undefined : reference,
  );
  gw.manifests.clear();
  if (parsed.subject) res.set('OCI-Subject', parsed.subject);
  res.status(201).set({ Location: `${req.baseUrl}/${name}/manifests/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' });
  res.end();
}

export function deleteManifest(gw: Gateway, res: Response, repositoryId: number, reference: string, isDigest: boolean): void {
  const index = gw.localStore().index;
  const deleted = isDigest ? index.deleteManifest(repositoryId, reference) : index.deleteTag(repositoryId, reference);
  if (!deleted) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to registry', { reference });
  gw.manifests.clear();
  res.status(202).end();
}
