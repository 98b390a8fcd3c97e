// The v1 leftovers clients still call: /v1/_ping and /v1/search.
import type { Request, Response } from 'express';
import { basicUser, sha256 } from '../auth/client.ts';
import { verifyPassword } from '../auth/passwords.ts';
import type { Gateway } from '../gateway.ts';
import { repositoriesOf } from '../upstream/katello.ts';

export async function v1Ping(gw: Gateway, req: Request, res: Response): Promise<void> {
  const up = await gw.pulp.request({ method: 'GET', path: gw.settings.pulp_registry_path, headers: { 'x-request-id': req.id } });
  up.resume();
  res.status(up.statusCode === 401 ? 200 : (up.statusCode ?? 502)).json({});
}

/**
 * GET /v1/search?q=&n=: substring search over what the caller may see.
 * containers/image sends Docker-Distribution-API-Version and must get 404,
 * so that it falls back to /v2/_catalog (as Katello answers).
 */
export async function v1Search(gw: Gateway, req: Request, res: Response): Promise<void> {
  if (req.get('docker-distribution-api-version') === 'registry/2.0') {
    res.status(404).json({});
    return;
  }
  const q = typeof req.query.q === 'string' ? req.query.q : '';
  const n = typeof req.query.n === 'string' && /^-?\d+$/.test(req.query.n) ? Number(req.query.n) : 25;
  const authorization = req.get('authorization');
  let viewer: { kind: 'user'; name: string } | { kind: 'anonymous' } = { kind: 'anonymous' };
  if (authorization && authorization !== 'Basic Og==' && gw.standalone) {
    // Standalone: the password is checked here.
    const user = basicUser(req);
    const password = Buffer.from(authorization.replace(/^Basic\s+/i, ''), 'base64').toString('utf8').slice((user?.length ?? 0) + 1);
    const hash = user ? gw.db.passwordHash(user) : undefined;
    if (!user || !hash || !(await verifyPassword(password, hash))) {
      gw.challenge(req, res);
      res.status(401).json({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
      return;
    }
    viewer = { kind: 'user', name: user };
  } else if (authorization && authorization !== 'Basic Og==') {
    const user = basicUser(req);
    const katello = gw.requireKatello();
    const reply = await katello.token([], user, authorization);
    const token = reply.status === 200 ? (JSON.parse(reply.text) as { token?: string }).token : undefined;
    if (!user || !token || token === 'unauthenticated' || token === 'unauthorized') {
      gw.challenge(req, res);
      res.status(401).json({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
      return;
    }
    gw.db.storeToken(sha256(token), Date.now() + gw.settings.token_max_lifetime * 1000, user);
    const catalog = await katello.userCatalog(user, authorization);
    if (catalog.status === 200) gw.db.setUserRepositories(user, repositoriesOf(catalog));
    viewer = { kind: 'user', name: user };
  }
  const names = n <= 0 ? [] : gw.db.visible(viewer, { limit: Math.min(n, 10_000), contains: q || undefined });
  res.json({ num_results: names.length, query: q, results: names.map((name) => ({ description: '', name })) });
}
