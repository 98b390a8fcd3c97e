// Which node this is, for `proxyctl status` (trusted host + client
// certificate, like the other admin routes): where several proxies share one
// database and storage behind a load balancer, the status of each says which
// one answered.
import express, { type RequestHandler, type Router } from 'express';
import { jsonErrors } from '../../../lib/plugins/api.ts';

export function nodeAdminRouter(trustedClient: RequestHandler, nodeName: string): Router {
  const router = express.Router();
  router.get('/admin/node', trustedClient, (_req, res) => {
    res.json({ node_name: nodeName });
  });
  router.use('/admin/node', jsonErrors);
  return router;
}
