// The backend of a smart proxy (foreman_url set): every write, and the probes
// a client makes before writing, go to the main server's registry with the
// client's Authorization; reads are the inner backend's (the embedded store or
// Pulp). The main server is the authority on who may push: nothing here
// rejects a request the main server would accept. When the inner backend is
// the embedded store, what the main server stored is copied into it as the
// push goes (push-mirror.ts), so that it is pullable here at once.
import type { Request } from 'express';
import { sha256Digest } from '../oci/grammar.ts';
import type { ContentBackend, ContentWrites, Exchange, ManifestReference } from './content-backend.ts';
import { readManifestBody } from './manifest-body.ts';
import { hasBody, MainRelay, type MainAnswer } from './main-relay.ts';
import { PushMirror, type PushMirrorDependencies } from './push-mirror.ts';

/** What a request forwarded to the main server is about. */
type PushTarget =
  | { kind: 'upload-start' }
  | { kind: 'upload'; uuid: string }
  | { kind: 'manifest'; reference: string; isDigest: boolean }
  | { kind: 'blob'; digest: string };

/** The main server, the embedded store when it is the inner backend (local), the database, settings and the manifest cache (push-mirror.ts), and: */
export interface ForwardingDependencies extends PushMirrorDependencies {
  /** This proxy's origin as its clients know it, for a request (token realm, absolute Locations). */
  origin(req: Request): string;
}

/** A push probe: the access layer left it to the main server. */
function probesPush(x: Exchange): boolean {
  return x.access.action !== 'pull' && x.access.deferred;
}

export class ForwardingBackend implements ContentBackend {
  readonly writes: ContentWrites;
  readonly referrers?: ContentBackend['referrers'];
  readonly ping?: ContentBackend['ping'];
  readonly flatpakIndex?: ContentBackend['flatpakIndex'];
  private readonly relay: MainRelay;

  constructor(
    private readonly inner: ContentBackend,
    private readonly deps: ForwardingDependencies,
  ) {
    this.relay = new MainRelay(deps.main.registry, deps.origin);
    if (inner.referrers) this.referrers = (x, digest) => inner.referrers!(x, digest);
    if (inner.ping) this.ping = (req) => inner.ping!(req);
    if (inner.flatpakIndex) this.flatpakIndex = (x, query) => inner.flatpakIndex!(x, query);
    this.writes = {
      putManifest: (x, ref) => this.forward(x, { kind: 'manifest', ...ref }),
      deleteManifest: (x, ref) => this.forward(x, { kind: 'manifest', ...ref }),
      deleteBlob: (x, digest) => this.forward(x, { kind: 'blob', digest }),
      startUpload: (x) => this.forward(x, { kind: 'upload-start' }),
      patchUpload: (x, uuid) => this.forward(x, { kind: 'upload', uuid }),
      finishUpload: (x, uuid) => this.forward(x, { kind: 'upload', uuid }),
      uploadStatus: (x, uuid) => this.forward(x, { kind: 'upload', uuid }),
      cancelUpload: (x, uuid) => this.forward(x, { kind: 'upload', uuid }),
    };
  }

  getManifest(x: Exchange, ref: ManifestReference): Promise<void> {
    return probesPush(x) ? this.forward(x, { kind: 'manifest', ...ref }) : this.inner.getManifest(x, ref);
  }

  getBlob(x: Exchange, digest: string): Promise<void> {
    return probesPush(x) ? this.forward(x, { kind: 'blob', digest }) : this.inner.getBlob(x, digest);
  }

  tags(x: Exchange, last: string | undefined, limit: number): Promise<string[]> {
    return this.inner.tags(x, last, limit);
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }

  /** Forward one write (or push probe) to the main server's registry; the request's method says which. */
  private async forward(x: Exchange, target: PushTarget): Promise<void> {
    const { req, res } = x;
    const name = x.access.name;
    const relay = this.relay;
    const mirror = new PushMirror(this.deps, req, x.access.client);
    if (target.kind === 'manifest' && req.method === 'PUT') {
      const manifest = await readManifestBody(req);
      const answer = await relay.readAnswer(req, await relay.send(req, res, manifest));
      // Stored here only what the main server stored: the same bytes, by its own account, completely answered.
      if (answer?.created && answer.digest === sha256Digest(manifest)) {
        await mirror.manifestPushed(name, target.reference, target.isDigest, manifest, req.get('content-type'));
      } else if (answer?.created) {
        req.log.warn(`push of ${name}:${target.reference}: the main server answered 201 with digest ${answer.digest ?? '(none)'}, not ${sha256Digest(manifest)}: not stored here`);
      }
      return relay.reply(req, res, answer);
    }
    if (target.kind === 'manifest' && req.method === 'DELETE') {
      const answer = await relay.readAnswer(req, await relay.send(req, res, undefined));
      if (answer?.up.statusCode === 202) await mirror.manifestDeleted(name, target.reference, target.isDigest);
      return relay.reply(req, res, answer);
    }
    const uploadBody = (target.kind === 'upload' || target.kind === 'upload-start') && hasBody(req);
    if (!uploadBody) {
      const up = await relay.send(req, res, undefined);
      const writes = (target.kind === 'upload' && req.method !== 'GET') || (target.kind === 'upload-start' && req.method === 'POST');
      if (!writes) return relay.relay(req, res, up);
      const answer = await relay.readAnswer(req, up);
      if (target.kind === 'upload' && req.method === 'DELETE') await mirror.uploadCancelled(name, target.uuid);
      if (target.kind === 'upload-start' && answer && (answer.created || answer.up.statusCode === 202)) await mirror.uploadStarted(name, answer, req);
      if (target.kind === 'upload' && req.method === 'PUT') {
        if (answer && blobAccepted(answer, req)) await mirror.uploadFinished(name, target.uuid, req);
        else await mirror.uploadCancelled(name, target.uuid);
      }
      return relay.reply(req, res, answer);
    }
    // A blob body: streamed to the main server and, as it passes, into the local store.
    const tee = mirror.teeUpload(target.kind === 'upload' ? target.uuid : undefined, name, req);
    const up = await relay.send(req, res, tee.upstream).catch(async (err: unknown) => {
      await tee.abandon();
      throw err;
    });
    const answer = await relay.readAnswer(req, up);
    // A PUT or a monolithic POST is done only with 201 for our digest; a PATCH keeps its bytes on 202.
    // A POST answered 202 ignored its body and opened a session.
    const finishing = target.kind === 'upload-start' || req.method === 'PUT';
    const ok = answer !== undefined && (finishing ? blobAccepted(answer, req) : answer.up.statusCode === 202 || answer.up.statusCode === 204);
    await tee.settle(ok);
    if (target.kind === 'upload-start' && answer?.up.statusCode === 202) await mirror.uploadStarted(name, answer, req);
    return relay.reply(req, res, answer);
  }
}

/** 201 for the digest the client named (our own hash is checked when the store commits). */
function blobAccepted(answer: MainAnswer, req: Request): boolean {
  const digest = req.query.digest ?? req.query.mount;
  return answer.created && typeof digest === 'string' && answer.digest === digest;
}
