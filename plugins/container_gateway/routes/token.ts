// GET /v2/ (the ping clients read challenges from) and GET /v2/token: the
// login of registry clients, decided by Katello (smart-proxy mode) or by this
// gateway's own users (standalone mode). flatpak logins: the Basic user is
// the token's account, and flatpak without a user is told to log in (401).
import type { Request, Response } from 'express';
import { basicUser } from '../auth/client.ts';
import { acceptToken, isUserToken, katelloLogin, tokenOf } from '../auth/katello-login.ts';
import { basicCredentials } from '../auth/login-guard.ts';
import { issueToken, type TokenResult } from '../auth/standalone.ts';
import { RegistryError } from '../oci/errors.ts';
import type { Gateway } from '../gateway.ts';

export async function ping(gw: Gateway, req: Request, res: Response): Promise<void> {
  const client = await gw.client(req);
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
async function standaloneToken(gw: Gateway, req: Request, res: Response, flatpakAccount: string | undefined): Promise<void> {
  const issue = () =>
    issueToken(
      gw.standaloneAccounts(),
      {
        authorization: req.get('authorization'),
        scopes: scopesOf(req),
        account: flatpakAccount ?? (typeof req.query.account === 'string' ? req.query.account : undefined),
        now: Date.now(),
        lifetimeSeconds: gw.settings.token_max_lifetime,
      },
      gw.logins.hasher,
    );
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

/** flatpak (and libflatpak, GNOME Software) name themselves in the User-Agent. */
function isFlatpak(req: Request): boolean {
  return /flatpak/i.test(req.get('user-agent') ?? '');
}

export async function token(gw: Gateway, req: Request, res: Response): Promise<void> {
  const flatpak = isFlatpak(req);
  // A flatpak client without a user is told to log in (anonymous tokens are no use to it);
  // with one, the token is that user's, whatever `account` it sent.
  if (flatpak && basicUser(req) === undefined) {
    gw.challenge(req, res);
    throw new RegistryError('UNAUTHORIZED', 'flatpak clients log in with a user name and password');
  }
  if (gw.standalone) return standaloneToken(gw, req, res, flatpak ? basicUser(req) : undefined);
  const scopes = scopesOf(req);
  // Without `account`, the Basic user name: Katello names the token's owner by it.
  const account = flatpak ? basicUser(req) : (typeof req.query.account === 'string' && req.query.account) || basicUser(req);
  const login = await katelloLogin(gw, req, res, scopes, account);
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
  const issued = tokenOf(reply);
  if (issued === undefined) throw new RegistryError('UNAVAILABLE', 'Received a malformed token response from the main server', undefined, 502);
  if (issued === 'unauthorized') {
    gw.challenge(req, res);
    throw new RegistryError('UNAUTHORIZED');
  }
  if (isUserToken(issued)) {
    if (!account) throw new RegistryError('UNAVAILABLE', 'the main server issued a token but no account is known', undefined, 502);
    const refused = await acceptToken(gw, { reply, token: issued, account, authorization: req.get('authorization'), scopes });
    if (refused) {
      res.status(refused.status).type(refused.contentType).send(refused.text);
      return;
    }
  }
  res.status(200).type(reply.contentType).send(reply.text);
}
