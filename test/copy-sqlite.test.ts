// Moving over from SQLite: the PostgreSQL schema equals the end state of the
// SQLite migrations (tables, columns, keys, indexes, ON DELETE rules), and an
// SQLite gateway database made by the real migrations, with rows in every
// table, is copied into an empty PostgreSQL database row for row; a target
// with data, or an SQLite file at another version, is refused untouched.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { openPostgres, parseDbConnection } from '../plugins/container_gateway/db/connection.ts';
import { COPY_ORDER, CopyRefused, copySqliteToPostgres } from '../plugins/container_gateway/db/copy-sqlite.ts';
import { MIGRATIONS } from '../plugins/container_gateway/db/migrations.ts';
import { SQLITE_SCHEMA_VERSION } from '../plugins/container_gateway/db/postgres-migrations.ts';
import type { PostgresSql } from '../plugins/container_gateway/db/postgres-sql.ts';
import { startPostgres } from './helpers/postgres.ts';
import { PROXYCTL, run } from './helpers/proxyd.ts';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const cluster = await startPostgres(t);
const work = mkdtempSync(join(tmpdir(), 'proxyd-copy-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
let databases = 0;

async function emptyPostgres(t: Test): Promise<PostgresSql> {
  const url = await cluster.createDatabase(`copy${++databases}`);
  const sql = await openPostgres(parseDbConnection(url, 'unused') as Extract<ReturnType<typeof parseDbConnection>, { kind: 'postgres' }>, { maxConnections: 3, poolTimeoutMs: 5000 });
  t.teardown(() => sql.close());
  return sql;
}

/** An SQLite file migrated as the gateway migrates it (each migration, then user_version), up to `upTo`. */
function migratedSqlite(name: string, upTo = MIGRATIONS.length): Database.Database {
  const db = new Database(join(work, name));
  db.pragma('foreign_keys = ON');
  for (let v = 0; v < upTo; v++) {
    db.exec(MIGRATIONS[v]!);
    db.pragma(`user_version = ${v + 1}`);
  }
  return db;
}

const NOW = 1_796_000_000_123;
const MANIFEST = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}\u0000\u00ff');

/** Rows in every table, with NULLs, a blob with odd bytes, and ids with gaps. */
function fill(db: Database.Database): void {
  db.exec(`
    INSERT INTO users (id, name, password_hash) VALUES (1, 'alice', 'scrypt$x'), (7, 'bob', NULL);
    INSERT INTO repositories (id, name, auth_required, owner_id, pending, listed) VALUES (3, 'alice/app', 1, 1, 0, 1), (12, 'library/alpine', 0, NULL, 1, 0);
    INSERT INTO authentication_tokens (id, token_checksum, expire_at, user_id, scopes) VALUES (5, 'sum1', ${NOW}, 7, 'repository:alice/app:pull');
    INSERT INTO repositories_users VALUES (3, 7);
    INSERT INTO hosts (id, uuid) VALUES (2, 'e6a9f1d0-0000-4000-8000-000000000001');
    INSERT INTO hosts_repositories VALUES (2, 12);
    INSERT INTO blobs VALUES ('sha256:aa', 5000000000, ${NOW}), ('sha256:bb', 12, ${NOW});
    INSERT INTO repository_blobs VALUES (3, 'sha256:aa'), (12, 'sha256:bb');
    INSERT INTO tags VALUES (3, 'latest', 'sha256:m1');
    INSERT INTO uploads VALUES ('u-1', 3, ${NOW});
    INSERT INTO sync_runs (id, state, repositories, started_at, finished_at, updated_at, progress, error, pid, node) VALUES (4, 'failed', '["a"]', ${NOW}, ${NOW + 1}, ${NOW + 1}, '{}', 'boom', 4242, 'node-a');
    INSERT INTO user_namespaces VALUES (1, 'alice');
    INSERT INTO tag_order VALUES (3, 'latest', 2, 1, 'sha256:m1');
    INSERT INTO login_failures VALUES ('user:bob', 3, ${NOW});
    INSERT INTO login_cache VALUES ('bob', 'scrypt$y', ${NOW});
    INSERT INTO tag_checks VALUES (12, 'latest', ${NOW});
    INSERT INTO on_demand_counters VALUES ('node-a', 100, 1, 5, 2, 123456789012);
  `);
  db.prepare('INSERT INTO manifests VALUES (3, ?, ?, NULL, NULL, NULL, ?, ?)').run('sha256:m1', 'application/vnd.oci.image.manifest.v1+json', MANIFEST, NOW);
  db.prepare('INSERT INTO manifests VALUES (3, ?, ?, ?, ?, ?, ?, ?)').run('sha256:m2', 'application/vnd.oci.image.index.v1+json', 'application/x-sig', 'sha256:m1', '{"a":"b"}', MANIFEST, NOW);
  db.exec("INSERT INTO manifest_children VALUES (3, 'sha256:m2', 'sha256:m1')");
}

/** Every row of a table, columns by name, in a stable order; Buffers compared as hex. */
const normalise = (rows: Record<string, unknown>[]) =>
  rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Buffer.isBuffer(v) ? `hex:${v.toString('hex')}` : v])));
