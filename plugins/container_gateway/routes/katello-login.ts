// A login forwarded to Katello (smart-proxy mode), for /v2/token and
// /v1/search: throttled by the login guard, and kept working while Katello is
// unreachable: anonymous logins get Katello's `unauthenticated` token here, a
// login Katello accepted within login_cache_ttl gets a local token (reading
// what this proxy's lists allow that user), anything else 503 with Retry-After.
import { randomBytes } from 'node:crypto';
import type { Request, Response } from 'express';
import { sha256 } from '../auth/client.ts';
import { basicCredentials, hasCredentials } from '../auth/login-guard.ts';
import { parseScopes } from '../auth/standalone.ts';
import { RegistryError } from '../oci/errors.ts';
import type { Gateway } from '../gateway.ts';
import { katelloDown, KatelloUnreachable, type KatelloReply } from '../upstream/katello.ts';

/** Seconds a client is asked to wait while the main server is unreachable. */
export const UNREACHABLE_RETRY_AFTER = 10;

export interface TokenBody {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
}

export type KatelloLogin =
  /** Katello answered: the reply as it sent it. */
  | { kind: 'reply'; reply: KatelloReply }
  /** Katello is unreachable: a token issued here (`user` unset: the anonymous `unauthenticated`). */
  | { kind: 'local'; user?: string; body: TokenBody };

/** The token in a Katello reply of status 200, or undefined when there is none. */
export function tokenOf(reply: KatelloReply): string | undefined {
  if (reply.status !== 200) return undefined;
  try {
    const token = (JSON.parse(reply.text) as { token?: unknown }).token;
    return typeof token === 'string' && token ? token : undefined;
  } catch {
    return undefined;
  }
}

function unreachable(res: Response, why: string): never {
  res.set('Retry-After', String(UNREACHABLE_RETRY_AFTER));
  throw new RegistryError('UNAVAILABLE', `the main server is unreachable (${why}): try again later`);
}

/**
 * Ask Katello for a token with the client's Authorization. Throws 429 when
 * the account or address is throttled, 503 when Katello is unreachable and
 * the login cannot be vouched for here.
 */
export async function katelloLogin(gw: Gateway, req: Request, res: Response, scopes: string[], account: string | undefined): Promise<KatelloLogin> {
  const katello = gw.requireKatello();
  const authorization = req.get('authorization');
  const credentials = basicCredentials(req);
  let reply: KatelloReply | undefined;
  let down: string | undefined;
  const ask = async (): Promise<void> => {
    try {
      reply = await katello.token(scopes, account, authorization);
      if (katelloDown(reply)) down = `it answered ${reply.status}`;
    } catch (err) {
      if (!(err instanceof KatelloUnreachable)) throw err;
      down = err.code ?? err.message;
    }
  };
  const now = Date.now();
  if (!hasCredentials(req)) {
    await ask();
    if (down === undefined) return { kind: 'reply', reply: reply! };
    gw.logger.warn(`main server unreachable (${down}): anonymous login answered here with the unauthenticated token`);
    return { kind: 'local', body: { token: 'unauthenticated', access_token: 'unauthenticated', expires_in: 180, issued_at: new Date(now).toISOString() } };
  }
  if (!credentials) {
    await ask();
    if (down !== undefined) unreachable(res, down);
    return { kind: 'reply', reply: reply! };
  }
  let recalled = false;
  await gw.logins.attempt(req, res, credentials.user, async () => {
    await ask();
    if (down !== undefined) {
      const known = await gw.logins.recall(credentials.user, credentials.password);
      recalled = known === 'match';
      return known === 'none' ? undefined : recalled;
    }
    const token = tokenOf(reply!);
    if (reply!.status === 401 || token === 'unauthorized') return false;
    // `unauthenticated` (a public scope) says nothing about the password.
    return token !== undefined && token !== 'unauthenticated' ? true : undefined;
  });
  if (down === undefined) {
    const token = tokenOf(reply!);
    if (token !== undefined && token !== 'unauthenticated' && token !== 'unauthorized') await gw.logins.remember(credentials.user, credentials.password);
    return { kind: 'reply', reply: reply! };
  }
  if (!recalled) unreachable(res, down);
  const lifetime = Math.max(1, Math.floor(gw.settings.token_max_lifetime));
  const token = randomBytes(32).toString('base64url');
  gw.db.storeToken(sha256(token), now + gw.settings.token_max_lifetime * 1000, credentials.user, parseScopes(scopes));
  gw.logger.warn(`main server unreachable (${down}): login of '${credentials.user.slice(0, 64)}' accepted from the recent-login cache`);
  return { kind: 'local', user: credentials.user, body: { token, access_token: token, expires_in: lifetime, issued_at: new Date(now).toISOString() } };
}
