// How far a fetch may run ahead of its readers. Once the store writes around
// the page cache (write-pipeline.ts), a reader that falls behind the fetch's
// memory window reads the disk; so a fetch keeps within half its window of
// its fastest reader, which then always copies from memory, as a relay (or a
// tee to the store) would. Measured on a cold 1 GiB pull: proxyd 5.4 s of CPU per
// GiB with the fetch running ahead (its client reading the disk) against
// 2.9 s paced. Only readers that are reading count: one that made no progress
// for STALL_MS (its client stopped reading, or is slower than the upstream by
// far) holds nothing back, so no client can stall a download for the others
// nor make the upstream connection go idle. Nor does a reader that is behind
// the window (a late joiner, one that stalled): it reads the file at its own
// pace, however long it takes. Without a reader the fetch runs at the
// upstream's pace.
import { setTimeout as delay } from 'node:timers/promises';

/** A reader without progress for this long no longer paces the fetch. */
export const STALL_MS = 250;

interface Progress {
  position: number;
  at: number;
}

export class FetchPace {
  private readonly readers = new Map<object, Progress>();
  private waiting: (() => void) | undefined;
  private stopped = false;

  /**
   * `received`: bytes the fetch has taken so far; `window`: bytes of them it
   * keeps in memory. It runs at most half of that ahead of the fastest reader.
   */
  constructor(
    private readonly received: () => number,
    private readonly window: number,
  ) {}

  /** A reader is at `position` (it joined, or it advanced). */
  progress(reader: object, position: number): void {
    this.readers.set(reader, { position, at: performance.now() });
    this.check();
  }

  /** A reader went away. */
  leave(reader: object): void {
    if (this.readers.delete(reader)) this.check();
  }

  /** Resolves once the fetch may take its next chunk. */
  async turn(): Promise<void> {
    while (!this.stopped && this.ahead()) {
      const moved = new Promise<void>((resolve) => (this.waiting = resolve));
      // Readers that stall are only noticed by time: look again after STALL_MS.
      const ac = new AbortController();
      await Promise.race([moved, delay(STALL_MS, undefined, { signal: ac.signal, ref: false }).catch(() => undefined)]);
      ac.abort();
      this.waiting = undefined;
    }
  }

  /** The fetch ended (done or failed): nothing waits any more. */
  stop(): void {
    this.stopped = true;
    this.readers.clear();
    this.check();
  }

  /** The fastest reader within the window that is reading is more than half the window behind. */
  private ahead(): boolean {
    const now = performance.now();
    const received = this.received();
    let fastest = -1;
    for (const p of this.readers.values()) {
      if (now - p.at < STALL_MS && received - p.position <= this.window) fastest = Math.max(fastest, p.position);
    }
    return fastest >= 0 && received - fastest > this.window / 2;
  }

  private check(): void {
    if (this.waiting && (this.stopped || !this.ahead())) this.waiting();
  }
}
