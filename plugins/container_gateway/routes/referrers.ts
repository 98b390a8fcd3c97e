// GET /v2/<name>/referrers/<digest>[?artifactType=]: where the backend knows subjects.
import { RegistryError } from '../oci/errors.ts';
import type { DigestPath, ResourceHandler } from './paths.ts';

/** Without it, 404: clients then fall back to the sha256-<hex> tag schema. */
export function referrersUnsupported(): RegistryError {
  return new RegistryError('UNSUPPORTED', 'the referrers API needs content_backend: local', undefined, 404);
}

export const listReferrers: ResourceHandler<DigestPath> = (gw, x, p) => {
  if (!gw.content.referrers) throw referrersUnsupported();
  return gw.content.referrers(x, p.digest);
};
