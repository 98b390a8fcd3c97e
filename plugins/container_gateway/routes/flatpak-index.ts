// GET /index/static: the flatpak registry index (what `flatpak remote-add`
// and `flatpak remote-ls` read), from the content backend (Pulp's index, or
// one built from the embedded store), filtered to what the caller may read:
// a verified host certificate → the host's repositories (its mapping asked
// of Katello when unknown), a user's token → the user's catalog, anonymous →
// public repositories only. Not a registry route: errors are {"error"}.
import express, { type Request, type Response, type Router } from 'express';
import { HttpError } from '../../../lib/plugins/api.ts';
import { viewerOf } from '../auth/client.ts';
import type { FlatpakQuery } from '../backends/content-backend.ts';
import { RegistryError } from '../oci/errors.ts';
import type { Gateway } from '../gateway.ts';
import { UpstreamError } from '../upstream/http-upstream.ts';

/** Every repository name a viewer may read, at most this many. */
const MAX_REPOSITORIES = 100_000;
/** Seconds a host waits before asking again when its repositories are not known yet. */
const HOST_RETRY_AFTER = 30;

/** The query as sent, decoded once, repeated keys kept in order. */
export function flatpakQuery(req: Request): FlatpakQuery {
  const raw = req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?') + 1) : '';
  return [...new URLSearchParams(raw)];
}

async function flatpakIndex(gw: Gateway, req: Request, res: Response): Promise<void> {
  const backend = gw.content;
  if (!backend.flatpakIndex) throw new HttpError(404, 'this content backend has no flatpak index');
  const client = await gw.access.client(req);
  if (client.kind === 'invalid') {
    gw.access.challenge(req, res);
    throw new HttpError(401, 'the token is unknown or expired: log in again');
  }
  if (client.kind === 'host') {
    await gw.access.learnHost(client.uuid);
    // A host whose repositories Katello could not tell would get a silently partial list.
    if (!gw.standalone && !(await gw.db.hostKnown(client.uuid))) {
      res.set('Retry-After', String(HOST_RETRY_AFTER));
      throw new HttpError(503, "the host's repositories could not be learnt from the main server: try again later");
    }
  }
  const viewer = viewerOf(client);
  const names = await gw.db.visible(viewer, { limit: MAX_REPOSITORIES });
  // flatpak pulls from `Registry`, resolved against the index URL: this gateway, as a directory.
  const origin = gw.access.origin(req).replace(/\/?$/, '/');
  const answer = await backend.flatpakIndex({ req, client, names, origin }, flatpakQuery(req));
  if (answer.kind === 'failure') {
    res.status(answer.status).type(answer.contentType).send(answer.body);
    return;
  }
  // The backend may know repositories this caller may not read (Pulp lists them all).
  const allowed = new Set(names);
  const Results = answer.index.Results.filter((r) => allowed.has(r.Name));
  res.status(200).json({ ...answer.index, Results });
}

function failure(req: Request, res: Response, err: unknown): void {
  if (res.headersSent) return void res.destroy();
  if (err instanceof HttpError) return void res.status(err.status).json({ error: err.message });
  if (err instanceof RegistryError) return void res.status(err.status).json({ error: err.message });
  if (err instanceof UpstreamError) {
    req.log.warn(`flatpak index: ${err.message}`);
    return void res.status(err.kind === 'timeout' ? 504 : 502).json({ error: `the content backend failed: ${err.message}` });
  }
  req.log.error({ err }, `flatpak index failed: ${(err as Error).message}`);
  res.status(500).json({ error: 'internal error' });
}

export function flatpakIndexRouter(gw: Gateway): Router {
  const router = express.Router();
  router.get('/index/static', (req, res) => {
    flatpakIndex(gw, req, res).catch((err: unknown) => failure(req, res, err));
  });
  return router;
}
