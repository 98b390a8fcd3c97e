// The local side of a push through the proxy. Blob bytes are written to the
// embedded store as they stream past to the main server, and committed only
// when the main server accepted them and their digest verifies. After the
// main server stored a manifest, it is stored here too (with whatever blobs
// did not pass through, fetched from the main server), so the tag is pullable
// from this proxy when the client hears 201. The push itself never fails
// because of this side: its problems are logged, and the next sync repairs.
import { createHash } from 'node:crypto';
import type http from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import type { Request } from 'express';
import type { Gateway, LocalStore } from '../gateway.ts';
import { MANIFEST_ACCEPT, parseManifest } from '../oci/manifest.ts';
import { isSha256Digest, sha256Digest } from '../oci/grammar.ts';
import { manifestRecord } from '../store/content-index.ts';
import { mirrorBlob, mirrorManifest, type RegistryFetch } from '../sync/mirror.ts';
import { tagOrderOf } from '../store/tag-order.ts';


export interface UploadTee {
  /** What goes to the main server. */
  upstream: Readable;
  /** After the main server's whole answer: commit (PUT) or keep (PATCH) when it accepted, drop the bytes otherwise. */
  settle(ok: boolean): Promise<void>;
  /** The main server was never reached. */
  abandon(): Promise<void>;
}

