// Who a client is, from what this process verified itself: the TLS layer's
// chain check against ssl_ca_file. A CN is only ever taken from a certificate
// with `socket.authorized === true`; an unverified certificate shows a CN too,
// and that CN means nothing.
import type { TLSSocket } from 'node:tls';
import type { Request } from 'express';

export interface ClientIdentity {
  transport: 'http' | 'https';
  certificate: 'none' | 'verified' | 'unverified';
  /** Subject CN of a verified certificate; never set otherwise. */
  cn?: string;
  /** Why an offered certificate was not accepted (OpenSSL's code). */
  authorizationError?: string;
  remoteAddress: string;
}

export function clientIdentity(req: Request): ClientIdentity {
  const socket = req.socket as Partial<TLSSocket>;
  const remoteAddress = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
  if (!socket.encrypted) return { transport: 'http', certificate: 'none', remoteAddress };
  const peer = socket.getPeerCertificate?.();
  const offered = peer !== undefined && Object.keys(peer).length > 0;
  if (!offered) return { transport: 'https', certificate: 'none', remoteAddress };
  if (socket.authorized !== true) {
    return { transport: 'https', certificate: 'unverified', authorizationError: String(socket.authorizationError ?? 'unknown'), remoteAddress };
  }
  const cn = [peer.subject?.CN].flat()[0];
  return { transport: 'https', certificate: 'verified', ...(cn ? { cn } : {}), remoteAddress };
}

/**
 * Headers that claim an identity. Clients must never be able to assert one:
 * they are removed from every request before any route sees it.
 */
export const IDENTITY_HEADERS = ['remote_user', 'remote-user', 'x-remote-user', 'x-forwarded-user', 'x-authenticated-user', 'x-client-cn', 'ssl_client_s_dn_cn', 'ssl-client-s-dn-cn'];
