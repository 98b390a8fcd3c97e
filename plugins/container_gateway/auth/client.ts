// Who is calling the registry. Trusted only from what was verified: a client
// certificate verified by our TLS layer, or one forwarded by a front proxy
// listed in trusted_proxies; a Bearer token whose sha256 is stored and not
// expired. Identity headers from anyone else are ignored.
import { createHash, X509Certificate } from 'node:crypto';
import type { Request } from 'express';
import type { ClientIdentity } from '../../../lib/plugins/api.ts';
import type { GatewayDb, Viewer } from '../db/database.ts';

export type RegistryClient =
  | { kind: 'host'; uuid: string }
  /** `grants`: what a standalone token grants (JSON of auth/standalone.ts), read with the owner. */
  | { kind: 'user'; name: string; grants?: unknown }
  /** No credentials, or the special tokens `unauthenticated` / `unauthorized`. */
  | { kind: 'anonymous'; token?: 'unauthenticated' | 'unauthorized' }
  /** A Bearer token we don't know (or that expired): the client must log in again. */
  | { kind: 'invalid' };

const FORWARDED_CERT_HEADERS = ['x-rhsm-ssl-client-cert', 'ssl-client-cert'];

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The CN of a PEM certificate that may have lost its newlines on the way. */
export function cnOfForwardedPem(value: string): string | undefined {
  if (!value || value.includes('null')) return undefined;
  const b64 = value.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
  try {
    const cert = new X509Certificate(Buffer.from(b64, 'base64'));
    return /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
  } catch {
    return undefined;
  }
}

export function bearerToken(req: Request): string | undefined {
  const m = /^Bearer\s+(\S+)$/i.exec(req.get('authorization') ?? '');
  return m?.[1];
}

export function basicUser(req: Request): string | undefined {
  const m = /^Basic\s+(\S+)$/i.exec(req.get('authorization') ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const user = decoded.slice(0, Math.max(0, decoded.indexOf(':')));
  return user || undefined;
}

/** The host UUID of a verified certificate (direct TLS, or forwarded by a trusted front). */
export function hostUuid(req: Request, identity: ClientIdentity, trustedProxies: readonly string[]): string | undefined {
  if (identity.certificate === 'verified' && identity.cn) return identity.cn;
  if (!trustedProxies.includes(identity.remoteAddress)) return undefined;
  for (const header of FORWARDED_CERT_HEADERS) {
    const cn = cnOfForwardedPem(req.get(header) ?? '');
    if (cn) return cn;
  }
  return undefined;
}

/**
 * A login identifies the user, even when the connection also carries a
 * verified certificate: podman sends the client certificate of its certs.d
 * with every request, and a user who logged in means to act as that user. A
 * login is a Bearer token of a user, or Basic credentials (not a credential of
 * the registry routes, which want a token: such a request is judged as one
 * without credentials, and is told where to get a token). A certificate alone,
 * or with only the anonymous tokens `unauthenticated` / `unauthorized`,
 * identifies a content host.
 */
export async function identifyClient(req: Request, identity: ClientIdentity, db: GatewayDb, trustedProxies: readonly string[]): Promise<RegistryClient> {
  const token = bearerToken(req);
  if (token === undefined || token === 'unauthenticated' || token === 'unauthorized') {
    if (basicUser(req) !== undefined) return { kind: 'anonymous' };
    const uuid = hostUuid(req, identity, trustedProxies);
    if (uuid) return { kind: 'host', uuid };
    return token === undefined ? { kind: 'anonymous' } : { kind: 'anonymous', token };
  }
  const record = await db.tokenRecord(sha256(token));
  return record ? { kind: 'user', name: record.user, ...(record.scopes === undefined ? {} : { grants: record.scopes }) } : { kind: 'invalid' };
}

export function viewerOf(client: RegistryClient): Viewer {
  if (client.kind === 'host') return { kind: 'host', uuid: client.uuid };
  if (client.kind === 'user') return { kind: 'user', name: client.name };
  return { kind: 'anonymous' };
}

/** The identity forwarded upstream as REMOTE_USER: a user name, a host UUID, or nothing. */
export function remoteUserOf(client: RegistryClient): string | undefined {
  return client.kind === 'user' ? client.name : client.kind === 'host' ? client.uuid : undefined;
}
