// The registry API: one dispatcher over /v2 and /v1, mounted at the listener
// root and under /container_gateway. Every answer carries
// Docker-Distribution-API-Version; every error is an OCI error body.
import express, { type Request, type Response, type Router } from 'express';
import { isValidHost } from '../../../lib/plugins/api.ts';
import { RegistryError, sendOciError } from '../oci/errors.ts';
import type { Gateway } from '../gateway.ts';
import { UpstreamError } from '../upstream/http-upstream.ts';
import { catalog, tagsList } from './discovery.ts';
import { ping, token } from './login.ts';
import { pullBlob, pullManifest } from './pull.ts';
import { tokenAllows, type GrantedScope } from '../auth/standalone.ts';
import type { RepositoryAction } from '../access/access.ts';
import type { ContentBackend, Exchange } from '../backends/content-backend.ts';
import { checkDigest, checkName, checkReference, decodeSegment } from '../oci/grammar.ts';
import { local } from './local/index.ts';
import { v1Ping, v1Search } from './v1.ts';
import { UNREACHABLE_RETRY_AFTER } from './katello-login.ts';
import { KatelloUnreachable } from '../upstream/katello.ts';

/** The forwarding backend (smart-proxy mode), where writes and push probes go. */
type Handler = (gw: Gateway, req: Request, res: Response, m: RegExpExecArray, forwarding: ContentBackend | undefined) => unknown;

interface Route {
  methods: string[];
  pattern: RegExp;
  handler: Handler;
}

const GET = ['GET', 'HEAD'];
const PUSH_UNSUPPORTED = 'Pushing needs a main server (foreman_url) or content_backend: local';

function pulpOnlyReads(req: Request): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') throw new RegistryError('UNSUPPORTED', PUSH_UNSUPPORTED);
}

/** A HEAD that probes before a push: the client asked for a token with push scope on the repository. */
function pushProbe(gw: Gateway, req: Request, name: string): boolean {
  if (req.method !== 'HEAD' || !gw.main) return false;
  const client = gw.client(req);
  return client.kind === 'user' && Array.isArray(client.grants) && tokenAllows(client.grants as GrantedScope[], name, 'push');
}

/** A request the main server decides. */
function deferred(gw: Gateway, req: Request, res: Response, name: string, action: RepositoryAction): Exchange {
  return { req, res, access: { client: gw.client(req), name, action, deferred: true, repositoryId: undefined, canPull: () => false } };
}

const V2_ROUTES: Route[] = [
  { methods: GET, pattern: /^\/$/, handler: (gw, req, res) => ping(gw, req, res) },
  { methods: ['GET'], pattern: /^\/token$/, handler: (gw, req, res) => token(gw, req, res) },
  { methods: GET, pattern: /^\/_catalog$/, handler: (gw, req, res) => catalog(gw, req, res) },
  {
    methods: GET,
    pattern: /^\/(.+)\/tags\/list$/,
    handler: async (gw, req, res, m) => {
      const name = checkName(m[1]!);
      if (gw.backend === 'local') return local.tags(gw, req, res, name);
      return tagsList(gw, req, res, await gw.authorize(req, res, name), name);
    },
  },
  {
    methods: [...GET, 'PUT', 'DELETE'],
    pattern: /^\/(.+)\/manifests\/([^/]+)$/,
    handler: async (gw, req, res, m, forwarding) => {
      const name = checkName(m[1]!);
      const ref = checkReference(decodeSegment(m[2]!, 'MANIFEST_INVALID'));
      const { reference, isDigest } = ref;
      if (forwarding?.writes) {
        if (req.method === 'PUT') return forwarding.writes.putManifest(deferred(gw, req, res, name, 'push'), ref);
        if (req.method === 'DELETE') return forwarding.writes.deleteManifest(deferred(gw, req, res, name, 'delete'), ref);
        if (pushProbe(gw, req, name)) return forwarding.getManifest(deferred(gw, req, res, name, 'push'), ref);
      }
      if (gw.backend === 'local') return local.manifest(gw, req, res, name, reference, isDigest);
      pulpOnlyReads(req);
      return pullManifest(gw, req, res, await gw.authorize(req, res, name), name, reference);
    },
  },
  {
    methods: ['POST'],
    pattern: /^\/(.+)\/blobs\/uploads\/?$/,
    handler: (gw, req, res, m, forwarding) => {
      const name = checkName(m[1]!);
      if (forwarding?.writes) return forwarding.writes.startUpload(deferred(gw, req, res, name, 'push'));
      if (gw.backend !== 'local') throw new RegistryError('UNSUPPORTED', PUSH_UNSUPPORTED);
      return local.uploads(gw, req, res, name, undefined);
    },
  },
  {
    methods: ['PATCH', 'PUT', 'GET', 'DELETE'],
    pattern: /^\/(.+)\/blobs\/uploads\/([^/]+)$/,
    handler: (gw, req, res, m, forwarding) => {
      const name = checkName(m[1]!);
      const writes = forwarding?.writes;
      if (writes) {
        const x = deferred(gw, req, res, name, 'push');
        if (req.method === 'PATCH') return writes.patchUpload(x, m[2]!);
        if (req.method === 'PUT') return writes.finishUpload(x, m[2]!);
        if (req.method === 'GET') return writes.uploadStatus(x, m[2]!);
        return writes.cancelUpload(x, m[2]!);
      }
      if (gw.backend !== 'local') throw new RegistryError('UNSUPPORTED', PUSH_UNSUPPORTED);
      return local.uploads(gw, req, res, name, m[2]!);
    },
  },
  {
    methods: [...GET, 'DELETE'],
    pattern: /^\/(.+)\/blobs\/([^/]+)$/,
    handler: async (gw, req, res, m, forwarding) => {
      const name = checkName(m[1]!);
      const digest = checkDigest(decodeSegment(m[2]!, 'DIGEST_INVALID'));
      if (forwarding?.writes) {
        if (req.method === 'DELETE') return forwarding.writes.deleteBlob(deferred(gw, req, res, name, 'delete'), digest);
        if (pushProbe(gw, req, name)) return forwarding.getBlob(deferred(gw, req, res, name, 'push'), digest);
      }
      if (gw.backend === 'local') return local.blob(gw, req, res, name, digest);
      pulpOnlyReads(req);
      return pullBlob(gw, req, res, await gw.authorize(req, res, name), name, digest);
    },
  },
  {
    methods: ['GET'],
    pattern: /^\/(.+)\/referrers\/([^/]+)$/,
    handler: (gw, req, res, m) => {
      const name = checkName(m[1]!);
      const digest = checkDigest(decodeSegment(m[2]!, 'DIGEST_INVALID'));
      // 404 makes clients fall back to the sha256-<hex> tag schema.
      if (gw.backend !== 'local') throw new RegistryError('UNSUPPORTED', 'the referrers API needs content_backend: local', undefined, 404);
      return local.referrers(gw, req, res, name, digest);
    },
  },
];

