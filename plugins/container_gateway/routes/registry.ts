// The registry API, mounted at the listener root and under /container_gateway:
// one table of paths and methods, each to a named handler with the access it
// needs. The access layer decides before any handler runs; the content
// backend chosen in setup serves. A backend without writes (or referrers)
// gets no such routes: their known paths answer what it cannot do. Every
// answer carries Docker-Distribution-API-Version; every error is an OCI body.
import express, { type Request, type Response, type Router } from 'express';
import { isValidHost } from '../../../lib/plugins/api.ts';
import type { Requirement } from '../access/access-layer.ts';
import type { ContentBackend } from '../backends/content-backend.ts';
import { RegistryError, sendOciError } from '../oci/errors.ts';
import type { Gateway } from '../gateway.ts';
import { deleteBlob, getBlob } from './blobs.ts';
import { catalog } from './catalog.ts';
import { ping, token } from './token.ts';
import { deleteManifest, getManifest, putManifest } from './manifests.ts';
import { ociFailure } from './oci-failure.ts';
import { digestPath, manifestPath, PUSH_UNSUPPORTED, repositoryPath, uploadPath, type RepositoryPath, type ResourceHandler } from './paths.ts';
import { listReferrers, referrersUnsupported } from './referrers.ts';
import { tagsList } from './tags.ts';
import { cancelUpload, finishUpload, patchUpload, startUpload, uploadStatus } from './uploads.ts';
import { v1Search } from './search.ts';
import { v1Ping } from './v1.ts';

interface Route {
  methods: readonly string[];
  pattern: RegExp;
  serve(gw: Gateway, req: Request, res: Response, m: RegExpExecArray): Promise<unknown> | unknown;
}

type OpenHandler = (gw: Gateway, req: Request, res: Response) => unknown;

const GET = ['GET', 'HEAD'];
const TAGS = /^\/(.+)\/tags\/list$/;
const MANIFEST = /^\/(.+)\/manifests\/([^/]+)$/;
const UPLOADS = /^\/(.+)\/blobs\/uploads\/?$/;
const UPLOAD = /^\/(.+)\/blobs\/uploads\/([^/]+)$/;
const BLOB = /^\/(.+)\/blobs\/([^/]+)$/;
const REFERRERS = /^\/(.+)\/referrers\/([^/]+)$/;

/** A route that decides its own access (ping, token, catalog, v1). */
function open(methods: readonly string[], pattern: RegExp, handler: OpenHandler): Route {
  return { methods, pattern, serve: (gw, req, res) => handler(gw, req, res) };
}

/** A repository route: the path validated, then the access middleware, then the handler with the Access. */
function guarded<P extends RepositoryPath>(methods: readonly string[], pattern: RegExp, parse: (m: RegExpExecArray) => P, need: Requirement, handler: ResourceHandler<P>): Route {
  return {
    methods,
    pattern,
    async serve(gw, req, res, m) {
      const path = parse(m);
      const access = await gw.access.authorize(req, res, path.name, need);
      return handler(gw, { req, res, access }, path);
    },
  };
}

/** What a known path answers when the backend cannot do it (the path still validated first). */
function unavailable<P>(methods: readonly string[], pattern: RegExp, parse: (m: RegExpExecArray) => P, refusal: () => RegistryError): Route {
  return {
    methods,
    pattern,
    serve(_gw, _req, _res, m) {
      parse(m);
      throw refusal();
    },
  };
}

function v2Routes(content: ContentBackend): Route[] {
  const pushUnsupported = () => new RegistryError('UNSUPPORTED', PUSH_UNSUPPORTED);
  const write = <P extends RepositoryPath>(methods: readonly string[], pattern: RegExp, parse: (m: RegExpExecArray) => P, need: Requirement, handler: ResourceHandler<P>): Route =>
    content.writes ? guarded(methods, pattern, parse, need, handler) : unavailable(methods, pattern, parse, pushUnsupported);
  return [
    open(GET, /^\/$/, ping),
    open(['GET'], /^\/token$/, token),
    open(GET, /^\/_catalog$/, catalog),
    guarded(GET, TAGS, repositoryPath, 'pull', tagsList),
    guarded(GET, MANIFEST, manifestPath, 'read', getManifest),
    write(['PUT'], MANIFEST, manifestPath, 'push', putManifest),
    write(['DELETE'], MANIFEST, manifestPath, 'delete', deleteManifest),
    write(['POST'], UPLOADS, repositoryPath, 'push', startUpload),
    write(['PATCH'], UPLOAD, uploadPath, 'push', patchUpload),
    write(['PUT'], UPLOAD, uploadPath, 'push', finishUpload),
    write(['GET'], UPLOAD, uploadPath, 'push', uploadStatus),
    write(['DELETE'], UPLOAD, uploadPath, 'push', cancelUpload),
    guarded(GET, BLOB, digestPath, 'read', getBlob),
    write(['DELETE'], BLOB, digestPath, 'delete', deleteBlob),
    content.referrers ? guarded(['GET'], REFERRERS, digestPath, 'pull', listReferrers) : unavailable(['GET'], REFERRERS, digestPath, referrersUnsupported),
  ];
}

const V1_ROUTES: Route[] = [open(GET, /^\/_ping$/, v1Ping), open(GET, /^\/search$/, v1Search)];

function dispatcher(gw: Gateway, routes: Route[]): express.RequestHandler {
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
        await route.serve(gw, req, res, m);
      } catch (err) {
        ociFailure(req, res, err);
      }
      return;
    }
    if (pathMatched) return sendOciError(res, new RegistryError('UNSUPPORTED', `${req.method} is not supported here`));
    sendOciError(res, new RegistryError('NAME_UNKNOWN', `no registry route for ${req.method} ${req.baseUrl}${path}`));
  };
}

export function registryRouter(gw: Gateway): Router {
  const router = express.Router();
  router.use('/v2', dispatcher(gw, v2Routes(gw.content)));
  router.use('/v1', dispatcher(gw, V1_ROUTES));
  return router;
}
