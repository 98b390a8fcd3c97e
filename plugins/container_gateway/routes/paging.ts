// n/last paging with an RFC 5988 Link to the next page, for tags and catalog.
import type { Request, Response } from 'express';

export const MAX_PAGE = 10_000;

/** Take one page from `fetch(limit)` (which returns up to limit items after `last`); set Link when more remain. */
export function page<T extends string>(req: Request, res: Response, origin: string, path: string, n: number | undefined, fetch: (limit: number) => T[]): T[] {
  if (n === 0) return [];
  const size = Math.min(n ?? MAX_PAGE, MAX_PAGE);
  const items = fetch(size + 1);
  if (items.length <= size) return items;
  const shown = items.slice(0, size);
  const query = new URLSearchParams({ n: String(size), last: shown[shown.length - 1]! });
  res.set('Link', `<${origin}${req.baseUrl}${path}?${query}>; rel="next"`);
  return shown;
}
