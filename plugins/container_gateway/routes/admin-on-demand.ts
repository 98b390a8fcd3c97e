// On-demand serving's counters, for `proxyctl status` (trusted host + client
// certificate, like the other admin routes): the download policy in force
// and, when it fetches from the main server, the hits, misses and bytes
// fetched since the daemon started, summed over its workers.
import express, { type RequestHandler, type Router } from 'express';
import { jsonErrors } from '../../../lib/plugins/api.ts';
import type { OnDemandTotals } from '../backends/on-demand-records.ts';
import type { DownloadPolicy } from '../settings.ts';

export function onDemandAdminRouter(trustedClient: RequestHandler, policy: DownloadPolicy, totals: () => Promise<OnDemandTotals> | undefined): Router {
  const router = express.Router();
  router.get('/admin/on_demand', trustedClient, async (_req, res) => {
    const counted = await totals();
    res.json({ download_policy: policy, ...(counted ? { hits: counted.hits, misses: counted.misses, bytes_fetched: counted.bytes_fetched } : {}) });
  });
  router.use('/admin/on_demand', jsonErrors);
  return router;
}
