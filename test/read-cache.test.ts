// The per-process read cache of PostgreSQL nodes (db/read-cache.ts) on a real
// server: repeated reads are answered without a query, and a change made
// anywhere (another node, a raw client, a cascade) is seen by the very next
// read on every node, also while and after the listening connection is cut.
import pg from 'pg';
import t from 'tap';
import { openPostgres, parseDbConnection } from '../plugins/container_gateway/db/connection.ts';
import type { PostgresSql } from '../plugins/container_gateway/db/postgres-sql.ts';
import { CachedReads } from '../plugins/container_gateway/db/read-cache.ts';
import { GatewayDb } from '../plugins/container_gateway/db/database.ts';
import { ContentIndex } from '../plugins/container_gateway/store/content-index.ts';
import { startPostgres } from './helpers/postgres.ts';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const cluster = await startPostgres(t);
let databases = 0;

interface Node {
  sql: PostgresSql;
  reads: CachedReads;
  db: GatewayDb;
  index: ContentIndex;
}

/** A new database and `n` nodes on it, each with its own pool, listening connection and cache. */
async function nodes(t: Test, n: number, limits?: { entries: number; bytes: number }): Promise<{ url: string; nodes: Node[] }> {
  const url = await cluster.createDatabase(`cache${++databases}`);
  const conn = parseDbConnection(url, 'unused') as Extract<ReturnType<typeof parseDbConnection>, { kind: 'postgres' }>;
  const out: Node[] = [];
  for (let i = 0; i < n; i++) {
    const sql = await openPostgres(conn, { maxConnections: 8, poolTimeoutMs: 5000 });
    const reads = await CachedReads.open(sql, sql.cluster, limits);
    t.teardown(async () => {
      await reads.close();
      await sql.close();
    });
    out.push({ sql, reads, db: new GatewayDb(sql, reads), index: new ContentIndex(sql, reads) });
  }
  return { url, nodes: out };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A repository with a tag pointing at a manifest whose body is `body`. */
async function tagged(sql: PostgresSql, repo: string, tag: string, body: string): Promise<number> {
  const index = new ContentIndex(sql);
  const id = await index.ensureRepository(repo, undefined);
  const digest = `sha256:${Buffer.from(body).toString('hex').padEnd(64, '0').slice(0, 64)}`;
  await index.putManifest(id, { digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', content: Buffer.from(body), children: [] }, tag);
  return id;
}

t.test('every table the cache reads announces its changes (migration 4)', async (t) => {
  const { nodes: [a] } = await nodes(t, 1);
  const tables = await a!.sql.column<string>("SELECT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid WHERE g.tgname LIKE '%\\_changed' ORDER BY 1");
  t.same(tables, ['authentication_tokens', 'blobs', 'hosts', 'hosts_repositories', 'manifests', 'repositories', 'repositories_users', 'repository_blobs', 'tags', 'user_namespaces', 'users']);
});

t.test('a repeated read is answered from the cache; a change on another node is seen by the very next read', async (t) => {
  const { nodes: [a, b] } = await nodes(t, 2);
  const id = await tagged(b!.sql, 'library/app', 'v1', 'body 0');
  t.equal((await a!.index.tagged(id, 'v1'))?.content.toString(), 'body 0');
  const before = a!.reads.stats().hits;
  for (let i = 0; i < 10; i++) t.equal((await a!.index.tagged(id, 'v1'))?.content.toString(), 'body 0');
  t.equal(a!.reads.stats().hits - before, 10, 'ten reads, ten answers from the cache');

  // Moving the tag on B and reading it on A at once, many times: never the old manifest.
  let stale = 0;
  for (let i = 1; i <= 200; i++) {
    await tagged(b!.sql, 'library/app', 'v1', `body ${i}`);
    if ((await a!.index.tagged(id, 'v1'))?.content.toString() !== `body ${i}`) stale++;
  }
  t.equal(stale, 0, 'no read on A returned a tag B had already moved');
});

t.test('a change by any client of the database (not a gateway) empties every cache', async (t) => {
  const { url, nodes: [a] } = await nodes(t, 1);
  await a!.db.storeToken('c'.repeat(64), Date.now() + 60_000, 'alice');
  t.same(await a!.db.tokenRecord('c'.repeat(64)), { user: 'alice' });
  const raw = new pg.Client({ connectionString: url });
  await raw.connect();
  t.teardown(() => raw.end());
  await raw.query('DELETE FROM users WHERE name = $1', ['alice']);
  t.equal(await a!.db.tokenRecord('c'.repeat(64)), undefined, "a token whose user was removed (cascade) is refused at once");
  // An unknown token is not remembered as unknown past its creation.
  t.equal(await a!.db.tokenRecord('d'.repeat(64)), undefined);
  await raw.query("INSERT INTO users (name) VALUES ('bob')");
  await raw.query("INSERT INTO authentication_tokens (token_checksum, expire_at, user_id) SELECT $1, $2, id FROM users WHERE name = 'bob'", ['d'.repeat(64), Date.now() + 60_000]);
  t.same(await a!.db.tokenRecord('d'.repeat(64)), { user: 'bob' });
});

t.test('an expired token is refused although its row is cached', async (t) => {
  const { nodes: [a] } = await nodes(t, 1);
  await a!.db.storeToken('e'.repeat(64), Date.now() + 300, 'carol');
  t.same(await a!.db.tokenRecord('e'.repeat(64)), { user: 'carol' });
  await sleep(400);
  t.equal(await a!.db.tokenRecord('e'.repeat(64)), undefined);
});

t.test('reads that come at once share round trips and all get the current answer', async (t) => {
  const { nodes: [a, b] } = await nodes(t, 2);
  const id = await tagged(b!.sql, 'library/many', 'v1', 'first');
  await a!.index.tagged(id, 'v1');
  const results = await Promise.all(Array.from({ length: 100 }, () => a!.index.tagged(id, 'v1')));
  t.ok(results.every((r) => r?.content.toString() === 'first'), '100 concurrent reads agree');
  await tagged(b!.sql, 'library/many', 'v1', 'second');
  const after = await Promise.all(Array.from({ length: 100 }, () => a!.index.tagged(id, 'v1')));
  t.ok(after.every((r) => r?.content.toString() === 'second'), 'and all see the change made before they began');
});

t.test('with its listening connection cut, a node reads through to the database, and caches again once it listens', async (t) => {
  const { nodes: [a, b] } = await nodes(t, 2);
  const id = await tagged(b!.sql, 'library/cut', 'v1', 'one');
  t.equal((await a!.index.tagged(id, 'v1'))?.content.toString(), 'one');
  // Cut every connection of both nodes from the server side, as a restart or a network failure would.
  const cut = await b!.sql.value<number>('SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
  t.ok(cut! >= 2, `connections cut (${cut})`);
  for (let i = 0; i < 20; i++) {
    await tagged(b!.sql, 'library/cut', 'v1', `two ${i}`);
    t.equal((await a!.index.tagged(id, 'v1'))?.content.toString(), `two ${i}`, `read ${i} while reconnecting is current`);
    await sleep(25);
  }
  // Listening again: the cache serves again, and is told of changes again.
  const end = Date.now() + 10_000;
  let hits = a!.reads.stats().hits;
  while (Date.now() < end) {
    await a!.index.tagged(id, 'v1');
    if (a!.reads.stats().hits > hits) break;
    hits = a!.reads.stats().hits;
    await sleep(50);
  }
  t.ok(a!.reads.stats().hits > hits, 'answered from the cache again');
  await tagged(b!.sql, 'library/cut', 'v1', 'three');
  t.equal((await a!.index.tagged(id, 'v1'))?.content.toString(), 'three');
});

t.test('the cache keeps at most its limits, least recently used out first', async (t) => {
  const { nodes: [a] } = await nodes(t, 1, { entries: 3, bytes: 1024 * 1024 });
  for (const name of ['r1', 'r2', 'r3', 'r4']) await a!.db.setPublic(name, true);
  for (const name of ['r1', 'r2', 'r3']) await a!.db.repository(name);
  await a!.db.repository('r1');
  await a!.db.repository('r4');
  t.equal(a!.reads.stats().entries, 3);
  const hits = a!.reads.stats().hits;
  await a!.db.repository('r1');
  t.equal(a!.reads.stats().hits - hits, 1, 'the recently used one was kept');
  await a!.db.repository('r2');
  t.equal(a!.reads.stats().hits - hits, 1, 'the least recently used one was dropped');
});

t.test('a listening connection that stops answering holds reads for a few seconds at most, then they go to the pool', async (t) => {
  const { url, nodes: [a] } = await nodes(t, 1);
  const id = await tagged(a!.sql, 'library/silent', 'v1', 'one');
  t.equal((await a!.index.tagged(id, 'v1'))?.content.toString(), 'one');
  // The listening connection's backend is the one whose last query is the barrier's.
  const raw = new pg.Client({ connectionString: url });
  await raw.connect();
  t.teardown(() => raw.end());
  const pids = (await raw.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'SELECT 1' AND pid <> pg_backend_pid()")).rows.map((r) => r.pid);
  t.equal(pids.length, 1, 'one listening connection');
  process.kill(pids[0]!, 'SIGSTOP');
  let resumed = false;
  const resume = () => {
    if (!resumed) process.kill(pids[0]!, 'SIGCONT');
    resumed = true;
  };
  t.teardown(resume);
  await raw.query("UPDATE manifests SET content = 'two'::bytea WHERE repository_id = $1", [id]);
  const started = Date.now();
  t.equal((await a!.index.tagged(id, 'v1'))?.content.toString(), 'two', 'the read is current');
  const waited = Date.now() - started;
  t.ok(waited < 15_000, `answered after ${waited} ms, not held`);
  resume();
  await raw.query("UPDATE manifests SET content = 'three'::bytea WHERE repository_id = $1", [id]);
  t.equal((await a!.index.tagged(id, 'v1'))?.content.toString(), 'three');
});
