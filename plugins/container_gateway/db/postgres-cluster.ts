// Several gateway nodes on one PostgreSQL database (db/cluster.ts): advisory
// locks so that gc or sync runs on one node at a time, and LISTEN/NOTIFY so
// that a change on one node reaches the caches of all. Listening needs a
// connection of its own that stays open (a pooled one is handed to others);
// when it drops, it is opened again and every listener is told that messages
// may have been missed meanwhile. The many brief locks of uploads share one
// more connection of their own (session locks: any number per session).
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Cluster, LockResult, NotificationListener } from './cluster.ts';

/** Where pooled connections come from (PostgresSql.connect: bounded by db_pool_timeout). */
export interface ConnectionSource {
  connect(): Promise<pg.PoolClient>;
}

const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 5_000;
/** The longest a read waits for the barrier round trip before reading from the pool instead. */
const BARRIER_TIMEOUT_MS = 5_000;

/** The 64-bit advisory lock key of a name: the first 8 bytes of its SHA-256, the same on every node and server version. */
export function advisoryLockKey(name: string): string {
  return createHash('sha256').update(name).digest().readBigInt64BE(0).toString();
}

/** A channel name as a quoted identifier (LISTEN takes an identifier, pg_notify the same name as text). */
const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

export class PostgresCluster implements Cluster {
  private readonly listeners = new Map<string, Set<NotificationListener>>();
  private listening: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectDelay = RECONNECT_FIRST_MS;
  private closed = false;
  /** The connection holding this process's withSharedConnectionLock locks. */
  private locking: Promise<pg.Client> | undefined;
  /** Which listening connection this is (1, 2, ...): notifications may have been lost between two. */
  private epoch = 0;
  /** The barrier round trip on the wire, and the next one, shared by every caller that came meanwhile. */
  private barrierSent: Promise<number | undefined> | undefined;
  private barrierQueued: Promise<number | undefined> | undefined;

  constructor(
    private readonly pool: ConnectionSource,
    private readonly config: pg.ClientConfig,
    private readonly onError?: (err: Error) => void,
  ) {}

