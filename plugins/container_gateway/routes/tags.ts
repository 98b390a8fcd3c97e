// GET /v2/<name>/tags/list: the backend lists, the route pages, so that every
// backend pages alike (n/last, a Link to the next page).
import { parseLast, parseN } from '../oci/grammar.ts';
import { page } from './paging.ts';
import type { RepositoryPath, ResourceHandler } from './paths.ts';

export const tagsList: ResourceHandler<RepositoryPath> = async (gw, x, { name }) => {
  const n = parseN(x.req.query.n);
  const last = parseLast(x.req.query.last);
  const tags = await page(x.req, x.res, gw.access.origin(x.req), `/${name}/tags/list`, n, (limit) => gw.content.tags(x, last, limit));
  x.res.json({ name, tags });
};
