// Pulp's own /v2/ API (unix socket or TCP) under /pulpcore_registry/v2/, as
// the front web server used to pass it. Pulp takes the remote-user header
// (Remote-User by default: its web server drops names with '_') to name the
// caller, so that header carries the CN of a client certificate this daemon's
// TLS verified, and nothing else: a client's own copy never passes,
// and no verified certificate means no header.
import type http from 'node:http';
import express, { type Router } from 'express';
import type { PluginContext } from '../../../lib/plugins/api.ts';
import { ociBody } from '../oci/errors.ts';
import type { GatewaySettings } from '../settings.ts';
import { HttpUpstream, UpstreamError } from '../upstream/http-upstream.ts';
import { streamTo } from '../upstream/stream.ts';

const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'x-registry-supports-signatures']);
export const PULPCORE_PREFIX = '/pulpcore_registry/v2';

export function pulpcoreRouter(ctx: PluginContext, settings: GatewaySettings, upstream: HttpUpstream): Router {
  const router = express.Router();
  const userHeader = settings.remote_user_header.toLowerCase();
  // A client's copy is dropped under either spelling ('_' or '-'), whichever one the backend reads.
  const isUserHeader = (k: string) => k.replace(/_/g, '-') === userHeader.replace(/_/g, '-');
  router.use(PULPCORE_PREFIX, async (req, res) => {
    const headers: http.OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k) && !isUserHeader(k) && v !== undefined) headers[k] = v;
    const identity = ctx.auth.identity(req);
    if (identity.certificate === 'verified' && identity.cn) headers[userHeader] = identity.cn;
    headers['x-request-id'] = req.id;
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    const controller = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) controller.abort();
    });
    let up: http.IncomingMessage;
    try {
      up = await upstream.request({ method: req.method, path: `/v2${req.url}`, headers, body: hasBody ? req : undefined, signal: controller.signal });
    } catch (err) {
      const timeout = err instanceof UpstreamError && err.kind === 'timeout';
      req.log.warn(`pulpcore API: ${(err as Error).message}`);
      if (!res.headersSent) res.status(timeout ? 504 : 502).type('application/json').send(ociBody('UNAVAILABLE', `Pulp's API failed: ${(err as Error).message}`));
      return;
    }
    res.status(up.statusCode ?? 502);
    for (const [k, v] of Object.entries(up.headers)) {
      if (HOP_BY_HOP.has(k) || v === undefined) continue;
      // Pulp's relative Locations point at its own /v2/: keep clients on this route.
      res.setHeader(k, k === 'location' && typeof v === 'string' && v.startsWith('/v2/') ? `${PULPCORE_PREFIX}${v.slice(3)}` : v);
    }
    await streamTo(up, res).catch((err: Error) => req.log.warn(`pulpcore API response cut: ${err.message}`));
  });
  return router;
}
