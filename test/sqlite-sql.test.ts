// The SQLite executor of the data layer: a transaction that throws leaves
// nothing; a query (or transaction) of another async path waits while one is
// open, sees none of its uncommitted state and is not rolled back with it; a
// nested transaction is refused; a statement reused in another mode (value,
// column, get, all) answers in that mode; migrations bring an empty file to
// the current schema and reopen it unchanged.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { MIGRATIONS } from '../plugins/container_gateway/db/migrations.ts';
import { SqliteSql } from '../plugins/container_gateway/db/sqlite-sql.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

function open(t: Tap): { sql: SqliteSql; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sqlite-sql-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'gw.db');
  const sql = new SqliteSql(path, 5000);
  t.teardown(() => sql.close());
  return { sql, path };
}

const names = (sql: SqliteSql) => sql.column<string>('SELECT name FROM users ORDER BY name');

t.test('a transaction that throws leaves nothing', async (t) => {
  const { sql } = open(t);
  await t.rejects(
    sql.transaction(async (tx) => {
      await tx.run('INSERT INTO users (name) VALUES (?)', ['alice']);
      t.same(await tx.column('SELECT name FROM users'), ['alice'], 'the transaction sees its own write');
      throw new Error('changed my mind');
    }),
    { message: 'changed my mind' },
  );
  t.same(await names(sql), [], 'rolled back');
  await sql.run('INSERT INTO users (name) VALUES (?)', ['bob']);
  t.same(await names(sql), ['bob'], 'the connection works after the rollback');
});

t.test('another async path waits for an open transaction, sees only committed state, and is not rolled back with it', async (t) => {
  const { sql } = open(t);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const order: string[] = [];
  const tx = sql.transaction(async (q) => {
    await q.run('INSERT INTO users (name) VALUES (?)', ['inside']);
    order.push('tx wrote');
    await gate;
    order.push('tx ends');
    throw new Error('rolled back on purpose');
  });
  // Issued while the transaction is open (its body is waiting on `gate`).
  const read = names(sql);
  const write = sql.run('INSERT INTO users (name) VALUES (?)', ['outside']);
  const later = sql.transaction(async (q) => {
    order.push('second tx');
    return q.column<string>('SELECT name FROM users ORDER BY name');
  });
  await new Promise((r) => setTimeout(r, 50));
  t.same(order, ['tx wrote'], 'nothing else ran while the transaction was open');
  release();
  await t.rejects(tx, { message: 'rolled back on purpose' });
  t.same(await read, [], 'the waiting read saw nothing uncommitted (and ran before the write asked after it)');
  await write;
  t.same(await later, ['outside'], 'the next transaction sees the write made after the rollback');
  t.same(order, ['tx wrote', 'tx ends', 'second tx'], 'the second transaction began after the first ended');
  t.same(await names(sql), ['outside'], 'the write of the other path was not rolled back');
});

t.test('a nested transaction, or a query on the connection inside a transaction, is refused', async (t) => {
  const { sql } = open(t);
  await t.rejects(
    sql.transaction(async () => sql.transaction(async () => undefined)),
    { message: /nested transaction/ },
  );
  await t.rejects(
    sql.transaction(async () => sql.value('SELECT 1')),
    { message: /inside its own transaction/ },
  );
  t.equal(await sql.value<number>('SELECT 1'), 1, 'the connection is usable after both');
});

t.test('a reused statement answers in the mode asked: value, column, get, all', async (t) => {
  const { sql } = open(t);
  await sql.run('INSERT INTO users (name) VALUES (?), (?)', ['alice', 'bob']);
  const text = 'SELECT name, id FROM users ORDER BY name';
  t.equal(await sql.value<string>(text), 'alice');
  t.same(await sql.get(text), { name: 'alice', id: 1 });
  t.same(await sql.column<string>(text), ['alice', 'bob']);
  t.same(await sql.all(text), [{ name: 'alice', id: 1 }, { name: 'bob', id: 2 }]);
  t.equal(await sql.value<string>(text), 'alice', 'back to value after get and all');
  t.equal(await sql.value('SELECT name FROM users WHERE name = ?', ['nobody']), undefined, 'no row: undefined');
  t.same(await sql.column('SELECT name FROM users WHERE name = ?', ['nobody']), []);
  const id = await sql.value<number>('INSERT INTO hosts (uuid) VALUES (?) RETURNING id', ['h-1']);
  t.equal(id, 1, 'RETURNING id');
  t.same(await sql.run('DELETE FROM users'), { changes: 2 }, 'changes counted');
});

t.test('the SQLite dialect: a JSON list parameter, substring search', async (t) => {
  const { sql } = open(t);
  await sql.run('INSERT INTO users (name) VALUES (?), (?), (?)', ['alice', 'bob', 'carol']);
  t.same(await sql.column(`SELECT name FROM users WHERE name IN (${sql.dialect.jsonList()}) ORDER BY name`, [JSON.stringify(['carol', 'alice', 'zed'])]), ['alice', 'carol']);
  t.same(await sql.column(`SELECT name FROM users WHERE ${sql.dialect.contains('name')} ORDER BY name`, ['o']), ['bob', 'carol']);
});

t.test('migrations: a new file gets the whole schema; reopening it changes nothing', async (t) => {
  const { sql, path } = open(t);
  await sql.close();
  const raw = new Database(path);
  t.equal(raw.pragma('user_version', { simple: true }), MIGRATIONS.length);
  t.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  const schema = raw.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").pluck().all();
  raw.close();
  const again = new SqliteSql(path, 5000);
  await again.close();
  const reopened = new Database(path);
  t.same(reopened.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").pluck().all(), schema);
  reopened.pragma(`user_version = ${MIGRATIONS.length + 1}`);
  reopened.close();
  t.throws(() => new SqliteSql(path, 5000), { message: /newer than this gateway/ });
});
