// The v1 leftovers clients still call: /v1/_ping and /v1/search.
import type { Request, Response } from 'express';
import { sha256 } from '../auth/client.ts';
import { basicCredentials, hasCredentials } from '../auth/login-guard.ts';
import { verifyPassword } from '../auth/passwords.ts';
import { USER_NAME } from '../auth/standalone.ts';
import type { Gateway } from '../gateway.ts';
import { KatelloUnreachable, repositoriesOf } from '../upstream/katello.ts';
import { katelloLogin, tokenOf } from './katello-login.ts';

export async function v1Ping(gw: Gateway, req: Request, res: Response): Promise<void> {
  // A backend with its own registry root is asked (401 there means it is up); the embedded store is here.
  const status = gw.content.ping ? await gw.content.ping(req) : 200;
  res.status(status === 401 ? 200 : status).json({});
}

/**
 * GET /v1/search?q=&n=: substring search over what the caller may see.
 * containers/image sends Docker-Distribution-API-Version and must get 404,
 * so that it falls back to /v2/_catalog (as Katello answers).
 */
/** A valid hash of a random password, checked for unknown users. */
const DUMMY_HASH = `scrypt$32768$8$1$${Buffer.alloc(16, 7).toString('base64')}$${Buffer.alloc(32, 9).toString('base64')}`;

export async function v1Search(gw: Gateway, req: Request, res: Response): Promise<void> {
  if (req.get('docker-distribution-api-version') === 'registry/2.0') {
    res.status(404).json({});
    return;
  }
  const q = typeof req.query.q === 'string' ? req.query.q : '';
  const n = typeof req.query.n === 'string' && /^-?\d+$/.test(req.query.n) ? Number(req.query.n) : 25;
  const authorization = req.get('authorization');
  let viewer: { kind: 'user'; name: string } | { kind: 'anonymous' } = { kind: 'anonymous' };
  const refuse = () => {
    gw.challenge(req, res);
    res.status(401).json({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
  };
  if (hasCredentials(req) && gw.standalone) {
    // Standalone: the password is checked here, as /v2/token checks it (throttled, bounded hashing).
    const credentials = basicCredentials(req);
    if (!credentials) return refuse();
    const ok = await gw.logins.attempt(req, res, credentials.user, async () => {
      const hash = USER_NAME.test(credentials.user) ? gw.db.passwordHash(credentials.user) : undefined;
      // Unknown users cost a hash too: their absence must not show in the time taken.
      return (await verifyPassword(credentials.password, hash ?? DUMMY_HASH)) && hash !== undefined;
    });
    if (!ok) return refuse();
    viewer = { kind: 'user', name: credentials.user };
  } else if (hasCredentials(req)) {
    const credentials = basicCredentials(req);
    if (!credentials) return refuse();
    const login = await katelloLogin(gw, req, res, [], credentials.user);
    if (login.kind === 'local') {
      if (login.user === undefined) return refuse();
      viewer = { kind: 'user', name: login.user };
    } else {
      const token = tokenOf(login.reply);
      if (!token || token === 'unauthenticated' || token === 'unauthorized') return refuse();
      const user = credentials.user;
      gw.db.storeToken(sha256(token), Date.now() + gw.settings.token_max_lifetime * 1000, user);
      try {
        const catalog = await gw.requireKatello().userCatalog(user, authorization);
        if (catalog.status === 200) gw.db.setUserRepositories(user, repositoriesOf(catalog));
      } catch (err) {
        if (!(err instanceof KatelloUnreachable)) throw err;
        gw.logger.warn(`catalog of '${user.slice(0, 64)}' not refreshed: ${err.message}`);
      }
      viewer = { kind: 'user', name: user };
    }
  }
  const names = n <= 0 ? [] : gw.db.visible(viewer, { limit: Math.min(n, 10_000), contains: q || undefined });
  res.json({ num_results: names.length, query: q, results: names.map((name) => ({ description: '', name })) });
}
