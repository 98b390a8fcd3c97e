// GET /v2/_catalog: the repositories this client may see, from the database
// (whatever the content backend), paged with n/last/Link.
import type { Request, Response } from 'express';
import { viewerOf } from '../auth/client.ts';
import { RegistryError } from '../oci/errors.ts';
import { parseLast, parseN } from '../oci/grammar.ts';
import type { Gateway } from '../gateway.ts';
import { page } from './paging.ts';

export async function catalog(gw: Gateway, req: Request, res: Response): Promise<void> {
  const n = parseN(req.query.n);
  const last = parseLast(req.query.last);
  const client = await gw.access.client(req);
  // As the original: the public list needs at least the special tokens; no credentials → challenge.
  if (client.kind === 'invalid' || (client.kind === 'anonymous' && !client.token)) {
    gw.access.challenge(req, res, 'registry:catalog:*');
    throw new RegistryError('UNAUTHORIZED');
  }
  if (client.kind === 'host') await gw.access.learnHost(client.uuid);
  const viewer = viewerOf(client);
  const repositories = await page(req, res, gw.access.origin(req), '/_catalog', n, (limit) => gw.db.visible(viewer, { last, limit }));
  res.json({ repositories });
}
