// Small file-system helpers shared by the content store's modules.
import { randomBytes } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { InvalidDigestError } from './blob-errors.ts';

export const MiB = 1024 * 1024;

export function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Ignore ENOENT: the file is gone, which is what we wanted or what another process already did. */
export async function unlinkQuiet(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (errno(err) !== 'ENOENT') throw err;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function randomSuffix(): string {
  return randomBytes(8).toString('hex');
}

const SHA256_DIGEST = /^sha256:([0-9a-f]{64})$/;

/** The hex of a `sha256:<64 lowercase hex>` digest; InvalidDigestError for anything else. */
export function hexOf(digest: string): string {
  const m = SHA256_DIGEST.exec(digest);
  if (!m) throw new InvalidDigestError(digest);
  return m[1]!;
}

/** A verified temporary file: mtime now (the gc grace period starts at commit), then fsync. */
export async function seal(fh: FileHandle): Promise<void> {
  const now = new Date();
  await fh.utimes(now, now);
  await fh.sync();
}
