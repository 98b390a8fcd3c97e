// A pushed manifest's body, read whole before anything is stored or relayed:
// bounded by MANIFEST_LIMIT (past it the client hears 413, after the rest of
// its body was read and dropped, up to a bound), and refused unless it
// declares a manifest media type.
import type { Request } from 'express';
import { RegistryError } from '../oci/errors.ts';
import { declaredManifestType, MANIFEST_LIMIT } from '../oci/manifest.ts';

/** Past the limit, the rest of a body is read and dropped (up to this much) so the client hears the 413. */
const DISCARD_LIMIT = 64 * 1024 * 1024;

export async function readManifestBody(req: Request): Promise<Buffer> {
  const body = await readBounded(req);
  declaredManifestType(body, req.get('content-type'));
  return body;
}

function readBounded(req: Request): Promise<Buffer> {
  const tooLarge = () => new RegistryError('SIZE_INVALID', `manifests are limited to ${MANIFEST_LIMIT} bytes`, undefined, 413);
  const declared = Number(req.get('content-length') ?? 0);
  if (declared > MANIFEST_LIMIT + DISCARD_LIMIT) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MANIFEST_LIMIT) chunks.push(c);
      else if (size > MANIFEST_LIMIT + DISCARD_LIMIT) req.destroy();
    });
    req.on('end', () => (size > MANIFEST_LIMIT ? reject(tooLarge()) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
    req.on('close', () => {
      if (!req.complete) reject(tooLarge());
    });
  });
}
