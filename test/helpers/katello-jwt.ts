// Docker registry tokens for the Katello double's `jwt` option: RS256 JWTs
// with an `access` claim, as docker-registry (`auth.token`) accepts them.
import { createPrivateKey, createSign, randomUUID, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** Sign tokens as a Docker registry token server (docker-registry `auth.token`). */
export interface KatelloJwtOptions {
  /** `iss`; the registry's `auth.token.issuer`. */
  issuer: string;
  /** `aud`; the registry's `auth.token.service`. */
  service: string;
  /** RSA private key (PEM text or file path). */
  keyPem: string;
  /** Certificate of that key (PEM text or file path), sent in the `x5c` header; the registry's `rootcertbundle`. */
  certPem: string;
}

/** One entry of a token's `access` claim. */
export interface JwtAccess {
  type: string;
  name: string;
  actions: string[];
}

export interface JwtClaims {
  iss: string;
  sub: string;
  aud: string;
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  access: JwtAccess[];
}

/** A requested scope: type before the first colon, actions after the last one, the name in between. */
export interface Scope {
  type: string;
  name: string;
  actions: string[];
}

/**
 * Parse `scope` values (each may hold several space-separated scopes). The name
 * may contain colons (`host:port/name`), so only the first and last colon
 * split. Malformed scopes (fewer than two colons) are left out.
 */
export function parseScopes(values: string[]): Scope[] {
  const out: Scope[] = [];
  for (const v of values) {
    for (const s of v.split(/\s+/)) {
      const first = s.indexOf(':');
      const last = s.lastIndexOf(':');
      if (first < 0 || last === first) continue;
      out.push({ type: s.slice(0, first), name: s.slice(first + 1, last), actions: s.slice(last + 1).split(',').filter(Boolean) });
    }
  }
  return out;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** Header and claims of a JWT (not verified). */
export function decodeJwt(token: string): { header: Record<string, unknown>; claims: JwtClaims } {
  const [h, c] = token.split('.');
  if (!h || !c) throw new Error('not a JWT');
  return { header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')), claims: JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) };
}

/** PEM text as is; anything else is a file path to read. */
export function pem(v: string | Buffer): string | Buffer {
  if (Buffer.isBuffer(v) || v.includes('-----BEGIN')) return v;
  return readFileSync(v);
}

export class JwtSigner {
  private readonly key: ReturnType<typeof createPrivateKey>;
  private readonly x5c: string;

  constructor(private readonly opts: KatelloJwtOptions) {
    this.key = createPrivateKey(pem(opts.keyPem));
    this.x5c = new X509Certificate(pem(opts.certPem)).raw.toString('base64');
  }

  /** A token for `user` granting `access`, valid `expiresIn` seconds from `now` (ms). */
  sign(user: string, access: JwtAccess[], now: number, expiresIn: number): { token: string; claims: JwtClaims } {
    const iat = Math.floor(now / 1000);
    const claims: JwtClaims = { iss: this.opts.issuer, sub: user, aud: this.opts.service, exp: iat + expiresIn, nbf: iat, iat, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c: [this.x5c] }))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign('RSA-SHA256').update(input).sign(this.key);
    return { token: `${input}.${b64url(sig)}`, claims };
  }
}
