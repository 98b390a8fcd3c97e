// Tags and referrers of the embedded store.
import type { Request, Response } from 'express';
import type { Gateway } from '../../gateway.ts';
import { OCI_INDEX } from '../../oci/manifest.ts';
import { page } from '../paging.ts';
import { parseLast, parseN } from '../../oci/grammar.ts';

export function localTags(gw: Gateway, req: Request, res: Response, name: string, repositoryId: number): void {
  const n = parseN(req.query.n);
  const last = parseLast(req.query.last);
  const tags = page(req, res, gw.origin(req), `/${name}/tags/list`, n, (limit) => gw.localStore().index.tags(repositoryId, last, limit));
  res.json({ name, tags });
}

/** GET /v2/<name>/referrers/<digest>[?artifactType=]: always 200 with an image index. */
export function referrers(gw: Gateway, req: Request, res: Response, repositoryId: number, digest: string): void {
  const filter = typeof req.query.artifactType === 'string' ? req.query.artifactType : undefined;
  const manifests = gw.localStore().index.referrers(repositoryId, digest, filter);
  if (filter !== undefined) res.set('OCI-Filters-Applied', 'artifactType');
  // Exactly the index media type: a string body would get '; charset=utf-8' added.
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));
  res.status(200).set({ 'Content-Type': OCI_INDEX, 'Content-Length': String(body.length) }).end(body);
}
