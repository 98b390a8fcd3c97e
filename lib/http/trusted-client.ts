// smart-proxy's `authorize_with_trusted_hosts` + `authorize_with_ssl_client`,
// as one middleware. Over HTTPS the client name is the CN of a *verified*
// certificate; over HTTP it is the peer's reverse DNS name (forward-verified).
import { promises as dns } from 'node:dns';
import type { Request, RequestHandler } from 'express';
import type { GlobalSettings } from '../settings/global.ts';
import { sendJsonError } from './errors.ts';
import { clientIdentity } from './identity.ts';

const resolver = new dns.Resolver({ timeout: 2000, tries: 1 });

async function reverseName(ip: string, forwardVerify: boolean): Promise<{ name?: string; error?: string }> {
  let names: string[];
  try {
    names = await resolver.reverse(ip);
  } catch {
    names = ip === '127.0.0.1' || ip === '::1' ? ['localhost'] : [];
  }
  const name = names[0]?.toLowerCase();
  if (!name) return { error: `unable to resolve hostname for ip address ${ip}` };
  if (forwardVerify) {
    const addresses = await dns.lookup(name, { all: true }).catch(() => []);
    if (!addresses.some((a) => a.address.replace(/^::ffff:/, '') === ip)) {
      return { error: `untrusted client has no matching forward DNS lookup - ${name} (${ip})` };
    }
  }
  return { name };
}

async function checkClient(req: Request, global: GlobalSettings): Promise<string | undefined> {
  const who = clientIdentity(req);
  const path = req.originalUrl.split('?')[0];
  let name: string;
  if (who.transport === 'https') {
    if (who.certificate === 'none') return 'No client SSL certificate supplied';
    if (who.certificate === 'unverified') return `Client certificate was not verified against ssl_ca_file (${who.authorizationError})`;
    if (!who.cn) return 'could not read CN from the client certificate';
    name = who.cn.toLowerCase();
  } else {
    if (global.trusted_hosts === undefined) return undefined;
    const resolved = await reverseName(who.remoteAddress, global.forward_verify);
    if (resolved.error) return resolved.error;
    name = resolved.name!;
  }
  if (global.trusted_hosts !== undefined && !global.trusted_hosts.includes(name)) {
    return `Untrusted client ${name} attempted to access ${path}. Check :trusted_hosts: in settings.yml`;
  }
  return undefined;
}

export function trustedClient(global: GlobalSettings): RequestHandler {
  return async (req, res, next) => {
    const refusal = await checkClient(req, global);
    if (refusal === undefined) return next();
    req.log.error(refusal);
    sendJsonError(res, 403, refusal);
  };
}
