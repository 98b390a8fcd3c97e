// GET /v1/search?q=&n=: the v1 search clients still call, a substring search
// over what the caller may see. The caller logs in as at /v2/token: against
// this gateway's users (standalone) or through Katello, the same login.
import type { Request, Response } from 'express';
import { acceptToken, isUserToken, katelloLogin, tokenOf } from '../auth/katello-login.ts';
import { basicCredentials, hasCredentials } from '../auth/login-guard.ts';
import { authenticate } from '../auth/standalone.ts';
import type { Gateway } from '../gateway.ts';

type Viewer = { kind: 'user'; name: string } | { kind: 'anonymous' };

/**
 * Who searches, or undefined when the credentials were refused (401 and the
 * challenge answered). containers/image sends Docker-Distribution-API-Version
 * and must get 404, so that it falls back to /v2/_catalog (as Katello answers).
 */
async function searcher(gw: Gateway, req: Request, res: Response): Promise<Viewer | undefined> {
  if (!hasCredentials(req)) return { kind: 'anonymous' };
  const credentials = basicCredentials(req);
  if (!credentials) return undefined;
  if (gw.standalone) {
    // The password is checked here, as /v2/token checks it (throttled, bounded hashing).
    const ok = await gw.logins.attempt(req, res, credentials.user, () => authenticate(gw.standaloneAccounts(), gw.logins.hasher, credentials.user, credentials.password));
    return ok ? { kind: 'user', name: credentials.user } : undefined;
  }
  const login = await katelloLogin(gw, req, res, [], credentials.user);
  if (login.kind === 'local') return login.user === undefined ? undefined : { kind: 'user', name: login.user };
  const token = tokenOf(login.reply);
  if (!isUserToken(token)) return undefined;
  // A catalog Katello refuses leaves the user's lists as they were: the search shows what they allow.
  await acceptToken(gw, { reply: login.reply, token, account: credentials.user, authorization: req.get('authorization'), scopes: [] });
  return { kind: 'user', name: credentials.user };
}

export async function v1Search(gw: Gateway, req: Request, res: Response): Promise<void> {
  if (req.get('docker-distribution-api-version') === 'registry/2.0') {
    res.status(404).json({});
    return;
  }
  const q = typeof req.query.q === 'string' ? req.query.q : '';
  const n = typeof req.query.n === 'string' && /^-?\d+$/.test(req.query.n) ? Number(req.query.n) : 25;
  const viewer = await searcher(gw, req, res);
  if (!viewer) {
    gw.challenge(req, res);
    res.status(401).json({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
    return;
  }
  const names = n <= 0 ? [] : await gw.db.visible(viewer, { limit: Math.min(n, 10_000), contains: q || undefined });
  res.json({ num_results: names.length, query: q, results: names.map((name) => ({ description: '', name })) });
}
