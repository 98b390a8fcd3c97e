// The local side of a push through the proxy. Blob bytes are written to the
// embedded store as they stream past to the main server, and committed only
// when the main server accepted them and their digest verifies. After the
// main server stored a manifest, it is stored here too (with whatever blobs
// did not pass through, fetched from the main server), so the tag is pullable
// from this proxy when the client hears 201. The push itself never fails
// because of this side: its problems are logged, and the next sync repairs.
import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import type { Request } from 'express';
import type { RegistryClient } from '../auth/client.ts';
import type { GatewayDb } from '../db/database.ts';
import { MANIFEST_ACCEPT, parseManifest } from '../oci/manifest.ts';
import { isSha256Digest, sha256Digest } from '../oci/grammar.ts';
import type { RegistryFetch } from '../oci/registry-fetch.ts';
import type { GatewaySettings } from '../settings.ts';
import { manifestRecord } from '../store/content-index.ts';
import type { LocalStore } from '../store/local-store.ts';
import { TagOrder } from '../store/tag-order.ts';
import type { StoreMirror } from '../sync/mirror.ts';
import type { MainServer } from '../upstream/main-server.ts';
import type { MainAnswer } from './main-relay.ts';

/** What the local side of pushes needs, the same for every push. */
export interface PushMirrorDependencies {
  /** The embedded store (through its mirror) when it is the inner backend; undefined: nothing is copied here. */
  local: StoreMirror | undefined;
  main: MainServer;
  db: GatewayDb;
  settings: GatewaySettings;
  /** Manifests cached from the main server are stale once a push changed a tag (of `name`), on every node. */
  clearManifests(name: string): Promise<void>;
}

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

/** The local side of one push request. */
export class PushMirror {
  private readonly store: LocalStore | undefined;

  constructor(
    private readonly deps: PushMirrorDependencies,
    private readonly req: Request,
    private readonly client: RegistryClient,
  ) {
    this.store = deps.local?.store;
  }

  private warn(what: string, err: unknown): void {
    this.req.log.warn(`push mirror: ${what}: ${(err as Error)?.message ?? String(err)}`);
  }

  private repository(name: string): Promise<number> {
    return this.store!.index.ensureRepository(name, undefined);
  }

  private async commit(name: string, id: string, digest: string): Promise<void> {
    const store = this.store!;
    try {
      const { size } = await store.blobs.commit(id, digest);
      await store.index.linkBlob(await this.repository(name), digest, size);
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
      if (mounted && info) await this.store.index.linkBlob(await this.repository(name), mounted, info.size);
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
    const known = id === undefined ? store.blobs.stat(digest!).then(async (info) => info !== undefined || (await store.index.blobAnywhere(digest!)) !== undefined) : Promise.resolve(true);
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
      else if (!(await known.catch(() => true)) && !(await store.index.blobAnywhere(digest!))) await store.blobs.delete(digest!).catch(() => undefined);
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
          if (info) await store.index.linkBlob(await this.repository(name), digest!, info.size);
        } else if (req.method === 'PUT' && digest) {
          await this.commit(name, id, digest);
        }
      },
    };
  }

  /** The main server stored the manifest: store it here, with every blob it needs. */
  async manifestPushed(name: string, reference: string, isDigest: boolean, body: Buffer, contentType: string | undefined): Promise<void> {
    const { client, deps } = this;
    if (client.kind === 'user') await deps.db.addUserRepository(client.name, name);
    if (!deps.local) {
      if (deps.settings.push_sync_trigger === 'capsule_sync') deps.main.requestCapsuleSync(this.req.log);
      return;
    }
    try {
      const mirror = deps.local;
      const store = mirror.store;
      const repositoryId = await this.repository(name);
      const parsed = parseManifest(body, contentType);
      const fetch = this.fetcher();
      for (const digest of parsed.blobs) {
        if (await store.index.blobInRepository(repositoryId, digest)) continue;
        await mirror.blob(fetch, name, repositoryId, digest);
      }
      for (const digest of parsed.manifests) {
        if (!(await store.index.manifest(repositoryId, digest))) await mirror.manifest(fetch, name, repositoryId, digest);
      }
      const digest = sha256Digest(body);
      await store.index.putManifest(repositoryId, manifestRecord(digest, body, parsed));
      if (!isDigest) await this.tagAsTheMainServer(repositoryId, name, reference, digest);
      await this.deps.clearManifests(name);
    } catch (err) {
      this.warn(`${name}:${reference} pushed to the main server but not stored here (the next sync will)`, err);
    }
  }

  /** Point the tag where the main server's does, in the order the main server stored the pushes (store/tag-order.ts). */
  private async tagAsTheMainServer(repositoryId: number, name: string, tag: string, pushed: string): Promise<void> {
    const order = new TagOrder(this.deps.db.sql);
    const ticket = await order.ticket(repositoryId, tag);
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
    const now = await order.settle(repositoryId, tag, ticket, observed);
    if (now !== pushed) this.req.log.info(`push mirror: ${name}:${tag} points to ${now ?? 'nothing'} on the main server, not to the manifest just pushed (${pushed}): a concurrent push won`);
  }

  async manifestDeleted(name: string, reference: string, isDigest: boolean): Promise<void> {
    const id = await this.store?.index.repositoryId(name);
    if (id === undefined) return;
    if (isDigest) await this.store!.index.deleteManifest(id, reference);
    else await this.store!.index.deleteTag(id, reference);
    await this.deps.clearManifests(name);
  }

  /** Reads from the main server as the pusher (who can read what they just pushed). */
  private fetcher(): RegistryFetch {
    return this.deps.main.readAs(this.req.get('authorization'));
  }
}