  /**
   * pg_try_advisory_lock on one pooled connection held while `fn` runs (a
   * session lock: if that connection or this process dies, the server
   * releases it). Answers `{locked: false}` at once when another session holds it.
   */
  async withAdvisoryLock<T>(key: string, fn: () => Promise<T>): Promise<LockResult<T>> {
    const lockKey = advisoryLockKey(key);
    const client = await this.pool.connect();
    let unusable: Error | undefined;
    try {
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [lockKey]);
      if (!rows[0]?.locked) return { locked: false };
      try {
        return { locked: true, value: await fn() };
      } finally {
        try {
          await client.query('SELECT pg_advisory_unlock($1::bigint)', [lockKey]);
        } catch (err) {
          // Ending the session is what releases the lock now.
          unusable = err as Error;
        }
      }
    } catch (err) {
      if (typeof (err as { code?: unknown }).code !== 'string') unusable ??= err as Error;
      throw err;
    } finally {
      client.release(unusable);
    }
  }

  /**
   * pg_try_advisory_lock on the one locking connection of this process. Two
   * holders in this process of the same key would both get it (session locks
   * nest): callers hold a key once per process (the store's in-process lock).
   * If that connection drops, its locks are released; it is opened again on
   * the next call.
   */
  async withSharedConnectionLock<T>(key: string, fn: () => Promise<T>): Promise<LockResult<T>> {
    const lockKey = advisoryLockKey(key);
    const client = await this.lockingConnection();
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [lockKey]);
    if (!rows[0]?.locked) return { locked: false };
    try {
      return { locked: true, value: await fn() };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1::bigint)', [lockKey]).catch(async (err: Error) => {
        // Never leave a lock held: ending the session releases it (and this process's others).
        this.onError?.(err);
        await client.end().catch(() => undefined);
      });
    }
  }

  private lockingConnection(): Promise<pg.Client> {
    if (this.closed) return Promise.reject(new Error('PostgreSQL locks: closed'));
    if (this.locking) return this.locking;
    const client = new pg.Client(this.config);
    const forget = () => {
      if (this.locking === opening) this.locking = undefined;
    };
    client.on('error', (err) => {
      forget();
      this.onError?.(err);
    });
    client.on('end', forget);
    const opening: Promise<pg.Client> = client.connect().then(
      () => client,
      (err: Error) => {
        forget();
        throw err;
      },
    );
    this.locking = opening;
    return opening;
  }

  async listen(channel: string, listener: NotificationListener): Promise<() => Promise<void>> {
    if (this.closed) throw new Error('PostgreSQL notifications: closed');
    let set = this.listeners.get(channel);
    const first = !set;
    if (!set) this.listeners.set(channel, (set = new Set()));
    set.add(listener);
    try {
      const client = await this.connection();
      if (first) await client.query(`LISTEN ${quoteIdent(channel)}`);
    } catch (err) {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(channel);
      throw err;
    }
    return async () => {
      set.delete(listener);
      if (set.size > 0 || this.listeners.get(channel) !== set) return;
      this.listeners.delete(channel);
      await this.listening?.query(`UNLISTEN ${quoteIdent(channel)}`).catch(() => undefined);
    };
  }

  /** pg_notify through the pool: delivered to listeners on every node (this one included) once sent. */
  async notify(channel: string, payload: string): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('SELECT pg_notify($1, $2)', [channel, payload]);
      client.release();
    } catch (err) {
      client.release(typeof (err as { code?: unknown }).code === 'string' ? undefined : (err as Error));
      throw err;
    }
  }

  /**
   * One round trip on the listening connection: the server sends a listener
   * every notification committed before a query began ahead of that query's
   * answer. Callers that come while one is on the wire share the next one
   * (it must begin after they called), so under load a whole batch of reads
   * costs one round trip.
   */
  barrier(): Promise<number | undefined> {
    if (this.barrierQueued) return this.barrierQueued;
    if (!this.barrierSent) return this.sendBarrier();
    const queued: Promise<number | undefined> = this.barrierSent.then(() => {
      this.barrierQueued = undefined;
      return this.sendBarrier();
    });
    this.barrierQueued = queued;
    return queued;
  }

  private sendBarrier(): Promise<number | undefined> {
    const client = this.listening;
    if (!client) return Promise.resolve(undefined);
    const epoch = this.epoch;
    let timer: NodeJS.Timeout | undefined;
    // A connection that stopped answering (a network gone silent) must not hold every read: after
    // BARRIER_TIMEOUT_MS the reads go to the pool, and the connection is dropped and opened again.
    const silent = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => {
        this.lost(client, new Error(`PostgreSQL notifications: the listening connection did not answer within ${BARRIER_TIMEOUT_MS} ms`));
        client.end().catch(() => undefined);
        resolve(undefined);
      }, BARRIER_TIMEOUT_MS);
    });
    const answered = client.query('SELECT 1').then(
      () => (this.listening === client ? epoch : undefined),
      () => undefined,
    );
    const sent: Promise<number | undefined> = Promise.race([answered, silent]).finally(() => {
      clearTimeout(timer);
      if (this.barrierSent === sent) this.barrierSent = undefined;
    });
    this.barrierSent = sent;
    return sent;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.listeners.clear();
    const client = this.listening ?? (await this.connecting?.catch(() => undefined));
    this.listening = undefined;
    await client?.end().catch(() => undefined);
    const locking = await this.locking?.catch(() => undefined);
    this.locking = undefined;
    await locking?.end().catch(() => undefined);
  }

  /** The listening connection, opened (and listening on every channel) when there is none. */
  private connection(): Promise<pg.Client> {
    if (this.listening) return Promise.resolve(this.listening);
    this.connecting ??= this.open().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async open(): Promise<pg.Client> {
    const client = new pg.Client(this.config);
    client.on('notification', (msg) => this.deliver(msg.channel, msg.payload ?? ''));
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client));
    try {
      await client.connect();
      for (const channel of this.listeners.keys()) await client.query(`LISTEN ${quoteIdent(channel)}`);
    } catch (err) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
      throw err;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      throw new Error('PostgreSQL notifications: closed');
    }
    this.epoch += 1;
    this.listening = client;
    return client;
  }

  private deliver(channel: string, payload: string): void {
    for (const l of this.listeners.get(channel) ?? []) {
      try {
        l.onPayload(payload);
      } catch (err) {
        this.onError?.(err as Error);
      }
    }
  }

  /** The listening connection dropped: open another after a pause, then tell every listener what it may have missed. */
  private lost(client: pg.Client, err?: Error): void {
    if (this.listening !== client) return;
    this.listening = undefined;
    if (this.closed) return;
    this.onError?.(err ?? new Error('PostgreSQL notifications: the listening connection closed'));
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      if (this.closed) return;
      this.connection().then(
        () => {
          this.reconnectDelay = RECONNECT_FIRST_MS;
          for (const set of this.listeners.values()) {
            for (const l of set) {
              try {
                l.onMissed();
              } catch (e) {
                this.onError?.(e as Error);
              }
            }
          }
        },
        (e: Error) => {
          if (this.closed) return;
          this.onError?.(e);
          this.reconnectDelay = Math.min(this.reconnectDelay * 2, RECONNECT_MAX_MS);
          this.scheduleReconnect();
        },
      );
    }, this.reconnectDelay);
    this.reconnectTimer.unref();
  }
}
