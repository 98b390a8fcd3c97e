// Guards the password checks of /v2/token and /v1/search:
// - failed logins are counted per account and per client address in the database
//   (shared by every worker); at login_failure_limit failures within
//   login_failure_window seconds, further attempts answer 429 TOOMANYREQUESTS
//   with Retry-After until the window has passed, without hashing anything;
// - the password hashing queue being full (the PasswordHasher it holds, shared
//   by every password check of the gateway) also answers 429;
// - the recent-login cache: after the main server accepted a login, a salted
//   scrypt hash of the credentials is kept for login_cache_ttl seconds, so that
//   the login still works while the main server is unreachable.
import type { GatewayMetrics } from '../metrics.ts';
import type { Request, Response } from 'express';
import type { Logger } from '../../../lib/plugins/api.ts';
import type { Sql } from '../db/sql.ts';
import { RegistryError } from '../oci/errors.ts';
import { HashingBusy, PasswordHasher } from './passwords.ts';

export interface LoginGuardSettings {
  readonly login_failure_limit: number;
  readonly login_failure_window: number;
  readonly login_cache_ttl: number;
  readonly trusted_proxies: readonly string[];
}

/** Basic credentials of a request, or undefined (none, anonymous `Og==`, or not Basic). */
export function basicCredentials(req: Request): { user: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(req.get('authorization') ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Does the request carry real credentials (not none, not the anonymous `Basic Og==`)? */
export function hasCredentials(req: Request): boolean {
  const auth = (req.get('authorization') ?? '').trim();
  return auth !== '' && !/^Basic\s+Og==$/i.test(auth);
}

export class LoginGuard {
  /** The gateway's one bounded hashing queue: logins, the recent-login cache and standalone passwords. */
  readonly hasher = new PasswordHasher();

  constructor(
    private readonly sql: Sql,
    private readonly settings: LoginGuardSettings,
    private readonly logger: Logger,
    private readonly metrics?: GatewayMetrics,
  ) {}

  /** The client's address: the socket's, or the last X-Forwarded-For hop when the socket is a trusted front proxy. */
  address(req: Request): string {
    const socket = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    if (!this.settings.trusted_proxies.includes(socket)) return socket;
    const hops = (req.get('x-forwarded-for') ?? '').split(',').map((h) => h.trim()).filter(Boolean);
    return hops.at(-1)?.replace(/^::ffff:/, '') ?? socket;
  }

  private keys(user: string, address: string): string[] {
    return [`account:${user}`, `address:${address}`];
  }

  /** Seconds until these keys may log in again, or 0 when they may now. */
  private async blockedFor(keys: string[], now: number): Promise<number> {
    const windowMs = this.settings.login_failure_window * 1000;
    let until = 0;
    for (const key of keys) {
      const r = await this.sql.get<{ failures: number; window_start: number | string }>('SELECT failures, window_start FROM login_failures WHERE key = ?', [key]);
      const start = Number(r?.window_start);
      if (r && r.failures >= this.settings.login_failure_limit && start + windowMs > now) until = Math.max(until, start + windowMs);
    }
    return until === 0 ? 0 : Math.max(1, Math.ceil((until - now) / 1000));
  }

  /**
   * Run `attempt` (a password check: true when the credentials are right,
   * false when wrong, undefined when it could not tell) unless the account or
   * the address is throttled; count a failure, or clear the account's count
   * on success. Throws 429 TOOMANYREQUESTS (Retry-After
   * set on `res`) when throttled or when the hashing queue is full.
   */
  async attempt(req: Request, res: Response, user: string, attempt: () => Promise<boolean | undefined>): Promise<boolean | undefined> {
    const address = this.address(req);
    const keys = this.keys(user, address);
    const wait = await this.blockedFor(keys, Date.now());
    if (wait > 0) {
      this.metrics?.loginThrottled();
      res.set('Retry-After', String(wait));
      throw new RegistryError('TOOMANYREQUESTS', `too many failed logins: try again in ${wait} s`);
    }
    let ok: boolean | undefined;
    try {
      ok = await attempt();
    } catch (err) {
      if (!(err instanceof HashingBusy)) throw err;
      this.metrics?.loginThrottled();
      res.set('Retry-After', '1');
      throw new RegistryError('TOOMANYREQUESTS', 'too many logins at once: try again shortly');
    }
    this.metrics?.login(ok);
    if (ok === true) await this.sql.run('DELETE FROM login_failures WHERE key = ?', [keys[0]!]);
    else if (ok === false) await this.failed(keys, user, address);
    return ok;
  }

  private async failed(keys: string[], user: string, address: string): Promise<void> {
    const now = Date.now();
    const windowMs = this.settings.login_failure_window * 1000;
    const counts = await this.sql.transaction(async (tx) => {
      await tx.run('DELETE FROM login_failures WHERE window_start <= ?', [now - windowMs]);
      const counts: number[] = [];
      for (const key of keys) {
        const count = await tx.value<number>(
          'INSERT INTO login_failures (key, failures, window_start) VALUES (?, 1, ?) ON CONFLICT(key) DO UPDATE SET failures = login_failures.failures + 1 RETURNING failures',
          [key, now],
        );
        counts.push(Number(count));
      }
      return counts;
    });
    const limit = this.settings.login_failure_limit;
    // One line when a key reaches the limit, not one per refused guess.
    counts.forEach((count, i) => {
      if (count !== limit) return;
      const what = i === 0 ? `account '${user.slice(0, 64)}'` : `address ${address}`;
      this.logger.warn(`logins throttled for ${what}: ${limit} failed logins within ${this.settings.login_failure_window} s`);
    });
  }

  /** Remember credentials the main server just accepted (a salted slow hash); a busy hashing queue skips it. */
  async remember(user: string, password: string): Promise<void> {
    if (this.settings.login_cache_ttl <= 0) return;
    let hash: string;
    try {
      hash = await this.hasher.hash(`${user}\u0000${password}`);
    } catch (err) {
      if (err instanceof HashingBusy) return;
      throw err;
    }
    await this.sql.run(
      'INSERT INTO login_cache ("user", credentials_hash, verified_at) VALUES (?, ?, ?) ON CONFLICT("user") DO UPDATE SET credentials_hash = excluded.credentials_hash, verified_at = excluded.verified_at',
      [user, hash, Date.now()],
    );
  }

  /** Forget a user's cached login (the main server refused it). */
  async forget(user: string): Promise<void> {
    await this.sql.run('DELETE FROM login_cache WHERE "user" = ?', [user]);
  }

  /** Were these credentials accepted by the main server within login_cache_ttl? 'none': nothing recent is known of the user. */
  async recall(user: string, password: string): Promise<'match' | 'mismatch' | 'none'> {
    if (this.settings.login_cache_ttl <= 0) return 'none';
    const row = await this.sql.get<{ credentials_hash: string; verified_at: number | string }>('SELECT credentials_hash, verified_at FROM login_cache WHERE "user" = ?', [user]);
    if (!row || Number(row.verified_at) + this.settings.login_cache_ttl * 1000 <= Date.now()) return 'none';
    return (await this.hasher.verify(`${user}\u0000${password}`, row.credentials_hash)) ? 'match' : 'mismatch';
  }
}
