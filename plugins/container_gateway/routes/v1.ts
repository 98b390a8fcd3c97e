// The v1 leftovers clients still call: /v1/_ping here, /v1/search in search.ts.
import type { Request, Response } from 'express';
import type { Gateway } from '../gateway.ts';

export async function v1Ping(gw: Gateway, req: Request, res: Response): Promise<void> {
  // A backend with its own registry root is asked (401 there means it is up); the embedded store is here.
  const status = gw.content.ping ? await gw.content.ping(req) : 200;
  res.status(status === 401 ? 200 : status).json({});
}
