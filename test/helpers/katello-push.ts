// The push side of the Katello double (katello-api.md §3): Katello's rules for
// push names, and a small in-memory stand-in for the Pulp repository behind
// it, so that pushes through a proxy to the double complete: uploads answered
// with relative Locations, blobs and manifests kept in memory, tags indexed
// after a manifest PUT. Digests are not verified here (Pulp would); the proxy
// under test verifies what it keeps.
import { createHash, randomUUID } from 'node:crypto';
import type http from 'node:http';

export const NAME_SCHEMA_MESSAGE = "Container pushes should follow 'organization_label/product_label/name' OR 'id/organization_id/product_id/name' schema.";

export interface PushNameRules {
  /**
   * Existing products, as `org_label/product_label` (matched case-insensitively)
   * or `id/<org_id>/<product_id>`. Undefined: every organisation and product exists.
   */
  products?: string[];
  /** Names taken by the other naming form or by a synced repository, or of an ambiguous label: 409. */
  taken?: string[];
}

export interface PushRefusal {
  status: number;
  code: string;
  message: string;
}

const ID = /^[1-9][0-9]*$/;

/** Does `name` have one of the two shapes Katello accepts (`org/product/name`, `id/<org>/<product>/<name>`)? */
export function isKatelloPushName(name: string): boolean {
  const parts = name.split('/');
  if (parts[0] === 'id') return parts.length === 4 && ID.test(parts[1]!) && ID.test(parts[2]!) && parts[3] !== '';
  return parts.length === 3 && parts.every((p) => p.trim() !== '');
}

/** Katello's answer to a push of `name` it refuses (400, 409, 404 NAME_UNKNOWN), or undefined. */
export function refusePushName(name: string, rules: PushNameRules): PushRefusal | undefined {
  if (!isKatelloPushName(name)) return { status: 400, code: 'NAME_INVALID', message: NAME_SCHEMA_MESSAGE };
  if (rules.taken?.includes(name)) return { status: 409, code: 'NAME_INVALID', message: `${name} is taken by a repository of the other naming form or a synced repository` };
  const parts = name.split('/');
  const product = (parts[0] === 'id' ? parts.slice(0, 3) : parts.slice(0, 2)).join('/').toLowerCase();
  if (rules.products && !rules.products.some((p) => p.toLowerCase() === product)) {
    return { status: 404, code: 'NAME_UNKNOWN', message: `Organization or product of ${name} not found` };
  }
  return undefined;
}

interface Manifest {
  digest: string;
  mediaType: string;
  body: Buffer;
}

type Send = (status: number, headers: Record<string, string>, body?: Buffer | string) => void;

/** Pushed content per repository name (what Pulp would hold and Katello index). */
export class PushedContent {
  private readonly uploads = new Map<string, { name: string; chunks: Buffer[] }>();
  readonly blobs = new Map<string, Buffer>();
  /** Manifests by `name@digest`, tags by `name:tag`. */
  readonly manifests = new Map<string, Manifest>();
  readonly tags = new Map<string, string>();

  /** A push verb on `name` by an allowed user. `rest`: the path after `/v2/<name>/`. */
  push(method: string, name: string, rest: string, query: URLSearchParams, body: Buffer, contentType: string | undefined, send: Send): void {
    const upload = /^blobs\/uploads\/?([^/]*)$/.exec(rest);
    if (upload && method === 'POST' && !upload[1]) {
      const mount = query.get('mount');
      if (mount) {
        if (this.blobs.has(mount)) return send(201, { Location: `/v2/${name}/blobs/${mount}`, 'Docker-Content-Digest': mount });
        return send(404, { 'Content-Type': 'application/json' }, JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry' }] }));
      }
      const uuid = randomUUID();
      this.uploads.set(uuid, { name, chunks: [] });
      return send(202, { Location: `/v2/${name}/blobs/uploads/${uuid}`, 'Docker-Upload-UUID': uuid, Range: '0-0' });
    }
    const session = upload?.[1] ? this.uploads.get(upload[1]) : undefined;
    if (upload?.[1] && (!session || session.name !== name)) {
      return send(404, { 'Content-Type': 'application/json' }, JSON.stringify({ detail: 'Not found.' }));
    }
    if (session && (method === 'PATCH' || method === 'PUT')) {
      session.chunks.push(body);
      const size = session.chunks.reduce((n, c) => n + c.length, 0);
      if (method === 'PATCH') return send(202, { Location: `/v2/${name}/blobs/uploads/${upload![1]}`, 'Docker-Upload-UUID': upload![1]!, Range: `0-${Math.max(size - 1, 0)}` });
      const digest = query.get('digest') ?? '';
      this.uploads.delete(upload![1]!);
      this.blobs.set(digest, Buffer.concat(session.chunks));
      return send(201, { Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest });
    }
    const manifest = /^manifests\/([^/]+)$/.exec(rest);
    if (manifest && method === 'PUT') {
      const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
      this.manifests.set(`${name}@${digest}`, { digest, mediaType: contentType ?? 'application/vnd.oci.image.manifest.v1+json', body });
      if (!manifest[1]!.startsWith('sha256:')) this.tags.set(`${name}:${manifest[1]}`, digest);
      return send(201, { Location: `/v2/${name}/manifests/${digest}`, 'Docker-Content-Digest': digest });
    }
    send(404, { 'Content-Type': 'application/json' }, JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: `${method} ${rest}` }] }));
  }

  /** GET/HEAD of pushed content; false when there is none (the double answers 404). */
  read(method: string, name: string, rest: string, res: http.ServerResponse): boolean {
    const m = /^(manifests|blobs)\/([^/]+)$/.exec(rest);
    if (m?.[1] === 'manifests') {
      const ref = decodeURIComponent(m[2]!);
      const digest = ref.startsWith('sha256:') ? ref : this.tags.get(`${name}:${ref}`);
      const found = digest ? this.manifests.get(`${name}@${digest}`) : undefined;
      if (!found) return false;
      res.writeHead(200, { 'Content-Type': found.mediaType, 'Content-Length': found.body.length, 'Docker-Content-Digest': found.digest });
      res.end(method === 'HEAD' ? undefined : found.body);
      return true;
    }
    if (m?.[1] === 'blobs') {
      const blob = this.blobs.get(decodeURIComponent(m[2]!));
      if (!blob) return false;
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': blob.length, 'Docker-Content-Digest': m[2]! });
      res.end(method === 'HEAD' ? undefined : blob);
      return true;
    }
    if (rest === 'tags/list') {
      const tags = [...this.tags.keys()].filter((k) => k.startsWith(`${name}:`)).map((k) => k.slice(name.length + 1)).sort();
      if (!tags.length) return false;
      const text = JSON.stringify({ name, tags });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
      res.end(method === 'HEAD' ? undefined : text);
      return true;
    }
    return false;
  }
}
