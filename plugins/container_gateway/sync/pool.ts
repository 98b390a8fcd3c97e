// Bounded parallelism for the sync: a pool running a function over items, and
// a limiter that bounds concurrent transfers across nested pools (repositories
// × tags × blobs would otherwise multiply).
import type http from 'node:http';
import type { RegistryFetch } from '../oci/registry-fetch.ts';

/**
 * Run `fn` over `items`, at most `limit` at a time. The first failure stops
 * starting new items and is rethrown once the running ones settle (so no work
 * is left running behind the caller's back).
 */
export async function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!, i);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure) throw failure.err;
}

/** A counting semaphore. */
export class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async acquire(): Promise<() => void> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const wake = this.waiting.shift();
      if (wake) wake();
      else this.active--;
    };
  }
}

/**
 * A fetch that holds a slot of `limiter` from the request until its response
 * is over (read to the end, or destroyed): at most `limit` transfers at once.
 */
export function limitedFetch(fetch: RegistryFetch, limiter: Limiter): RegistryFetch {
  return async (method, path, headers) => {
    const release = await limiter.acquire();
    let res: http.IncomingMessage;
    try {
      res = await fetch(method, path, headers);
    } catch (err) {
      release();
      throw err;
    }
    if (res.destroyed || res.complete) release();
    else {
      res.once('close', release);
      res.once('end', release);
      res.once('error', release);
    }
    return res;
  };
}
