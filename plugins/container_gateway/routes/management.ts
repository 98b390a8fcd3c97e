// The management API Katello calls after each capsule sync, behind trusted
// host + client certificate, mounted in smart-proxy mode only (foreman_url
// set): in standalone mode these routes do not exist (404), as the
// repositories there are the users' own pushes and no Katello manages them.
// Bodies in Rack's nested form encoding (as Foreman sends them) or JSON; each
// call replaces its list in one transaction. A body that does not parse
// answers 400 and changes nothing.
import express, { type Request, type Response, type Router } from 'express';
import { badRequest, bodyType, HttpError, jsonErrors } from '../../../lib/plugins/api.ts';
import type { Gateway } from '../gateway.ts';
import { parseHostRepositoryMapping, parseHosts, parseRepositoryList, parseUserRepositoryMapping, PayloadError } from '../management/payloads.ts';
import { FormParseError, MAX_FORM_BYTES, parseRackForm } from '../management/rack-form.ts';

function parseBody(req: Request): unknown {
  const type = bodyType(req);
  const text = typeof req.body === 'string' ? req.body : '';
  if (type === 'application/json') {
    try {
      return text.trim() === '' ? {} : (JSON.parse(text) as unknown);
    } catch (err) {
      throw badRequest(`the body is not valid JSON: ${(err as Error).message}`);
    }
  }
  if (type === 'application/x-www-form-urlencoded' || (type === '' && text === '')) return parseRackForm(text);
  throw badRequest(`unsupported Content-Type '${type || '(none)'}': send application/x-www-form-urlencoded or application/json`);
}

function handler(work: (body: unknown) => Promise<Record<string, unknown> | void>): express.RequestHandler {
  return async (req, res) => {
    let result: Record<string, unknown> | void;
    try {
      result = await work(parseBody(req));
    } catch (err) {
      const refusal = err instanceof FormParseError || err instanceof PayloadError ? badRequest(err.message) : err;
      // Katello's calls are not interactive: what it sent wrong is worth a line in the log.
      if (refusal instanceof HttpError) req.log.warn(`${req.method} ${req.originalUrl} refused: ${refusal.message}`);
      throw refusal;
    }
    res.status(200).json(result ?? {});
  };
}

export function managementRouter(gw: Gateway): Router {
  const router = express.Router();
  const trusted = gw.ctx.auth.trustedClient;
  // Foreman PUTs with a trailing slash; accept both forms. Each route ends
  // with the JSON error handler: it answers alike wherever it is mounted.
  const put = (path: string, work: (body: unknown) => Promise<Record<string, unknown> | void>) =>
    router.put([path, `${path}/`], trusted, express.text({ type: () => true, limit: MAX_FORM_BYTES }), handler(work), jsonErrors);

  router.get(['/users', '/users/'], trusted, async (_req: Request, res: Response) => {
    res.json({ users: await gw.db.users() });
  }, jsonErrors);
  put('/repository_list', async (body) => {
    const entries = parseRepositoryList(body);
    const { unlisted } = await gw.db.replaceRepositories(entries);
    // Katello sends the list after every sync: what was synced must be served at once,
    // and tags served on demand are checked against the main server on their next read.
    await gw.contentChanged();
    gw.logger.info(`repository list replaced: ${entries.length} repositories${unlisted > 0 ? `, ${unlisted} unlisted (content kept until gc)` : ''}`);
    return { repositories: entries.length, unlisted };
  });
  put('/user_repository_mapping', async (body) => {
    const mapping = parseUserRepositoryMapping(body);
    await gw.db.replaceUserMappings(mapping);
    return { users: mapping.size };
  });
  put('/update_hosts', async (body) => {
    const hosts = parseHosts(body);
    await gw.db.replaceHosts(hosts);
    return { hosts: hosts.length };
  });
  put('/host_repository_mapping', async (body) => {
    const mapping = parseHostRepositoryMapping(body);
    await gw.db.replaceHostMappings(mapping);
    return { hosts: mapping.size };
  });
  put('/update_host_repositories', async (body) => {
    const mapping = parseHostRepositoryMapping(body);
    for (const [uuid, entries] of mapping) await gw.db.setHostRepositories(uuid, entries.filter((e) => e.authRequired).map((e) => e.name));
    return { hosts: mapping.size };
  });
  return router;
}
