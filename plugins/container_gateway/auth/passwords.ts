// Password hashes of standalone users: scrypt (memory-hard, in Node's crypto),
// encoded as `scrypt$N$r$p$<salt base64>$<hash base64>` so the parameters can
// be raised later without invalidating stored hashes.
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/** 2^15 iterations × r=8: 32 MiB and some tens of milliseconds per hash. */
export const SCRYPT_PARAMS = { N: 2 ** 15, r: 8, p: 1 } as const;
/** Node's default maxmem (32 MiB) is exactly what N=2^15, r=8 needs, which it refuses: allow 64 MiB. */
export const SCRYPT_MAXMEM = 64 * 1024 * 1024;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

/**
 * scrypt runs on libuv's thread pool (4 threads), which file I/O also needs:
 * unbounded derivations let a login flood starve blob reads. At most
 * HASHING_CONCURRENCY run at once, at most HASHING_QUEUE wait; beyond that
 * the caller gets HashingBusy at once (the route answers 429).
 */
export const HASHING_CONCURRENCY = 1;
export const HASHING_QUEUE = 16;

/** The password hashing queue is full: try again shortly. */
export class HashingBusy extends Error {
  constructor() {
    super('password hashing is busy');
    this.name = 'HashingBusy';
  }
}

let running = 0;
const waiting: Array<() => void> = [];

async function slot<T>(work: () => Promise<T>): Promise<T> {
  if (running >= HASHING_CONCURRENCY) {
    if (waiting.length >= HASHING_QUEUE) throw new HashingBusy();
    await new Promise<void>((resolve) => waiting.push(resolve));
  } else {
    running++;
  }
  try {
    return await work();
  } finally {
    // The slot passes straight to the next waiter, or is freed.
    const next = waiting.shift();
    if (next) next();
    else running--;
  }
}

function derive(password: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return slot(
    () =>
      new Promise<Buffer>((resolve, reject) => {
        scrypt(password.normalize('NFC'), salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
      }),
  );
}

/** A new salted hash of `password`; an empty password is refused. */
export async function hashPassword(password: string): Promise<string> {
  if (typeof password !== 'string' || password.length === 0) throw new Error('the password must not be empty');
  const salt = randomBytes(SALT_BYTES);
  const { N, r, p } = SCRYPT_PARAMS;
  const key = await derive(password, salt, KEY_BYTES, { N, r, p, maxmem: SCRYPT_MAXMEM });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
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

/**
 * Does `password` match `stored` (a hashPassword result)? Compared in
 * constant time; an empty password or a malformed hash is simply false.
 * Rejects with HashingBusy when the hashing queue is full.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  if (typeof password !== 'string' || password.length === 0 || typeof stored !== 'string') return false;
  const parsed = parse(stored);
  if (!parsed) return false;
  let key: Buffer;
  try {
    key = await derive(password, parsed.salt, parsed.hash.length, { N: parsed.N, r: parsed.r, p: parsed.p, maxmem: SCRYPT_MAXMEM });
  } catch (err) {
    if (err instanceof HashingBusy) throw err;
    return false;
  }
  return timingSafeEqual(key, parsed.hash);
}