const orderBy = (cols: string[]) => cols.map((c) => `"${c}"`).join(', ');

t.test('the PostgreSQL schema equals the end state of the SQLite migrations', async (t) => {
  t.equal(SQLITE_SCHEMA_VERSION, MIGRATIONS.length, 'the PostgreSQL schema is declared equal to the latest SQLite migration');
  const lite = migratedSqlite('schema.db');
  t.teardown(() => lite.close());
  const pg = await emptyPostgres(t);
  const liteTables = (lite.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all() as string[]).filter((n) => !n.startsWith('sqlite_'));
  const pgTables = await pg.column<string>("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> 'schema_migrations' ORDER BY table_name");
  t.same(pgTables, liteTables, 'the same tables');
  t.same([...COPY_ORDER.map((c) => c.table)].sort(), liteTables, 'the copy covers every table');

  for (const table of liteTables) {
    const liteCols = (lite.pragma(`table_info("${table}")`) as { name: string; notnull: number; pk: number }[]).map((c) => ({ name: c.name, notNull: c.notnull === 1 || c.pk > 0, pk: c.pk }));
    const pgCols = await pg.all<{ name: string; notNull: boolean; pk: number }>(
      `SELECT a.attname AS name, a.attnotnull AS "notNull", COALESCE(array_position(c.conkey, a.attnum), 0) AS pk
       FROM pg_attribute a LEFT JOIN pg_constraint c ON c.conrelid = a.attrelid AND c.contype = 'p'
       WHERE a.attrelid = ?::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
      [table],
    );
    t.same(pgCols, liteCols, `${table}: columns, NOT NULL, primary key`);

    const liteFks = new Map<number, { table: string; from: string[]; to: string[]; onDelete: string }>();
    for (const f of lite.pragma(`foreign_key_list("${table}")`) as { id: number; table: string; from: string; to: string; on_delete: string }[]) {
      const fk = liteFks.get(f.id) ?? { table: f.table, from: [], to: [], onDelete: f.on_delete };
      fk.from.push(f.from);
      fk.to.push(f.to);
      liteFks.set(f.id, fk);
    }
    const rule: Record<string, string> = { a: 'NO ACTION', c: 'CASCADE', n: 'SET NULL', r: 'RESTRICT', d: 'SET DEFAULT' };
    const pgFks = await pg.all<{ table: string; from: string; to: string; deltype: string }>(
      `SELECT c.confrelid::regclass::text AS table, c.confdeltype AS deltype,
         (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY k(att, n) JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.att) AS "from",
         (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(c.confkey) WITH ORDINALITY k(att, n) JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.att) AS "to"
       FROM pg_constraint c WHERE c.contype = 'f' AND c.conrelid = ?::regclass`,
      [table],
    );
    const key = (f: { table: string; from: string; to: string; onDelete: string }) => `${f.from} -> ${f.table}(${f.to}) ON DELETE ${f.onDelete}`;
    t.same(
      pgFks.map((f) => key({ ...f, onDelete: rule[f.deltype]! })).sort(),
      [...liteFks.values()].map((f) => key({ table: f.table, from: f.from.join(','), to: f.to.join(','), onDelete: f.onDelete })).sort(),
      `${table}: foreign keys and ON DELETE rules`,
    );

    const liteUnique = (lite.pragma(`index_list("${table}")`) as { name: string; unique: number; origin: string }[])
      .filter((i) => i.unique === 1 && i.origin === 'u')
      .map((i) => (lite.pragma(`index_info("${i.name}")`) as { name: string }[]).map((c) => c.name).join(','))
      .sort();
    const pgUnique = await pg.column<string>(
      `SELECT (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY k(att, n) JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.att)
       FROM pg_constraint c WHERE c.contype = 'u' AND c.conrelid = ?::regclass ORDER BY 1`,
      [table],
    );
    t.same(pgUnique, liteUnique, `${table}: UNIQUE constraints`);
  }

  const liteIndexes = (lite.prepare("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").all() as { name: string; tbl_name: string; sql: string }[])
    .map((i) => `${i.tbl_name}.${i.name}${/\bUNIQUE\b/i.test(i.sql) ? ' unique' : ''}${/\bWHERE\b/i.test(i.sql) ? ` where ${i.sql.split(/\bWHERE\b/i)[1]!.trim()}` : ''}`)
    .sort();
  const pgIndexes = (await pg.all<{ tablename: string; indexname: string; indexdef: string }>("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE '%\\_pkey' AND indexname NOT LIKE '%\\_key'"))
    .map((i) => `${i.tablename}.${i.indexname}${/\bUNIQUE\b/.test(i.indexdef) ? ' unique' : ''}${/\bWHERE\b/.test(i.indexdef) ? ` where ${i.indexdef.split(/\bWHERE\b/)[1]!.trim().replace(/^\((.*)\)$/, '$1').replace(/::text/g, '')}` : ''}`)
    .sort();
  t.same(pgIndexes, liteIndexes, 'the same named indexes, unique and partial ones alike');
});

t.test('an SQLite gateway database is copied row for row, ids continue after the copied ones', async (t) => {
  const lite = migratedSqlite('full.db');
  fill(lite);
  lite.close();
  const pg = await emptyPostgres(t);
  const report = await copySqliteToPostgres(join(work, 'full.db'), pg);

  const source = new Database(join(work, 'full.db'), { readonly: true });
  t.teardown(() => source.close());
  let expectedTotal = 0;
  for (const { table } of COPY_ORDER) {
    const cols = (source.pragma(`table_info("${table}")`) as { name: string }[]).map((c) => c.name);
    const liteRows = source.prepare(`SELECT * FROM "${table}" ORDER BY ${orderBy(cols)}`).all() as Record<string, unknown>[];
    t.ok(liteRows.length > 0, `${table} has rows to copy`);
    const pgRows = await pg.all<Record<string, unknown>>(`SELECT * FROM "${table}" ORDER BY ${orderBy(cols)}`);
    t.same(normalise(pgRows), normalise(liteRows), `${table}: the same rows`);
    t.equal(report.tables[table], liteRows.length, `${table}: counted in the report`);
    expectedTotal += liteRows.length;
  }
  t.equal(report.rows, expectedTotal);

  t.equal(await pg.value('INSERT INTO users (name) VALUES (?) RETURNING id', ['carol']), 8, 'a new user gets the id after the largest copied one');
  t.equal(await pg.value('INSERT INTO repositories (name, auth_required) VALUES (?, 0) RETURNING id', ['new/repo']), 13);
  t.equal(await pg.value("INSERT INTO sync_runs (state, started_at, updated_at, progress, pid) VALUES ('running', 1, 1, '{}', 1) RETURNING id"), 5);
  t.equal(await pg.value('INSERT INTO hosts (uuid) VALUES (?) RETURNING id', ['h2']), 3);
  t.equal(await pg.value('INSERT INTO authentication_tokens (token_checksum, expire_at, user_id) VALUES (?, 1, 1) RETURNING id', ['sum2']), 6);

  // The copied foreign keys are live: deleting a repository cascades as on SQLite.
  await pg.run('DELETE FROM repositories WHERE id = 3');
  t.equal(await pg.value('SELECT count(*) FROM manifest_children'), 0, 'ON DELETE CASCADE through manifests to manifest_children');
  t.equal(await pg.value('SELECT owner_id FROM repositories WHERE id = 12'), null);

  await t.rejects(copySqliteToPostgres(join(work, 'full.db'), pg), CopyRefused, 'a second copy into a database with data is refused');
  await t.rejects(copySqliteToPostgres(join(work, 'full.db'), pg), /not empty \(table users has rows\)/);
  t.equal(await pg.value('SELECT count(*) FROM users'), 3, 'and left it as it was');
});

t.test('two nodes copying at once: one copies, the other is refused', async (t) => {
  const lite = migratedSqlite('twice.db');
  fill(lite);
  lite.close();
  const url = await cluster.createDatabase('twice');
  const conn = parseDbConnection(url, 'unused') as Extract<ReturnType<typeof parseDbConnection>, { kind: 'postgres' }>;
  const [a, b] = await Promise.all([1, 2].map(() => openPostgres(conn, { maxConnections: 2, poolTimeoutMs: 5000 })));
  t.teardown(async () => {
    await a!.close();
    await b!.close();
  });
  const results = await Promise.allSettled([copySqliteToPostgres(join(work, 'twice.db'), a!), copySqliteToPostgres(join(work, 'twice.db'), b!)]);
  t.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one copied');
  const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
  t.ok(refused?.reason instanceof CopyRefused, `the other was refused: ${refused?.reason}`);
  t.equal(await a!.value('SELECT count(*) FROM users'), 2, 'the rows are there once');
});

t.test('refused: an SQLite file at another schema version, a missing file; nothing written', async (t) => {
  const old = migratedSqlite('old.db', MIGRATIONS.length - 1);
  old.close();
  const pg = await emptyPostgres(t);
  await t.rejects(copySqliteToPostgres(join(work, 'old.db'), pg), new RegExp(`SQLite schema version ${MIGRATIONS.length - 1}; this gateway copies version ${MIGRATIONS.length} only`));
  await t.rejects(copySqliteToPostgres(join(work, 'absent.db'), pg), /cannot open the SQLite database/);
  for (const { table } of COPY_ORDER) t.equal(await pg.value(`SELECT count(*) FROM "${table}"`), 0, `${table} still empty`);
});

t.test('a copy that fails half way leaves the target empty', async (t) => {
  const lite = migratedSqlite('bad.db');
  fill(lite);
  // A row PostgreSQL refuses (SQLite did not check the foreign key: enforcement was off when it was written).
  lite.pragma('foreign_keys = OFF');
  lite.exec("INSERT INTO tags VALUES (999, 'orphan', 'sha256:zz')");
  lite.close();
  const pg = await emptyPostgres(t);
  await t.rejects(copySqliteToPostgres(join(work, 'bad.db'), pg), { code: '23503' });
  for (const { table } of COPY_ORDER) t.equal(await pg.value(`SELECT count(*) FROM "${table}"`), 0, `${table} empty after the failed copy`);
});

t.test('proxyctl db migrate: copies once (exit 0), then refuses (1); bad --to (64); unreachable (2), no password shown', async (t) => {
  const lite = migratedSqlite('cli.db');
  fill(lite);
  lite.close();
  const url = await cluster.createDatabase('cli');
  const migrate = (...args: string[]) => run([PROXYCTL, 'db', 'migrate', ...args]);

  const first = await migrate('--sqlite', join(work, 'cli.db'), '--to', url, '--json');
  t.equal(first.code, 0, `copied: ${first.stderr}`);
  const answer = JSON.parse(first.stdout) as { copied: boolean; rows: number; tables: Record<string, number>; to: string };
  t.equal(answer.copied, true);
  t.equal(answer.tables.manifests, 2);
  t.equal(answer.to, `postgresql postgres@127.0.0.1:${cluster.port}/cli`);
  const pg = await openPostgres(parseDbConnection(url, 'unused') as Extract<ReturnType<typeof parseDbConnection>, { kind: 'postgres' }>, { maxConnections: 1, poolTimeoutMs: 5000 });
  t.teardown(() => pg.close());
  t.equal(await pg.value('SELECT count(*) FROM tags'), 1, 'the rows are in PostgreSQL');

  const again = await migrate('--sqlite', join(work, 'cli.db'), '--to', url);
  t.equal(again.code, 1, 'a second run is refused');
  t.match(again.stderr, /not empty/);
  t.equal(await pg.value('SELECT count(*) FROM users'), 2, 'and changed nothing');

  const text = await migrate('--sqlite', join(work, 'absent.db'), '--to', url);
  t.equal(text.code, 1, 'a missing SQLite file is refused');
  t.match(text.stderr, /no SQLite database at/);

  const bad = await migrate('--to', 'sqlite:///tmp/x.db');
  t.equal(bad.code, 64, 'a non-PostgreSQL --to is a usage error');
  const down = await migrate('--sqlite', join(work, 'cli.db'), '--to', `postgresql://gw:hunter22@127.0.0.1:${cluster.port + 1}/gw`);
  t.equal(down.code, 2, 'an unreachable server exits 2');
  t.match(down.stderr, `postgresql gw@127.0.0.1:${cluster.port + 1}/gw`);
  t.notMatch(down.stderr + down.stdout, /hunter22/, 'the password is not shown');
});
