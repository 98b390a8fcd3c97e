// The registry paths' parameters, validated against the OCI grammar before
// access is decided (a malformed name or digest is a 400 to anyone), and the
// shape of a handler that serves one resource after the access layer.
import type { ContentWrites, Exchange, ManifestReference } from '../backends/content-backend.ts';
import { RegistryError } from '../oci/errors.ts';
import { checkDigest, checkName, checkReference, decodeSegment } from '../oci/grammar.ts';
import type { Gateway } from '../gateway.ts';

export interface RepositoryPath {
  name: string;
}
export interface ManifestPath extends RepositoryPath {
  ref: ManifestReference;
}
export interface DigestPath extends RepositoryPath {
  digest: string;
}
export interface UploadPath extends RepositoryPath {
  uuid: string;
}

/** Serves a request whose Access was decided (x.access) and whose path was validated (p). */
export type ResourceHandler<P extends RepositoryPath> = (gw: Gateway, x: Exchange, p: P) => Promise<unknown>;

export const repositoryPath = (m: RegExpExecArray): RepositoryPath => ({ name: checkName(m[1]!) });
export const manifestPath = (m: RegExpExecArray): ManifestPath => ({ name: checkName(m[1]!), ref: checkReference(decodeSegment(m[2]!, 'MANIFEST_INVALID')) });
export const digestPath = (m: RegExpExecArray): DigestPath => ({ name: checkName(m[1]!), digest: checkDigest(decodeSegment(m[2]!, 'DIGEST_INVALID')) });
export const uploadPath = (m: RegExpExecArray): UploadPath => ({ name: checkName(m[1]!), uuid: m[2]! });

export const PUSH_UNSUPPORTED = 'Pushing needs a main server (foreman_url) or content_backend: local';

/** The backend's writes (their routes exist only where it has them). */
export function writesOf(gw: Gateway): ContentWrites {
  const writes = gw.content.writes;
  if (!writes) throw new RegistryError('UNSUPPORTED', PUSH_UNSUPPORTED);
  return writes;
}
