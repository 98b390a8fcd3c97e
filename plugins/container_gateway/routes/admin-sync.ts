// The sync admin API, for `proxyctl sync` (trusted host + client certificate,
// like the other admin routes). Starting a run answers at once (202): the run
// goes on in the background of this worker, and any worker can answer about
// it, as runs are kept in the database. A gateway that cannot sync (pulp
// backend, or no main server) answers 409 with the reason on every route.
import express, { type Request, type RequestHandler, type Router } from 'express';
import { badRequest, conflict, jsonErrors, jsonObjectBody, notFound, quoteValue as quote } from '../../../lib/plugins/api.ts';
import { validRepositoryName } from '../auth/standalone.ts';
import type { SyncService } from '../sync/service.ts';

const MAX_BODY = 1024 * 1024;

/** The repositories asked for: null for the whole catalog (an empty body, or no `repositories`). */
function requested(req: Request): string[] | null {
  const text = typeof req.body === 'string' ? req.body.trim() : '';
  if (text === '') return null;
  const body = jsonObjectBody(req);
  for (const key of Object.keys(body)) if (key !== 'repositories') throw badRequest(`unknown key ${quote(key)} (expected repositories)`);
  const list = body.repositories;
  if (list === undefined) return null;
  if (!Array.isArray(list) || list.length === 0) throw badRequest("'repositories' must be a non-empty array of repository names (or left out for the whole catalog)");
  for (const name of list) {
    if (typeof name !== 'string' || !validRepositoryName(name)) throw badRequest(`invalid repository name ${quote(typeof name === 'string' ? name : JSON.stringify(name))}`);
  }
  return [...new Set(list as string[])];
}

export function syncAdminRouter(trustedClient: RequestHandler, service: SyncService): Router {
  const router = express.Router();
  const body = express.text({ type: () => true, limit: MAX_BODY });
  const available: RequestHandler = (_req, _res, next) => {
    const why = service.unavailable();
    next(why ? conflict(why) : undefined);
  };

  router.post('/sync', trustedClient, available, body, async (req, res) => {
    const started = await service.start(requested(req));
    if ('running' in started) {
      const { id, started_at } = started.running;
      throw conflict(`sync #${id} is running (started ${started_at}): wait for it to end`, { id });
    }
    res.status(202).json({ id: started.run.id, state: started.run.state });
  });

  router.get('/sync', trustedClient, available, async (_req, res) => {
    const run = await service.latest();
    if (!run) throw notFound('no sync has run yet');
    res.json(run);
  });

  router.get('/sync/:id', trustedClient, available, async (req, res) => {
    const id = String(req.params.id);
    if (!/^[1-9][0-9]{0,15}$/.test(id)) throw badRequest(`invalid sync id ${quote(id)}`);
    const run = await service.get(Number(id));
    if (!run) throw notFound(`no sync #${id}`);
    res.json(run);
  });

  router.use('/sync', jsonErrors);
  return router;
}
