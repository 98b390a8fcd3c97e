// Password hashes of standalone users and of the recent-login cache: scrypt
// (memory-hard, in Node's crypto), encoded as
// `scrypt$N$r$p$<salt base64>$<hash base64>` so the parameters can be raised
// later without invalidating stored hashes.
//
// scrypt runs on libuv's thread pool (4 threads), which file I/O also needs:
// unbounded derivations would let a login flood starve blob reads. A running
// gateway hashes through one PasswordHasher, whose queue bounds them.
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/** 2^15 iterations × r=8: 32 MiB and some tens of milliseconds per hash. */
export const SCRYPT_PARAMS = { N: 2 ** 15, r: 8, p: 1 } as const;
/** Node's default maxmem (32 MiB) is exactly what N=2^15, r=8 needs, which it refuses: allow 64 MiB. */
export const SCRYPT_MAXMEM = 64 * 1024 * 1024;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

/** Derivations of one PasswordHasher running at once, and waiting (see PasswordHasher). */
export const HASHING_CONCURRENCY = 1;
export const HASHING_QUEUE = 16;

/** The password hashing queue is full: try again shortly. */
export class HashingBusy extends Error {
  constructor() {
    super('password hashing is busy');
    this.name = 'HashingBusy';
  }
}

const ENCODED = /^scrypt\$(\d{1,10})\$(\d{1,3})\$(\d{1,3})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;

interface Parsed {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

function parse(stored: string): Parsed | undefined {
  const m = ENCODED.exec(stored);
  if (!m) return undefined;
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const salt = Buffer.from(m[4]!, 'base64');
  const hash = Buffer.from(m[5]!, 'base64');
  // A power of two above 1, and nothing that would not fit in maxmem (128·N·r bytes).
  if (N < 2 || (N & (N - 1)) !== 0 || r < 1 || p < 1 || 128 * N * r > SCRYPT_MAXMEM) return undefined;
  // Never weaker than what hashPassword makes (a truncated hash would still match its prefix).
  if (salt.length < SALT_BYTES || hash.length < KEY_BYTES || hash.length > 64) return undefined;
  return { N, r, p, salt, hash };
}

function derive(password: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/**
 * Hashing and checking passwords with a bounded queue: at most `concurrency`
 * derivations run at once, at most `queue` wait; beyond that the caller gets
 * HashingBusy at once (the route answers 429 or 503).
 */
export class PasswordHasher {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  /** A hash of a random password, checked for unknown users: their absence must not show in the time taken. */
  private dummy: Promise<string> | undefined;

  constructor(private readonly limits: { concurrency: number; queue: number } = { concurrency: HASHING_CONCURRENCY, queue: HASHING_QUEUE }) {}

  private async slot<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.limits.concurrency) {
      if (this.waiting.length >= this.limits.queue) throw new HashingBusy();
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await work();
    } finally {
      // The slot passes straight to the next waiter, or is freed.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }

  /** A new salted hash of `password`; an empty password is refused. */
  async hash(password: string): Promise<string> {
    if (typeof password !== 'string' || password.length === 0) throw new Error('the password must not be empty');
    const salt = randomBytes(SALT_BYTES);
    const { N, r, p } = SCRYPT_PARAMS;
    const key = await this.slot(() => derive(password, salt, KEY_BYTES, { N, r, p, maxmem: SCRYPT_MAXMEM }));
    return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
  }

  /**
   * Does `password` match `stored` (a hash() result)? Compared in constant
   * time; an empty password or a malformed hash is simply false. Rejects with
   * HashingBusy when the queue is full.
   */
  async verify(password: string, stored: string): Promise<boolean> {
    if (typeof password !== 'string' || password.length === 0 || typeof stored !== 'string') return false;
    const parsed = parse(stored);
    if (!parsed) return false;
    let key: Buffer;
    try {
      key = await this.slot(() => derive(password, parsed.salt, parsed.hash.length, { N: parsed.N, r: parsed.r, p: parsed.p, maxmem: SCRYPT_MAXMEM }));
    } catch (err) {
      if (err instanceof HashingBusy) throw err;
      return false;
    }
    return timingSafeEqual(key, parsed.hash);
  }

  /** Check `password` of a user who does not exist: as slow as verify(), always false. */
  async verifyUnknown(password: string): Promise<false> {
    this.dummy ??= this.hash(randomBytes(16).toString('hex'));
    // A busy queue while the dummy was made must not leave a rejected promise behind for good.
    const dummy = await this.dummy.catch((err: unknown) => {
      this.dummy = undefined;
      throw err;
    });
    await this.verify(password, dummy);
    return false;
  }
}

/** hash() of a hasher of its own: for tools and tests, outside a running gateway. */
export function hashPassword(password: string): Promise<string> {
  return new PasswordHasher().hash(password);
}

/** verify() of a hasher of its own: for tools and tests, outside a running gateway. */
export function verifyPassword(password: string, stored: string): Promise<boolean> {
  return new PasswordHasher().verify(password, stored);
}
