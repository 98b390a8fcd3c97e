// GET /v2/_catalog (from the database, paged with n/last/Link) and
// GET /v2/<name>/tags/list (from the backend, paged here so every backend pages alike).
import type { Request, Response } from 'express';
import { viewerOf, type RegistryClient } from '../auth/client.ts';
import { RegistryError } from '../oci/errors.ts';
import type { Gateway } from '../gateway.ts';
import { readBounded } from '../upstream/http-upstream.ts';
import { page } from './paging.ts';
import { parseLast, parseN } from '../oci/grammar.ts';

export async function catalog(gw: Gateway, req: Request, res: Response): Promise<void> {
  const n = parseN(req.query.n);
  const last = parseLast(req.query.last);
  const client = gw.client(req);
  // As the original: the public list needs at least the special tokens; no credentials → challenge.
  if (client.kind === 'invalid' || (client.kind === 'anonymous' && !client.token)) {
    gw.challenge(req, res, 'registry:catalog:*');
    throw new RegistryError('UNAUTHORIZED');
  }
  if (client.kind === 'host') await gw.learnHost(client.uuid);
  const viewer = viewerOf(client);
  const repositories = page(req, res, gw.origin(req), '/_catalog', n, (limit) => gw.db.visible(viewer, { last, limit }));
  res.json({ repositories });
}

const MAX_UPSTREAM_PAGES = 100;

/** Every tag of a repository, following the backend's own Link pages. */
async function allTags(gw: Gateway, req: Request, client: RegistryClient, name: string): Promise<string[]> {
  const tags: string[] = [];
  let path = `${gw.settings.pulp_registry_path}${name}/tags/list?n=1000`;
  for (let i = 0; i < MAX_UPSTREAM_PAGES; i++) {
    const headers: Record<string, string> = { accept: 'application/json', 'x-request-id': req.id };
    if (client.kind === 'user') headers[gw.settings.remote_user_header] = client.name;
    if (client.kind === 'host') headers[gw.settings.remote_user_header] = client.uuid;
    const up = await gw.pulp.request({ method: 'GET', path, headers });
    const { body, complete } = await readBounded(up, 16 * 1024 * 1024);
    if (up.statusCode === 404) throw new RegistryError('NAME_UNKNOWN', 'Repository name unknown', { name });
    if (up.statusCode !== 200 || !complete) throw new RegistryError('UNAVAILABLE', `the content backend answered ${up.statusCode} for the tag list`, undefined, 502);
    const parsed = JSON.parse(body.toString('utf8')) as { tags?: unknown };
    if (Array.isArray(parsed.tags)) tags.push(...parsed.tags.filter((t): t is string => typeof t === 'string'));
    const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(String(up.headers.link ?? ''))?.[1];
    if (!next) break;
    const url = new URL(next, gw.pulp.origin);
    path = url.pathname.slice(url.pathname.startsWith(gw.pulp.basePath) ? gw.pulp.basePath.length : 0) + url.search;
  }
  return [...new Set(tags)].sort();
}

export async function tagsList(gw: Gateway, req: Request, res: Response, client: RegistryClient, name: string): Promise<void> {
  const n = parseN(req.query.n);
  const last = parseLast(req.query.last);
  const tags = await allTags(gw, req, client, name);
  const shown = page(req, res, gw.origin(req), `/${name}/tags/list`, n, (limit) => tags.filter((t) => last === undefined || t > last).slice(0, limit));
  res.json({ name, tags: shown });
}
