// Reading a pushed manifest: its media type, what it refers to (blobs, or
// manifests for an index), its subject and artifact type (referrers API).
// Unknown fields are allowed; the bytes are stored exactly as received.
import { RegistryError } from './errors.ts';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const INDEX_TYPES = new Set([OCI_INDEX, DOCKER_LIST]);
const IMAGE_TYPES = new Set([OCI_MANIFEST, DOCKER_MANIFEST]);
/** The only media types a manifest is stored and served with. */
export const MANIFEST_TYPES: ReadonlySet<string> = new Set([...IMAGE_TYPES, ...INDEX_TYPES]);
/** Every manifest type the store keeps, asked of upstreams so that they do not convert (Pulp answers 404 for a type not accepted). */
export const MANIFEST_ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(', ');
/** The largest manifest accepted from a client or an upstream: the size the distribution spec asks every registry to take. */
export const MANIFEST_LIMIT = 4 * 1024 * 1024;

function notAManifestType(what: string): RegistryError {
  return new RegistryError('MANIFEST_INVALID', `${what} is not a manifest media type (${[...MANIFEST_TYPES].join(', ')})`);
}

/**
 * The media type a client's manifest PUT declares: its Content-Type, or when
 * there is none, the body's own mediaType. Anything but a manifest type is
 * refused: a manifest is served back with this type.
 */
export function declaredManifestType(body: Buffer, contentType: string | undefined): string {
  const header = contentType?.split(';')[0]?.trim().toLowerCase();
  if (header) {
    if (!MANIFEST_TYPES.has(header)) throw notAManifestType(`Content-Type ${JSON.stringify(header.slice(0, 100))}`);
    return header;
  }
  let declared: unknown;
  try {
    declared = (JSON.parse(body.toString('utf8')) as { mediaType?: unknown } | null)?.mediaType;
  } catch {
    throw new RegistryError('MANIFEST_INVALID', 'the manifest is not valid JSON');
  }
  if (typeof declared !== 'string') throw new RegistryError('MANIFEST_INVALID', 'a manifest needs a Content-Type or a mediaType field');
  if (!MANIFEST_TYPES.has(declared)) throw notAManifestType(`mediaType ${JSON.stringify(declared.slice(0, 100))}`);
  return declared;
}

export interface ParsedManifest {
  mediaType: string;
  blobs: string[];
  manifests: string[];
  subject?: string;
  artifactType?: string;
  annotations?: Record<string, string>;
}

interface Descriptor {
  mediaType?: unknown;
  digest?: unknown;
  size?: unknown;
}

const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

function descriptor(value: unknown, where: string): { digest: string; mediaType?: string } {
  const d = value as Descriptor | null;
  if (!d || typeof d !== 'object' || typeof d.digest !== 'string' || !DIGEST.test(d.digest) || typeof d.size !== 'number' || d.size < 0) {
    throw new RegistryError('MANIFEST_INVALID', `${where} is not a valid descriptor (digest, size)`);
  }
  return { digest: d.digest, ...(typeof d.mediaType === 'string' ? { mediaType: d.mediaType } : {}) };
}

/** Parse and check a manifest body; `contentType` is the request's, parameters ignored. */
export function parseManifest(body: Buffer, contentType: string | undefined): ParsedManifest {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new RegistryError('MANIFEST_INVALID', 'the manifest is not valid JSON');
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new RegistryError('MANIFEST_INVALID', 'the manifest is not a JSON object');
  if (doc.schemaVersion !== 2) throw new RegistryError('MANIFEST_INVALID', 'only schemaVersion 2 manifests are supported');
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  // A main server may answer without a useful Content-Type: then the body says, or its shape.
  const rawHeader = contentType?.split(';')[0]?.trim().toLowerCase();
  const header = rawHeader && rawHeader !== 'application/octet-stream' ? rawHeader : undefined;
  if (declared && header && header !== declared) {
    throw new RegistryError('MANIFEST_INVALID', `Content-Type ${header} does not match the manifest's mediaType ${declared}`);
  }
  const mediaType = declared ?? header ?? (Array.isArray(doc.manifests) ? OCI_INDEX : OCI_MANIFEST);
  if (!MANIFEST_TYPES.has(mediaType)) throw notAManifestType(JSON.stringify(mediaType.slice(0, 100)));
  const result: ParsedManifest = { mediaType, blobs: [], manifests: [] };
  if (INDEX_TYPES.has(mediaType) || (!IMAGE_TYPES.has(mediaType) && Array.isArray(doc.manifests))) {
    if (!Array.isArray(doc.manifests)) throw new RegistryError('MANIFEST_INVALID', 'an index needs a manifests array');
    doc.manifests.forEach((m, i) => result.manifests.push(descriptor(m, `manifests[${i}]`).digest));
  } else {
    const config = descriptor(doc.config, 'config');
    if (!Array.isArray(doc.layers)) throw new RegistryError('MANIFEST_INVALID', 'an image manifest needs a layers array');
    result.blobs.push(config.digest);
    doc.layers.forEach((l, i) => result.blobs.push(descriptor(l, `layers[${i}]`).digest));
    // Referrers: the artifactType, else the config's media type.
    result.artifactType = typeof doc.artifactType === 'string' ? doc.artifactType : config.mediaType;
  }
  if (INDEX_TYPES.has(mediaType) && typeof doc.artifactType === 'string') result.artifactType = doc.artifactType;
  if (doc.subject !== undefined) result.subject = descriptor(doc.subject, 'subject').digest;
  if (doc.annotations && typeof doc.annotations === 'object' && !Array.isArray(doc.annotations)) {
    result.annotations = Object.fromEntries(Object.entries(doc.annotations as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string'));
  }
  result.blobs = [...new Set(result.blobs)];
  return result;
}

/** Does the client's Accept admit this media type? No Accept, or a wildcard, admits all. */
export function accepts(accept: string | undefined, mediaType: string): boolean {
  if (!accept) return true;
  const types = accept.split(',').map((t) => t.split(';')[0]!.trim().toLowerCase());
  return types.some((t) => t === '*/*' || t === mediaType || t === 'application/*' || t === '');
}
