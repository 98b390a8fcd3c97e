// The sync admin API, for `proxyctl sync` (trusted host + client certificate,
// like the other admin routes; errors as {"error": "..."}):
//
//   POST /container_gateway/sync      {"repositories":["org/app",...]} (optional; empty body: the whole catalog)
//                                     202 {"id","state":"running"} | 400 bad body | 409 one is running, or
//                                     this gateway cannot sync (content_backend: pulp, no foreman_url)
//   GET  /container_gateway/sync      200 the running or last run | 404 none yet
//   GET  /container_gateway/sync/ID   200 that run | 404
//
// A run: {"id","state":"running|succeeded|failed|interrupted","repositories":[...]|null,"started_at",
// "finished_at"?,"progress":{"repositories":{"done","total"},"tags":{"done","total"},
// "blobs":{"done","total","transferred"},"bytes"},"error"?,"retrying"?:{"attempt","retries","delayMs","reason","message"},"pid"}
import express, { type ErrorRequestHandler, type Request, type RequestHandler, type Response, type Router } from 'express';
import { validRepositoryName } from '../auth/standalone.ts';
import type { SyncService } from '../sync/service.ts';

const MAX_BODY = 1024 * 1024;

class BadRequest extends Error {}

function quote(value: string): string {
  return JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}...` : value);
}

/** The repositories asked for: null for the whole catalog. */
function requested(req: Request): string[] | null {
  const text = typeof req.body === 'string' ? req.body.trim() : '';
  if (text === '') return null;
  const type = (req.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') throw new BadRequest(`unsupported Content-Type '${type || '(none)'}': send application/json`);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new BadRequest(`the body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequest('the body must be a JSON object');
  for (const key of Object.keys(body)) if (key !== 'repositories') throw new BadRequest(`unknown key ${quote(key)} (expected repositories)`);
  const list = (body as { repositories?: unknown }).repositories;
  if (list === undefined) return null;
  if (!Array.isArray(list) || list.length === 0) throw new BadRequest("'repositories' must be a non-empty array of repository names (or left out for the whole catalog)");
  for (const name of list) {
    if (typeof name !== 'string' || !validRepositoryName(name)) throw new BadRequest(`invalid repository name ${quote(typeof name === 'string' ? name : JSON.stringify(name))}`);
  }
  return [...new Set(list as string[])];
}

function handle(work: (req: Request, res: Response) => void): RequestHandler {
  return (req, res, next) => {
    try {
      work(req, res);
    } catch (err) {
      if (err instanceof BadRequest) res.status(400).json({ error: err.message });
      else next(err);
    }
  };
}

/** Body-parser failures (too large, bad encoding) as JSON. */
const bodyErrors: ErrorRequestHandler = (err, _req, res, next) => {
  const status = typeof err?.status === 'number' ? (err.status as number) : 500;
  if (status >= 400 && status < 500 && !res.headersSent) {
    res.status(status).json({ error: err.type === 'entity.too.large' ? `the body is larger than ${MAX_BODY} bytes` : String(err.message) });
    return;
  }
  next(err);
};

export function syncAdminRouter(trustedClient: RequestHandler, service: SyncService): Router {
  const router = express.Router();
  const body = express.text({ type: () => true, limit: MAX_BODY });
  const available: RequestHandler = (_req, res, next) => {
    const why = service.unavailable();
    if (why) res.status(409).json({ error: why });
    else next();
  };

  router.post('/sync', trustedClient, available, body, handle((req, res) => {
    const started = service.start(requested(req));
    if ('running' in started) {
      res.status(409).json({ error: `sync #${started.running.id} is running (started ${started.running.started_at}): wait for it to end`, id: started.running.id });
      return;
    }
    res.status(202).json({ id: started.run.id, state: started.run.state });
  }));

  router.get('/sync', trustedClient, available, handle((_req, res) => {
    const run = service.latest();
    if (run) res.json(run);
    else res.status(404).json({ error: 'no sync has run yet' });
  }));

  router.get('/sync/:id', trustedClient, available, handle((req, res) => {
    const id = String(req.params.id);
    if (!/^[1-9][0-9]{0,15}$/.test(id)) throw new BadRequest(`invalid sync id ${quote(id)}`);
    const run = service.get(Number(id));
    if (run) res.json(run);
    else res.status(404).json({ error: `no sync #${id}` });
  }));

  router.use('/sync', bodyErrors);
  return router;
}