/** The store's upload id for the main server's session `uuid` of `name` (any worker computes the same). */
export function localUploadId(name: string, uuid: string): string {
  const h = createHash('sha256').update(`${name}\0${uuid}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function sessionOf(location: string | undefined): string | undefined {
  return location ? /\/blobs\/uploads\/([^/?#]+)/.exec(location)?.[1] : undefined;
}

function digestQuery(req: Request): string | undefined {
  const d = req.query.digest;
  return typeof d === 'string' && isSha256Digest(d) ? d : undefined;
}

/** The main server's whole answer to a write, read before anything is committed here. */
export interface MainAnswer {
  up: http.IncomingMessage;
  body: Buffer;
  /** Status 201, every byte of the body arrived, and the connection did not break. */
  created: boolean;
  /** Its Docker-Content-Digest, when it sent exactly one. */
  digest: string | undefined;
}

export class PushMirror {
  private readonly store: LocalStore | undefined;

  constructor(
    private readonly gw: Gateway,
    private readonly req: Request,
  ) {
    this.store = gw.store;
  }

  private warn(what: string, err: unknown): void {
    this.req.log.warn(`push mirror: ${what}: ${(err as Error)?.message ?? String(err)}`);
  }

  private repository(name: string): number {
    return this.store!.index.ensureRepository(name, undefined);
  }

  private async commit(name: string, id: string, digest: string): Promise<void> {
    const store = this.store!;
    try {
      const { size } = await store.blobs.commit(id, digest);
      store.index.linkBlob(this.repository(name), digest, size);
    } catch (err) {
      await store.blobs.cancel(id).catch(() => undefined);
      // A session that did not (all) pass through here: the manifest PUT fetches the blob.
      this.req.log.debug(`push mirror: ${digest} not kept from the upload: ${(err as Error).message}`);
    }
  }

  /** POST answered: a session to follow (202), or a mount / monolithic upload done (201 for that digest). */
  async uploadStarted(name: string, answer: MainAnswer, req: Request): Promise<void> {
    if (!this.store) return;
    const headers = answer.up.headers;
    try {
      if (answer.up.statusCode === 202) {
        const uuid = sessionOf(headers.location) ?? (headers['docker-upload-uuid'] as string | undefined);
        if (uuid) await this.store.blobs.createUpload(localUploadId(name, uuid));
        return;
      }
      const mounted = typeof req.query.mount === 'string' && isSha256Digest(req.query.mount) ? req.query.mount : undefined;
      const info = mounted && answer.digest === mounted ? await this.store.blobs.stat(mounted) : undefined;
      if (mounted && info) this.store.index.linkBlob(this.repository(name), mounted, info.size);
    } catch (err) {
      this.warn(`upload of ${name} not followed`, err);
    }
  }

  async uploadFinished(name: string, uuid: string, req: Request): Promise<void> {
    const digest = digestQuery(req);
    if (this.store && digest) await this.commit(name, localUploadId(name, uuid), digest);
  }

  async uploadCancelled(name: string, uuid: string): Promise<void> {
    await this.store?.blobs.cancel(localUploadId(name, uuid)).catch(() => undefined);
  }

  /** Split an upload body between the main server and the store; the store never slows the push beyond disk speed. */
  teeUpload(uuid: string | undefined, name: string, req: Request): UploadTee {
    const upstream = new PassThrough({ highWaterMark: 1024 * 1024 });
    req.pipe(upstream);
    const store = this.store;
    const digest = digestQuery(req);
    // POST with a body is a monolithic upload: only worth keeping with its digest.
    if (!store || (uuid === undefined && !digest)) return { upstream, settle: async () => undefined, abandon: async () => undefined };
    const local = new PassThrough({ highWaterMark: 1024 * 1024 });
    // Its failures surface through the store's promise below.
    local.on('error', () => undefined);
    req.pipe(local);
    // A client that goes away mid-body must not leave the store waiting for the rest.
    req.once('close', () => {
      if (!req.complete) local.destroy(new Error('the client went away'));
    });
    const id = uuid === undefined ? undefined : localUploadId(name, uuid);
    const range = /^(\d+)-\d+$/.exec(req.get('content-range')?.trim() ?? '');
    let failed = false;
    // A one-shot upload whose blob was not here before: if refused, its bytes go again.
    const known = id === undefined ? store.blobs.stat(digest!).then((info) => info !== undefined || store.index.blobAnywhere(digest!) !== undefined) : Promise.resolve(true);
    const stored: Promise<unknown> = (id === undefined ? store.blobs.ingest(digest!, local) : store.blobs.append(id, local, range ? { start: Number(range[1]) } : {})).catch((err: unknown) => {
      failed = true;
      // Keep the push flowing without us.
      req.unpipe(local);
      local.resume();
      this.req.log.debug(`push mirror: not keeping ${name} upload bytes: ${(err as Error).message}`);
    });
    const drop = async () => {
      if (!local.writableFinished) local.destroy(new Error('the main server refused the upload'));
      await stored;
      if (id) await store.blobs.cancel(id).catch(() => undefined);
      else if (!(await known.catch(() => true)) && !store.index.blobAnywhere(digest!)) await store.blobs.delete(digest!).catch(() => undefined);
    };
    return {
      upstream,
      abandon: drop,
      settle: async (ok) => {
        if (!ok) return drop();
        await stored;
        if (failed) {
          if (id) await store.blobs.cancel(id).catch(() => undefined);
          return;
        }
        if (id === undefined) {
          const info = await store.blobs.stat(digest!);
          if (info) store.index.linkBlob(this.repository(name), digest!, info.size);
        } else if (req.method === 'PUT' && digest) {
          await this.commit(name, id, digest);
        }
      },
    };
  }

  /** The main server stored the manifest: store it here, with every blob it needs. */
  async manifestPushed(name: string, reference: string, isDigest: boolean, body: Buffer, contentType: string | undefined): Promise<void> {
    const client = this.gw.client(this.req);
    if (client.kind === 'user') this.gw.db.addUserRepository(client.name, name);
    if (!this.store) {
      if (this.gw.settings.push_sync_trigger === 'capsule_sync') this.gw.main?.requestCapsuleSync(this.req.log);
      return;
    }
    try {
      const store = this.store;
      const repositoryId = this.repository(name);
      const parsed = parseManifest(body, contentType);
      const fetch = this.fetcher();
      for (const digest of parsed.blobs) {
        if (store.index.blobInRepository(repositoryId, digest)) continue;
        await mirrorBlob(store, fetch, name, repositoryId, digest);
      }
      for (const digest of parsed.manifests) {
        if (!store.index.manifest(repositoryId, digest)) await mirrorManifest(store, fetch, name, repositoryId, digest);
      }
      const digest = sha256Digest(body);
      store.index.putManifest(repositoryId, manifestRecord(digest, body, parsed));
      if (!isDigest) await this.tagAsTheMainServer(repositoryId, name, reference, digest);
      this.gw.manifests.clear();
    } catch (err) {
      this.warn(`${name}:${reference} pushed to the main server but not stored here (the next sync will)`, err);
    }
  }

  /** Point the tag where the main server's does, in the order the main server stored the pushes (store/tag-order.ts). */
  private async tagAsTheMainServer(repositoryId: number, name: string, tag: string, pushed: string): Promise<void> {
    const order = tagOrderOf(this.gw.db.db);
    const ticket = order.ticket(repositoryId, tag);
    let observed: string | undefined = pushed;
    try {
      const head = await this.fetcher()('HEAD', `/${name}/manifests/${encodeURIComponent(tag)}`, { Accept: MANIFEST_ACCEPT });
      head.resume();
      const digest = head.headers['docker-content-digest'];
      if (head.statusCode === 200 && typeof digest === 'string') observed = digest;
      else if (head.statusCode === 404) observed = undefined;
      else this.req.log.warn(`push mirror: the main server answered ${head.statusCode} for ${name}:${tag} after storing it; tagging the pushed manifest`);
    } catch (err) {
      // It stored our push a moment ago: unless told otherwise, the tag is ours.
      this.warn(`could not ask the main server where ${name}:${tag} points; tagging the pushed manifest`, err);
    }
    const now = order.settle(this.store!.index, repositoryId, tag, ticket, observed);
    if (now !== pushed) this.req.log.info(`push mirror: ${name}:${tag} points to ${now ?? 'nothing'} on the main server, not to the manifest just pushed (${pushed}): a concurrent push won`);
  }

  manifestDeleted(name: string, reference: string, isDigest: boolean): void {
    const id = this.store?.index.repositoryId(name);
    if (id === undefined) return;
    if (isDigest) this.store!.index.deleteManifest(id, reference);
    else this.store!.index.deleteTag(id, reference);
    this.gw.manifests.clear();
  }

  /** Reads from the main server as the pusher (who can read what they just pushed). */
  private fetcher(): RegistryFetch {
    return this.gw.main!.readAs(this.req.get('authorization'));
  }
}
