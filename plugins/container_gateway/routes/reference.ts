// The OCI grammar for names, tags and digests: validated before a name reaches
// SQL or an upstream URL.
import { RegistryError } from '../errors.ts';
import { DIGEST, NAME, TAG } from '../names.ts';

export { NAME };

export function checkName(name: string): string {
  if (name.length > 255 || !NAME.test(name)) throw new RegistryError('NAME_INVALID', `invalid repository name '${name.slice(0, 300)}'`);
  return name;
}

export function checkDigest(digest: string): string {
  if (!DIGEST.test(digest) || (digest.startsWith('sha256:') && !/^sha256:[a-f0-9]{64}$/.test(digest)) || (digest.startsWith('sha512:') && !/^sha512:[a-f0-9]{128}$/.test(digest))) {
    throw new RegistryError('DIGEST_INVALID', `invalid digest '${digest.slice(0, 200)}'`);
  }
  return digest;
}

/** A percent-encoded path segment, decoded; a malformed escape is the client's error. */
export function decodeSegment(raw: string, code: 'MANIFEST_INVALID' | 'DIGEST_INVALID'): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new RegistryError(code, `'${raw.slice(0, 200)}' is not a valid percent-encoded path segment`, undefined, 400);
  }
}

/** A manifest reference: a tag, or a digest. */
export function checkReference(reference: string): { reference: string; isDigest: boolean } {
  if (reference.includes(':')) return { reference: checkDigest(reference), isDigest: true };
  if (!TAG.test(reference)) throw new RegistryError('MANIFEST_UNKNOWN', `invalid tag '${reference.slice(0, 200)}'`);
  return { reference, isDigest: false };
}

/** `n` of tags/list and _catalog: absent, or a non-negative integer. */
export function parseN(raw: unknown): number | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || !/^\d{1,9}$/.test(raw)) throw new RegistryError('PAGINATION_NUMBER_INVALID', `n must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

export function parseLast(raw: unknown): string | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string') throw new RegistryError('PAGINATION_NUMBER_INVALID', 'last must be given once');
  return raw;
}
