// smart-proxy's `authorize_with_trusted_hosts` + `authorize_with_ssl_client`,
// as one middleware. Over HTTPS the client name is the CN of a *verified*
// certificate; over HTTP it is the peer's reverse DNS name (forward-verified).
// Closed by default: without trusted_hosts, plain HTTP is trusted from a
// loopback peer only (anyone reaching the port could otherwise administer the
// proxy), HTTPS from any verified certificate.
import { promises as dns } from 'node:dns';
import { isIPv4 } from 'node:net';
import type { Request, RequestHandler } from 'express';
import type { GlobalSettings } from '../settings/global.ts';
import { sendJsonError } from './errors.ts';
import { clientIdentity } from './identity.ts';

const LOOKUP_TIMEOUT_MS = 3000;

/** A promise that rejects after `ms`: DNS must never hang a request. */
function bounded<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('DNS lookup timed out')), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

async function reverseName(ip: string, forwardVerify: boolean): Promise<{ name?: string; error?: string }> {
  // getnameinfo follows the system's order (/etc/hosts, then DNS) and returns
  // the canonical name; dns.reverse skips /etc/hosts' first name.
  const names = await bounded(dns.lookupService(ip, 0), LOOKUP_TIMEOUT_MS).then(
    ({ hostname }) => (hostname && hostname !== ip ? [hostname] : []),
    () => [] as string[],
  );
  const name = names[0]?.toLowerCase();
  if (!name) return { error: `unable to resolve hostname for ip address ${ip}` };
  if (forwardVerify) {
    const addresses = await bounded(dns.lookup(name, { all: true }), LOOKUP_TIMEOUT_MS).catch(() => []);
    if (!addresses.some((a) => a.address.replace(/^::ffff:/, '') === ip)) {
      return { error: `untrusted client has no matching forward DNS lookup - ${name} (${ip})` };
    }
  }
  return { name };
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped forms (::ffff:127.x.y.z). */
export function isLoopback(address: string): boolean {
  const ip = address.replace(/^::ffff:/i, '');
  if (isIPv4(ip)) return ip.split('.')[0] === '127';
  return ip === '::1' || ip === '0:0:0:0:0:0:0:1';
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
    if (global.trusted_hosts === undefined) {
      if (isLoopback(who.remoteAddress)) return undefined;
      return `Untrusted client ${who.remoteAddress} attempted to access ${path}: without :trusted_hosts: in settings.yml, plain HTTP is accepted from loopback only; use HTTPS with a client certificate`;
    }
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
