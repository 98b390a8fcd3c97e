// What several gateway processes sharing one database need from it beyond
// queries: a lock that only one of them holds at a time (gc, sync), and
// notifications so each can drop what it cached when another changed it.
//
// A separate interface rather than optional members of `Sql`: the queries of
// db/, store/ and auth/ never need it, and the parts that do (gc, sync, the
// caches) get it from the one place that opened the database. PostgreSQL
// implements it across nodes (db/postgres-cluster.ts: advisory locks,
// LISTEN/NOTIFY); `LocalCluster` implements it within one process, for SQLite,
// whose database is never shared between machines.

export type LockResult<T> = { readonly locked: true; readonly value: T } | { readonly locked: false };

export interface NotificationListener {
  /** A message sent with `notify` on the channel (by any node, this one included). */
  onPayload(payload: string): void;
  /** Messages may have been lost (the connection that listens was re-established): drop everything cached. */
  onMissed(): void;
}

export interface Cluster {
  /**
   * Runs `fn` while holding the lock named `key`, unless another holder has
   * it: then answers `{locked: false}` at once, without waiting or running `fn`.
   */
  withAdvisoryLock<T>(key: string, fn: () => Promise<T>): Promise<LockResult<T>>;
  /**
   * The same, for locks a process holds many of at once, briefly (one per
   * upload being written): they all share one connection of their own
   * instead of taking one pooled connection each.
   */
  withSharedConnectionLock<T>(key: string, fn: () => Promise<T>): Promise<LockResult<T>>;
  /** Calls the listener for each message on `channel` until the returned function is called. */
  listen(channel: string, listener: NotificationListener): Promise<() => Promise<void>>;
  /** Sends `payload` (at most 7999 bytes) to every listener of `channel` on every node. */
  notify(channel: string, payload: string): Promise<void>;
  /**
   * Resolves once every notification sent, by any node, before this call has
   * reached this process's listeners. The number it resolves to changes
   * whenever some may have been lost since the previous call (the listening
   * connection was opened again); undefined when that cannot be known now
   * (no listening connection): then nothing cached may be trusted.
   */
  barrier(): Promise<number | undefined>;
  close(): Promise<void>;
}

/** The cluster of one process: locks are names held in a set, notifications are delivered in-process. */
export class LocalCluster implements Cluster {
  private readonly held = new Set<string>();
  private readonly listeners = new Map<string, Set<NotificationListener>>();

  async withAdvisoryLock<T>(key: string, fn: () => Promise<T>): Promise<LockResult<T>> {
    if (this.held.has(key)) return { locked: false };
    this.held.add(key);
    try {
      return { locked: true, value: await fn() };
    } finally {
      this.held.delete(key);
    }
  }

  withSharedConnectionLock<T>(key: string, fn: () => Promise<T>): Promise<LockResult<T>> {
    return this.withAdvisoryLock(key, fn);
  }

  async listen(channel: string, listener: NotificationListener): Promise<() => Promise<void>> {
    let set = this.listeners.get(channel);
    if (!set) this.listeners.set(channel, (set = new Set()));
    set.add(listener);
    return async () => {
      set.delete(listener);
    };
  }

  async notify(channel: string, payload: string): Promise<void> {
    // Delivered after the caller's current work, as a database notification would be.
    const targets = [...(this.listeners.get(channel) ?? [])];
    queueMicrotask(() => {
      for (const l of targets) l.onPayload(payload);
    });
  }

  async barrier(): Promise<number | undefined> {
    // Every notify before this call queued its delivery first.
    await new Promise<void>((resolve) => queueMicrotask(resolve));
    return 0;
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }
}
