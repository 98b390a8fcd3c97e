// A login decided by Katello (smart-proxy mode), the one way /v2/token and
// /v1/search log a user in. The login is throttled by the login guard and
// keeps working while Katello is unreachable: anonymous logins get Katello's
// `unauthenticated` token here, a login Katello accepted within
// login_cache_ttl gets a local token (reading what this proxy's lists allow
// that user), anything else 503 with Retry-After. A token Katello issued is
// remembered by its checksum only, until the earlier of its own expiry and
// token_max_lifetime, so that a user revoked in Katello loses access here in
// time; the user's catalog is fetched again with it.
import { randomBytes } from 'node:crypto';
import type { Request, Response } from 'express';
import type { Logger } from '../../../lib/plugins/api.ts';
import { RegistryError } from '../oci/errors.ts';
import { katelloDown, KatelloUnreachable, repositoriesOf, type KatelloClient, type KatelloReply } from '../upstream/katello.ts';
import { sha256 } from './client.ts';
import { basicCredentials, hasCredentials, type LoginGuard } from './login-guard.ts';
import { parseScopes } from './standalone.ts';

/** Seconds a client is asked to wait while the main server is unreachable. */
export const UNREACHABLE_RETRY_AFTER = 10;

/** What a Katello login needs of the gateway. */
export interface KatelloLoginParts {
  requireKatello(): KatelloClient;
  readonly logins: LoginGuard;
  readonly db: {
    storeToken(checksum: string, expireAtMs: number, user: string, scopes?: unknown): Promise<void>;
    setUserRepositories(user: string, names: string[]): Promise<void>;
  };
  readonly logger: Logger;
  readonly settings: { readonly token_max_lifetime: number };
}

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

/** A token that stands for a login: not the anonymous `unauthenticated`, not the refusal `unauthorized`. */
export function isUserToken(token: string | undefined): token is string {
  return token !== undefined && token !== 'unauthenticated' && token !== 'unauthorized';
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
export async function katelloLogin(parts: KatelloLoginParts, req: Request, res: Response, scopes: string[], account: string | undefined): Promise<KatelloLogin> {
  const katello = parts.requireKatello();
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
    parts.logger.warn(`main server unreachable (${down}): anonymous login answered here with the unauthenticated token`);
    return { kind: 'local', body: { token: 'unauthenticated', access_token: 'unauthenticated', expires_in: 180, issued_at: new Date(now).toISOString() } };
  }
  if (!credentials) {
    await ask();
    if (down !== undefined) unreachable(res, down);
    return { kind: 'reply', reply: reply! };
  }
  let recalled = false;
  await parts.logins.attempt(req, res, credentials.user, async () => {
    await ask();
    if (down !== undefined) {
      const known = await parts.logins.recall(credentials.user, credentials.password);
      recalled = known === 'match';
      return known === 'none' ? undefined : recalled;
    }
    const token = tokenOf(reply!);
    if (reply!.status === 401 || token === 'unauthorized') return false;
    // `unauthenticated` (a public scope) says nothing about the password.
    return isUserToken(token) ? true : undefined;
  });
  if (down === undefined) {
    if (isUserToken(tokenOf(reply!))) await parts.logins.remember(credentials.user, credentials.password);
    return { kind: 'reply', reply: reply! };
  }
  if (!recalled) unreachable(res, down);
  const lifetime = Math.max(1, Math.floor(parts.settings.token_max_lifetime));
  const token = randomBytes(32).toString('base64url');
  await parts.db.storeToken(sha256(token), now + parts.settings.token_max_lifetime * 1000, credentials.user, parseScopes(scopes));
  parts.logger.warn(`main server unreachable (${down}): login of '${credentials.user.slice(0, 64)}' accepted from the recent-login cache`);
  return { kind: 'local', user: credentials.user, body: { token, access_token: token, expires_in: lifetime, issued_at: new Date(now).toISOString() } };
}

export interface IssuedToken {
  /** Katello's reply of status 200 that carries the token. */
  reply: KatelloReply;
  token: string;
  /** Whose token it is. */
  account: string;
  /** The client's Authorization, with which the user's catalog is fetched. */
  authorization: string | undefined;
  /** The scopes asked for: they tell a push (its HEAD probes go to the main server); Katello decides what they grant. */
  scopes: string[];
}

/**
 * Accept a token Katello issued to a user: store its checksum until
 * min(issued_at + expires_in, now + token_max_lifetime), and refresh the
 * user's catalog. Returns Katello's answer when it refused the catalog; an
 * unreachable Katello leaves the user's lists as they were.
 */
export async function acceptToken(parts: KatelloLoginParts, issued: IssuedToken): Promise<KatelloReply | undefined> {
  const { reply, account } = issued;
  let body: { expires_in?: unknown; issued_at?: unknown };
  try {
    body = JSON.parse(reply.text) as typeof body;
  } catch {
    throw new RegistryError('UNAVAILABLE', 'Received a malformed token response from the main server', undefined, 502);
  }
  const issuedAt = Date.parse(typeof body.issued_at === 'string' ? body.issued_at : (reply.date ?? ''));
  if (Number.isNaN(issuedAt)) throw new RegistryError('UNAVAILABLE', 'Received a token response without an issue time', undefined, 502);
  const lifetime = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60;
  const expireAt = Math.min(issuedAt + lifetime * 1000, Date.now() + parts.settings.token_max_lifetime * 1000);
  await parts.db.storeToken(sha256(issued.token), expireAt, account, parseScopes(issued.scopes));
  let catalog: KatelloReply;
  try {
    catalog = await parts.requireKatello().userCatalog(account, issued.authorization);
  } catch (err) {
    if (!(err instanceof KatelloUnreachable)) throw err;
    // The token is good: the user reads what the lists already allow until the next login.
    parts.logger.warn(`catalog of '${account.slice(0, 64)}' not refreshed: ${err.message}`);
    return undefined;
  }
  if (catalog.status !== 200) return catalog;
  await parts.db.setUserRepositories(account, repositoriesOf(catalog));
  return undefined;
}
