// n/last paging with an RFC 5988 Link to the next page, for tags and catalog.
import type { Request, Response } from 'express';

export const MAX_PAGE = 10_000;

/**
 * Take one page from `fetch(limit)` (up to limit items after `last`); set Link
 * when more remain. The source is asked even for n=0, so that it can refuse
 * (an unknown repository is unknown whatever the page size).
 */
export async function page<T extends string>(req: Request, res: Response, origin: string, path: string, n: number | undefined, fetch: (limit: number) => T[] | Promise<T[]>): Promise<T[]> {
  const size = n === 0 ? 0 : Math.min(n ?? MAX_PAGE, MAX_PAGE);
  const items = await fetch(size + 1);
  if (items.length <= size) return items;
  if (size === 0) return [];
  const shown = items.slice(0, size);
  const query = new URLSearchParams({ n: String(size), last: shown[shown.length - 1]! });
  res.set('Link', `<${origin}${req.baseUrl}${path}?${query}>; rel="next"`);
  return shown;
}
