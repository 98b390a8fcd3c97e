// The OCI grammar for names, tags and digests: validated before a name
// reaches SQL or an upstream URL. A leaf: nothing of the gateway is imported.
import { createHash } from 'node:crypto';
import { RegistryError } from './errors.ts';

const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
export const NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
export const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
/** The only digest algorithm the store keeps and verifies. */
export const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;

export function isSha256Digest(value: unknown): value is string {
  return typeof value === 'string' && SHA256_DIGEST.test(value);
}

/** The sha256 digest of some bytes, as `sha256:<hex>`. */
export function sha256Digest(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export function checkName(name: string): string {
  if (name.length > 255 || !NAME.test(name)) throw new RegistryError('NAME_INVALID', `invalid repository name '${name.slice(0, 300)}'`);
  return name;
}

export function checkDigest(digest: string): string {
  if (!DIGEST.test(digest) || (digest.startsWith('sha256:') && !SHA256_DIGEST.test(digest)) || (digest.startsWith('sha512:') && !/^sha512:[a-f0-9]{128}$/.test(digest))) {
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
