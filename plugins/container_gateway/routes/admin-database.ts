// The gateway's database as `proxyctl status` shows it (trusted host + client
// certificate, like the other admin routes): its kind and place (never a
// password), whether it answers a trivial query now, and on PostgreSQL the
// connections of this process's pool and what its read cache answered. Asked of the worker that takes the
// request: each worker has a pool of its own.
import express, { type RequestHandler, type Router } from 'express';
import { jsonErrors } from '../../../lib/plugins/api.ts';
import { PING_TIMEOUT_MS, type OpenDatabase } from '../db/open.ts';

export function databaseAdminRouter(trustedClient: RequestHandler, database: OpenDatabase): Router {
  const router = express.Router();
  router.get('/admin/database', trustedClient, async (_req, res) => {
    const reachability = await database.ping(PING_TIMEOUT_MS);
    const pool = database.poolStats();
    const cache = database.readCacheStats();
    res.json({
      kind: database.kind,
      description: database.description,
      ...reachability,
      ...(pool ? { pool: { in_use: pool.total - pool.idle, open: pool.total, waiting: pool.waiting, max: pool.max } } : {}),
      ...(cache ? { read_cache: cache } : {}),
    });
  });
  router.use('/admin/database', jsonErrors);
  return router;
}
