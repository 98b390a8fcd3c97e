// Small promise tools of the downloads (blob-fetches.ts): a bound on how many
// run at once, and a promise settled from outside.

/** At most `limit` holders at once; the others wait in order. */
export class Slots {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async acquire(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

/** A promise and its resolve and reject, to be called from outside; a rejection nobody awaits is not reported. */
export function settled<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => undefined); // nobody may be listening: not an unhandled rejection
  return { promise, resolve, reject };
}
