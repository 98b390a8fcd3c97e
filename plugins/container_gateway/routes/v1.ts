// The v1 leftovers clients still call: /v1/_ping here, /v1/search in search.ts.
import type { Request, Response } from 'express';
import type { Gateway } from '../gateway.ts';

export async function v1Ping(gw: Gateway, req: Request, res: Response): Promise<void> {
  const up = await gw.pulp.request({ method: 'GET', path: gw.settings.pulp_registry_path, headers: { 'x-request-id': req.id } });
  up.resume();
  res.status(up.statusCode === 401 ? 200 : (up.statusCode ?? 502)).json({});
}

// Until the registry router imports it from search.ts.
export { v1Search } from './search.ts';
