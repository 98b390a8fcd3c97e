// The root API Foreman reads (shapes as smart-proxy's root module), plus
// liveness and readiness probes for service managers and load balancers.
import express, { type RequestHandler, type Router } from 'express';
import type { DaemonView, PluginStatus } from '../plugins/types.ts';

function running(plugins: PluginStatus[]): PluginStatus[] {
  return plugins.filter((p) => p.state === 'running');
}

/** Entry of GET /v2/features; `message` is our addition, only on failed plugins. */
export function featureEntry(p: PluginStatus): Record<string, unknown> {
  return {
    http_enabled: p.httpEnabled,
    https_enabled: p.httpsEnabled,
    settings: p.exposedSettings,
    state: p.state,
    capabilities: p.capabilities,
    ...(p.state === 'failed' && p.message ? { message: p.message } : {}),
  };
}

export function rootApi(daemon: DaemonView, trustedClient: RequestHandler): Router {
  const router = express.Router();

  router.get('/features', (_req, res) => {
    res.json(running(daemon.plugins()).map((p) => p.name).sort());
  });

  router.get('/version', (_req, res) => {
    const modules = Object.fromEntries(running(daemon.plugins()).map((p) => [p.name, p.version]));
    res.json({ version: daemon.version, modules });
  });

  router.get('/v2/features', trustedClient, (_req, res) => {
    res.json(Object.fromEntries(daemon.plugins().map((p) => [p.name, featureEntry(p)])));
  });

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'alive' });
  });

  // Not ready: an enabled plugin is not running, or a running one cannot serve now (its `ready` hook says why).
  router.get('/readyz', async (_req, res) => {
    const notRunning = daemon.plugins().filter((p) => p.state !== 'running' && p.state !== 'disabled').map((p) => p.name);
    const unready = await daemon.unready();
    const ready = notRunning.length === 0 && Object.keys(unready).length === 0;
    res.status(ready ? 200 : 503).json({ ready, not_running: notRunning, ...(Object.keys(unready).length > 0 ? { not_ready: unready } : {}) });
  });

  return router;
}
