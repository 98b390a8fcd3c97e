// GET /metrics: the Prometheus text page; the whole cluster's with `workers`.
// Open or for trusted clients only (metrics_access): no label names a
// repository or a user, but the page tells how much is pulled, from where, and
// how many logins fail, so by default only trusted clients read it.
import express, { type RequestHandler, type Router } from 'express';
import { serviceUnavailable } from '../http/errors.ts';
import { clusterMetricsText, inCluster } from './cluster.ts';
import type { DaemonMetrics } from './metrics.ts';

export function metricsRouter(metrics: DaemonMetrics, access: 'open' | 'trusted', trustedClient: RequestHandler): Router {
  const router = express.Router();
  const guard: RequestHandler = access === 'open' ? (_req, _res, next) => next() : trustedClient;
  router.get('/metrics', guard, async (_req, res) => {
    let text: string;
    try {
      text = inCluster() ? await clusterMetricsText() : await metrics.registry.metrics();
    } catch (err) {
      throw serviceUnavailable((err as Error).message);
    }
    res.type(metrics.registry.contentType).send(text);
  });
  return router;
}
