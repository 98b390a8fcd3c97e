// The flatpak index built from the embedded store, so that `flatpak
// remote-add` works against this gateway without Pulp. Same format as
// Pulp's /index/static (the flatpak registry-index format): one result per
// repository, one image per tagged platform manifest, with the image
// config's labels (org.flatpak.ref, org.flatpak.metadata, ...), and the same
// query filters: tag (repeatable), os, architecture, label:K:exists=1,
// label:K=V. As Pulp, a query without label:org.flatpak.ref:exists=1 is refused.
import { readFile } from 'node:fs/promises';
import type { LocalStore } from '../store/local-store.ts';
import type { FlatpakAnswer, FlatpakExchange, FlatpakImage, FlatpakQuery } from './content-backend.ts';

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);
const REQUIRED = 'label:org.flatpak.ref:exists';
/** A config larger than this is not an image config worth listing. */
const CONFIG_LIMIT = 4 * 1024 * 1024;

interface Filters {
  tags: Set<string>;
  os?: string;
  architecture?: string;
  exists: string[];
  equals: Array<[string, string]>;
}

function filtersOf(query: FlatpakQuery): Filters {
  const f: Filters = { tags: new Set(), exists: [], equals: [] };
  for (const [key, value] of query) {
    if (key === 'tag') f.tags.add(value);
    else if (key === 'os') f.os = value;
    else if (key === 'architecture') f.architecture = value;
    else if (key.startsWith('label:') && key.endsWith(':exists')) {
      if (value === '1') f.exists.push(key.slice('label:'.length, -':exists'.length));
    } else if (key.startsWith('label:')) f.equals.push([key.slice('label:'.length), value]);
  }
  return f;
}

function matches(f: Filters, image: FlatpakImage): boolean {
  if (f.os !== undefined && image.OS !== f.os) return false;
  if (f.architecture !== undefined && image.Architecture !== f.architecture) return false;
  if (f.exists.some((k) => !(k in image.Labels))) return false;
  return f.equals.every(([k, v]) => image.Labels[k] === v);
}

interface Platform {
  digest: string;
  mediaType: string;
}

function json(body: Buffer): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export class EmbeddedFlatpakIndex {
  constructor(private readonly store: LocalStore) {}

  async build(x: FlatpakExchange, query: FlatpakQuery): Promise<FlatpakAnswer> {
    if (!query.some(([k, v]) => k === REQUIRED && v === '1')) {
      return { kind: 'failure', status: 400, contentType: 'application/json', body: JSON.stringify({ error: `Missing ${REQUIRED}=1` }) };
    }
    const filters = filtersOf(query);
    const Results: Array<{ Name: string; Images: FlatpakImage[] }> = [];
    for (const name of x.names) {
      const id = await this.store.index.repositoryId(name);
      if (id === undefined) continue;
      const images = await this.imagesOf(id, filters);
      if (images.length > 0) Results.push({ Name: name, Images: images });
    }
    return { kind: 'index', index: { Registry: x.origin, Results } };
  }

  /** The repository's tagged images (an image index: its platform manifests, each under the index's tags). */
  private async imagesOf(repositoryId: number, filters: Filters): Promise<FlatpakImage[]> {
    const byDigest = new Map<string, FlatpakImage>();
    for (const tag of await this.store.index.tags(repositoryId, undefined, 100_000)) {
      if (filters.tags.size > 0 && !filters.tags.has(tag)) continue;
      const top = await this.store.index.tagged(repositoryId, tag);
      if (!top) continue;
      let platforms: Platform[] = [{ digest: top.digest, mediaType: top.mediaType }];
      if (INDEX_TYPES.has(top.mediaType)) {
        const list = json(top.content)?.manifests;
        platforms = Array.isArray(list) ? list.filter((m): m is Platform => typeof m?.digest === 'string' && typeof m?.mediaType === 'string') : [];
      }
      for (const p of platforms) {
        const known = byDigest.get(p.digest);
        if (known) {
          known.Tags.push(tag);
          continue;
        }
        const image = await this.image(repositoryId, p.digest, tag);
        if (image && matches(filters, image)) byDigest.set(p.digest, image);
      }
    }
    return [...byDigest.values()];
  }

  private async image(repositoryId: number, digest: string, tag: string): Promise<FlatpakImage | undefined> {
    const manifest = await this.store.index.manifest(repositoryId, digest);
    if (!manifest || INDEX_TYPES.has(manifest.mediaType)) return undefined;
    const config = json(manifest.content)?.config as { digest?: unknown; size?: unknown } | undefined;
    if (typeof config?.digest !== 'string' || (typeof config.size === 'number' && config.size > CONFIG_LIMIT)) return undefined;
    if (!(await this.store.index.blobInRepository(repositoryId, config.digest))) return undefined;
    const body = await readFile(this.store.blobs.path(config.digest)).catch(() => undefined);
    const parsed = body && json(body);
    if (!parsed) return undefined;
    const inner = (parsed.config ?? {}) as { Labels?: unknown };
    const labels: Record<string, string> = {};
    if (inner.Labels && typeof inner.Labels === 'object') {
      for (const [k, v] of Object.entries(inner.Labels as Record<string, unknown>)) if (typeof v === 'string') labels[k] = v;
    }
    return {
      Tags: [tag],
      Digest: digest,
      MediaType: manifest.mediaType,
      OS: typeof parsed.os === 'string' ? parsed.os : '',
      Architecture: typeof parsed.architecture === 'string' ? parsed.architecture : '',
      Labels: labels,
    };
  }
}
