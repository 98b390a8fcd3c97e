// The Katello double's options and what it records (helpers/katello-double.ts).
import type http from 'node:http';
import type { KatelloJwtOptions } from './katello-jwt.ts';
import type { PushNameRules } from './katello-push.ts';

export interface KatelloUser {
  password: string;
  /** Repositories this user can read (besides the public ones). */
  repositories: string[];
  /**
   * May push (like a Katello user with sync_products), to the names Katello
   * accepts; with `jwt` also pull any repository it asks for.
   */
  push?: boolean;
  /** With `jwt`: granted `registry:catalog:*`. */
  catalog?: boolean;
}

export interface KatelloDoubleOptions {
  users?: Record<string, KatelloUser>;
  /** Repositories in lifecycle environments with unauthenticated pull. */
  publicRepositories?: string[];
  /** Readable repositories per content-host UUID. */
  hosts?: Record<string, string[]>;
  /** registry_token_expiration in seconds (default 3600). */
  tokenExpiresIn?: number;
  /** Users whose registry token is revoked. */
  revoked?: Set<string>;
  /** Serve HTTPS with this key and certificate (PEM text or file paths). */
  tls?: { key: string | Buffer; cert: string | Buffer; ca?: string | Buffer };
  /** Clock in ms (default Date.now), so tests can move time. */
  now?: () => number;
  /**
   * A token request whose scope is exactly `repository:<public repo>:pull` but
   * that also carries Basic credentials. Katello's controller answers
   * `unauthenticated` without looking at the credentials (default); `token`
   * treats it like a private scope (credentials checked, user token issued).
   */
  publicScopeWithBasic?: 'unauthenticated' | 'token';
  /**
   * Issue RS256 JWTs (Docker registry tokens) instead of opaque personal
   * access tokens. `unauthenticated` answers stay as they are. Each token
   * request gets a new JWT whose `access` grants, per requested scope, the
   * requested actions the user may do (`pull`: public repositories, the
   * user's `repositories`, or any with `push: true`; `push`: with `push: true`;
   * `registry:catalog:*`: with `catalog: true`). The double remembers the JWTs
   * it issued, so Bearer requests to it (catalog, ping) accept them.
   */
  jwt?: KatelloJwtOptions;
  /** Serve everything under this path (e.g. '/foreman'), as Foreman under a sub-URI. */
  basePath?: string;
  /** Existing products and taken names, for pushes (katello-api.md §3). */
  push?: PushNameRules;
}

export interface RecordedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  /** Query parameters (a repeated key keeps its last value); see `url` for the raw form. */
  query: Record<string, string>;
  /** The raw request target, e.g. `/v2/token?scope=...`. */
  url: string;
  /** Lower-cased header names, as node parses them. */
  headers: http.IncomingHttpHeaders;
  /** Raw header list, with original case and order. */
  rawHeaders: string[];
  time: number;
}

/** Return true when the request was answered; false to let the double handle it. */
export type Override = (req: http.IncomingMessage, res: http.ServerResponse, rec: RecordedRequest) => boolean | Promise<boolean>;