const V1_ROUTES: Route[] = [
  { methods: GET, pattern: /^\/_ping$/, handler: (gw, req, res) => v1Ping(gw, req, res) },
  { methods: GET, pattern: /^\/search$/, handler: (gw, req, res) => v1Search(gw, req, res) },
];

function fail(gw: Gateway, req: Request, res: Response, err: unknown): void {
  if (err instanceof RegistryError) return sendOciError(res, err);
  if (err instanceof KatelloUnreachable) {
    req.log.warn(`${req.method} ${req.path}: ${err.message}`);
    res.set('Retry-After', String(UNREACHABLE_RETRY_AFTER));
    return sendOciError(res, new RegistryError('UNAVAILABLE', 'the main server is unreachable: try again later'));
  }
  if (err instanceof UpstreamError) {
    req.log.warn(`content backend: ${err.message}`);
    if (err.message === 'client went away') return void res.destroy();
    return sendOciError(res, new RegistryError('UNAVAILABLE', `the content backend failed: ${err.message}`, undefined, err.kind === 'timeout' ? 504 : 502));
  }
  req.log.error({ err }, `${req.method} ${req.originalUrl} failed: ${(err as Error).message}`);
  sendOciError(res, new RegistryError('UNKNOWN', 'internal error'));
}

function dispatcher(gw: Gateway, routes: Route[], forwarding: ContentBackend | undefined): express.RequestHandler {
  return async (req, res) => {
    res.set('Docker-Distribution-API-Version', 'registry/2.0');
    // Token realms, Locations and Links are built from the Host header.
    const host = req.get('host');
    if (host !== undefined && !isValidHost(host)) {
      return sendOciError(res, new RegistryError('UNKNOWN', `the Host header ${JSON.stringify(host.slice(0, 200))} is not a valid host[:port]`, undefined, 400));
    }
    const path = req.path;
    let pathMatched = false;
    for (const route of routes) {
      const m = route.pattern.exec(path);
      if (!m) continue;
      pathMatched = true;
      if (!route.methods.includes(req.method)) continue;
      try {
        await route.handler(gw, req, res, m, forwarding);
      } catch (err) {
        fail(gw, req, res, err);
      }
      return;
    }
    if (pathMatched) return sendOciError(res, new RegistryError('UNSUPPORTED', `${req.method} is not supported here`));
    sendOciError(res, new RegistryError('NAME_UNKNOWN', `no registry route for ${req.method} ${req.baseUrl}${path}`));
  };
}

export function registryRouter(gw: Gateway, forwarding?: ContentBackend): Router {
  const router = express.Router();
  router.use('/v2', dispatcher(gw, V2_ROUTES, forwarding));
  router.use('/v1', dispatcher(gw, V1_ROUTES, forwarding));
  return router;
}
