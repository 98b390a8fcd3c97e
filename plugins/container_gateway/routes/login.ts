// GET /v2/ (the ping clients read challenges from) and GET /v2/token, which
// forwards the login to Katello and remembers only the token's checksum.
import type { Request, Response } from 'express';
import { basicUser, sha256 } from '../auth/client.ts';
import { RegistryError } from '../oci/errors.ts';
import type { Gateway } from '../gateway.ts';
import { KatelloUnreachable, repositoriesOf } from '../upstream/katello.ts';
import { basicCredentials } from '../auth/login-guard.ts';
import { issueToken, parseScopes, type TokenResult } from '../auth/standalone.ts';
import { katelloLogin } from './katello-login.ts';

export function ping(gw: Gateway, req: Request, res: Response): void {
  const client = gw.client(req);
  // Standalone mode: a certificate alone gets the challenge, so that a client with
  // credentials logs in (podman sends its certs.d certificate with every request
  // and asks for a token only when challenged); one without credentials gets the
  // `unauthenticated` token, with which its certificate still identifies the host.
  const host = client.kind === 'host' && !gw.standalone;
  if (host || client.kind === 'user' || (client.kind === 'anonymous' && client.token === 'unauthorized')) {
    res.status(200).json({});
    return;
  }
  gw.challenge(req, res);
  throw new RegistryError('UNAUTHORIZED');
}

function scopesOf(req: Request): string[] {
  const raw = req.query.scope;
  const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  return list.filter((s): s is string => typeof s === 'string').flatMap((s) => s.split(' ')).filter(Boolean);
}

/** Standalone mode: this gateway is the token server (Docker token spec, scoped grants). */
async function standaloneToken(gw: Gateway, req: Request, res: Response): Promise<void> {
  const issue = () =>
    issueToken(gw.standaloneAccounts(), {
      authorization: req.get('authorization'),
      scopes: scopesOf(req),
      account: typeof req.query.account === 'string' ? req.query.account : undefined,
      now: Date.now(),
      lifetimeSeconds: gw.settings.token_max_lifetime,
    });
  // A password check: throttled per account and address, hashed in the bounded queue.
  const credentials = basicCredentials(req);
  let result: TokenResult | undefined;
  if (credentials) {
    await gw.logins.attempt(req, res, credentials.user, async () => {
      result = await issue();
      return result.status === 200;
    });
  }
  result ??= await issue();
  if (result.status === 401) {
    gw.challenge(req, res);
    throw new RegistryError('UNAUTHORIZED', result.message);
  }
  // Anonymous: Katello's `unauthenticated` token, which reads public repositories only.
  const body = result.user === undefined ? { ...result.body, token: 'unauthenticated', access_token: 'unauthenticated' } : result.body;
  res.status(200).json(body);
}

export async function token(gw: Gateway, req: Request, res: Response): Promise<void> {
  if (gw.standalone) return standaloneToken(gw, req, res);
  const katello = gw.requireKatello();
  const authorization = req.get('authorization');
  // Defect 10: without `account`, use the Basic user name.
  const account = (typeof req.query.account === 'string' && req.query.account) || basicUser(req);
  const login = await katelloLogin(gw, req, res, scopesOf(req), account);
  if (login.kind === 'local') {
    res.status(200).json(login.body);
    return;
  }
  const reply = login.reply;
  // Katello's challenge names Katello: the client must come back here.
  if (reply.status === 401) gw.challenge(req, res);
  if (reply.status !== 200) {
    res.status(reply.status).type(reply.contentType).send(reply.text);
    return;
  }
  let body: { token?: unknown; expires_in?: unknown; issued_at?: unknown };
  try {
    body = JSON.parse(reply.text) as typeof body;
  } catch {
    throw new RegistryError('UNAVAILABLE', 'Received a malformed token response from the main server', undefined, 502);
  }
  if (typeof body.token !== 'string' || !body.token) throw new RegistryError('UNAVAILABLE', 'Received a malformed token response from the main server', undefined, 502);
  if (body.token === 'unauthorized') {
    gw.challenge(req, res);
    throw new RegistryError('UNAUTHORIZED');
  }
  if (body.token !== 'unauthenticated') {
    if (!account) throw new RegistryError('UNAVAILABLE', 'the main server issued a token but no account is known', undefined, 502);
    const issued = Date.parse(typeof body.issued_at === 'string' ? body.issued_at : (reply.date ?? ''));
    if (Number.isNaN(issued)) throw new RegistryError('UNAVAILABLE', 'Received a token response without an issue time', undefined, 502);
    const lifetime = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60;
    // Defect 5: a revoked token must not live on for Katello's whole lifetime.
    const expireAt = Math.min(issued + lifetime * 1000, Date.now() + gw.settings.token_max_lifetime * 1000);
    // The scopes asked for tell a push (its HEAD probes go to the main server); Katello decides what they grant.
    gw.db.storeToken(sha256(body.token), expireAt, account, parseScopes(scopesOf(req)));
    let catalog;
    try {
      catalog = await katello.userCatalog(account, authorization);
    } catch (err) {
      if (!(err instanceof KatelloUnreachable)) throw err;
      // The token is good: the user reads what the lists already allow until the next login.
      gw.logger.warn(`catalog of '${account.slice(0, 64)}' not refreshed: ${err.message}`);
    }
    if (catalog && catalog.status !== 200) {
      res.status(catalog.status).type(catalog.contentType).send(catalog.text);
      return;
    }
    if (catalog) gw.db.setUserRepositories(account, repositoriesOf(catalog));
  }
  res.status(200).type(reply.contentType).send(reply.text);
}
