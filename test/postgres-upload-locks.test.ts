// The locks a node holds many of at once, one per upload being written
// (Cluster.withSharedConnectionLock), on a real PostgreSQL server: refused at
// once to another node, free again after, and held on one connection of
// their own, so that a node writing many uploads still has its pool for
// queries; a cut locking connection releases them and the next lock opens another.
import t from 'tap';
import { openPostgres, parseDbConnection } from '../plugins/container_gateway/db/connection.ts';
import { LocalCluster } from '../plugins/container_gateway/db/cluster.ts';
import { startPostgres } from './helpers/postgres.ts';

const server = await startPostgres(t);
const conn = parseDbConnection(await server.createDatabase('locks'), 'unused');
if (conn.kind !== 'postgres') throw new Error('PostgreSQL expected');
/** A node: a pool of one connection, so that any lock taken from the pool would starve its queries. */
const open = async () => {
  const sql = await openPostgres(conn, { maxConnections: 1, poolTimeoutMs: 2000 });
  t.teardown(() => sql.close());
  return sql;
};
const [a, b] = await Promise.all([open(), open()]);

t.test('held by one node, refused at once to another, free again after; the pool stays free', async (t) => {
  const releases: Array<() => void> = [];
  const held = Array.from({ length: 50 }, (_, i) => a.cluster.withSharedConnectionLock(`upload ${i}`, () => new Promise<number>((r) => releases.push(() => r(i)))));
  while (releases.length < 50) await new Promise((r) => setTimeout(r, 10));
  t.equal(await a.value<number>('SELECT 1'), 1, 'a node holding 50 upload locks still queries through its one pooled connection');
  const started = Date.now();
  t.same(await b.cluster.withSharedConnectionLock('upload 7', async () => 'b wrote'), { locked: false }, 'another node is refused');
  t.ok(Date.now() - started < 1000, 'at once');
  t.same(await b.cluster.withSharedConnectionLock('upload 50', async () => 'b wrote'), { locked: true, value: 'b wrote' }, 'another upload is free');
  for (const release of releases) release();
  t.same((await Promise.all(held)).length, 50);
  t.same(await b.cluster.withSharedConnectionLock('upload 7', async () => 'b wrote'), { locked: true, value: 'b wrote' }, 'free once released');
  await t.rejects(
    a.cluster.withSharedConnectionLock('upload 7', async () => {
      throw new Error('write failed');
    }),
    /write failed/,
  );
  t.same(await b.cluster.withSharedConnectionLock('upload 7', async () => 1), { locked: true, value: 1 }, 'released when the body throws');
});

t.test('a cut locking connection releases its locks; the next lock opens another', async (t) => {
  let release!: () => void;
  const held = a.cluster.withSharedConnectionLock('upload cut', () => new Promise<void>((r) => (release = r)));
  while (release === undefined) await new Promise((r) => setTimeout(r, 10));
  t.same(await b.cluster.withSharedConnectionLock('upload cut', async () => 0), { locked: false }, 'held');
  const cut = await b.value<number>(
    "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid WHERE l.locktype = 'advisory' AND s.datname = current_database()",
  );
  t.equal(cut, 1, 'the connection holding it was cut');
  t.same(await b.cluster.withSharedConnectionLock('upload cut', async () => 'b'), { locked: true, value: 'b' }, 'the server released the lock');
  release();
  await held;
  let ok: unknown;
  for (let i = 0; i < 50 && ok === undefined; i++) {
    ok = await a.cluster.withSharedConnectionLock('upload next', async () => 'a again').catch(() => undefined);
  }
  t.same(ok, { locked: true, value: 'a again' }, 'the node locks again on a new connection');
});

t.test('SQLite (one process): the same answers', async (t) => {
  const local = new LocalCluster();
  let release!: () => void;
  const held = local.withSharedConnectionLock('upload 1', () => new Promise<void>((r) => (release = r)));
  t.same(await local.withSharedConnectionLock('upload 1', async () => 0), { locked: false });
  t.same(await local.withSharedConnectionLock('upload 2', async () => 2), { locked: true, value: 2 });
  release();
  await held;
  t.same(await local.withSharedConnectionLock('upload 1', async () => 1), { locked: true, value: 1 });
});
