// The ring buffer behind GET /logs: the last `size` records at or above the
// logger level, plus a tail ring keeping ERROR-or-worse records that fell off.
export interface LogRecord {
  timestamp: number;
  level: string;
  message: string;
  request_id?: string;
  backtrace?: string[];
}

class Ring<T> {
  private items: T[] = [];
  private start = 0;
  constructor(readonly capacity: number) {}

  /** Push; returns the item that fell off, if any. */
  push(item: T): T | undefined {
    if (this.capacity === 0) return item;
    if (this.items.length < this.capacity) {
      this.items.push(item);
      return undefined;
    }
    const dropped = this.items[this.start];
    this.items[this.start] = item;
    this.start = (this.start + 1) % this.capacity;
    return dropped;
  }

  toArray(): T[] {
    return [...this.items.slice(this.start), ...this.items.slice(0, this.start)];
  }
}

const SEVERE = new Set(['ERROR', 'FATAL', 'UNKNOWN']);

export class LogBuffer {
  private readonly main: Ring<LogRecord>;
  private readonly tail: Ring<LogRecord>;

  constructor(size: number, tailSize: number) {
    this.main = new Ring(size);
    this.tail = new Ring(tailSize);
  }

  get size(): number {
    return this.main.capacity;
  }

  get tailSize(): number {
    return this.tail.capacity;
  }

  push(record: LogRecord): void {
    const dropped = this.main.push(record);
    if (dropped && SEVERE.has(dropped.level)) this.tail.push(dropped);
  }

  /** Records with timestamp ≥ `from`, oldest first (tail ring first). */
  since(from = 0): LogRecord[] {
    return [...this.tail.toArray(), ...this.main.toArray()].filter((r) => r.timestamp >= from);
  }
}
