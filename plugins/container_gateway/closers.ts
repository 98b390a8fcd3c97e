// What setup() opens is closed by stop() in the reverse order, each part
// before what it depends on (a sync run before the database it writes to).
// A setup that fails halfway closes what it had opened the same way.
import type { Logger } from '../../lib/plugins/api.ts';

export class Closers {
  private readonly stack: Array<{ what: string; close: () => unknown }> = [];

  /** Remember how to close `part`; returns it. */
  add<T>(what: string, part: T, close: (part: T) => unknown): T {
    this.stack.push({ what, close: () => close(part) });
    return part;
  }

  /** Close everything added, last first; a failure is logged and the rest still closes. */
  async closeAll(log: Pick<Logger, 'error'>): Promise<void> {
    for (let entry = this.stack.pop(); entry; entry = this.stack.pop()) {
      try {
        await entry.close();
      } catch (err) {
        log.error(`closing ${entry.what} failed: ${(err as Error)?.message ?? String(err)}`);
      }
    }
  }
}
