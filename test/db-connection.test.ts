// db_connection_string as the Ruby gateway accepts it (parsing, unit), and
// bad database settings refused through the real daemon: the gateway fails
// with a message naming its settings file and the key, never the password.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { DbConnectionError, describeDbConnection, parseDbConnection, redact } from '../plugins/container_gateway/db/connection.ts';
import { request } from './helpers/http.ts';
import { startProxyd } from './helpers/proxyd.ts';

/** The `t` a test callback receives. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const DEFAULT_DB = '/var/lib/foreman-proxy/container_gateway.db';

t.test('parsing', async (t) => {
  t.same(parseDbConnection(undefined, DEFAULT_DB), { kind: 'sqlite', path: DEFAULT_DB }, 'unset: sqlite_db_path');
  t.same(parseDbConnection('sqlite:///var/lib/gw.db', DEFAULT_DB), { kind: 'sqlite', path: '/var/lib/gw.db' }, 'sqlite:///absolute');
  t.same(parseDbConnection('sqlite://data/gw.db', DEFAULT_DB), { kind: 'sqlite', path: 'data/gw.db' }, 'sqlite://relative');
  t.same(
    parseDbConnection('postgresql://gw:s%40cret@db.example.com:6543/container_gateway', DEFAULT_DB),
    { kind: 'postgres', config: { host: 'db.example.com', port: 6543, database: 'container_gateway', user: 'gw', password: 's@cret', ssl: false } },
    'postgresql:// with user, %-encoded password, host, port',
  );
  t.same(
    parseDbConnection('postgres://db.example.com/gw', DEFAULT_DB),
    { kind: 'postgres', config: { host: 'db.example.com', port: 5432, database: 'gw', ssl: false } },
    'postgres:// and the default port',
  );
  t.same(
    parseDbConnection('postgresql:///container_gateway', DEFAULT_DB),
    { kind: 'postgres', config: { host: '/var/run/postgresql', port: 5432, database: 'container_gateway', ssl: false } },
    'no host: the unix socket in /var/run/postgresql',
  );
  t.same(
    parseDbConnection('postgresql:///gw?host=/run/pg&user=foreman-proxy', DEFAULT_DB),
    { kind: 'postgres', config: { host: '/run/pg', port: 5432, database: 'gw', user: 'foreman-proxy', ssl: false } },
    '?host=/dir names the socket directory, ?user= the user',
  );
  t.same(
    parseDbConnection('postgresql://foreman-proxy@/container_gateway', DEFAULT_DB),
    { kind: 'postgres', config: { host: '/var/run/postgresql', port: 5432, database: 'container_gateway', user: 'foreman-proxy', ssl: false } },
    'a user over the unix socket (no host after the @)',
  );
  t.same(
    parseDbConnection('postgresql://gw:p%2Fw@/gw?host=%2Frun%2Fpg&port=5433', DEFAULT_DB),
    { kind: 'postgres', config: { host: '/run/pg', port: 5433, database: 'gw', user: 'gw', password: 'p/w', ssl: false } },
    'user, password, socket directory and port all given',
  );
  t.same(
    parseDbConnection('postgresql://[::1]:5433/gw?sslmode=verify-full&application_name=node1', DEFAULT_DB),
    { kind: 'postgres', config: { host: '::1', port: 5433, database: 'gw', ssl: 'verify-full', applicationName: 'node1' } },
    'IPv6 host, sslmode, application_name',
  );

  const refusals: [string, RegExp][] = [
    ['mysql://db/gw', /neither postgresql:\/\/, postgres:\/\/ nor sqlite:\/\//],
    ['sqlite:gw.db', /not an SQLite URL/],
    ['sqlite://', /needs a file path/],
    ['postgresql://db.example.com', /names no database/],
    ['postgresql://db.example.com:0/gw', /port "0": expected 1 to 65535/],
    ['postgresql://db/gw?sslmode=sometimes', /sslmode "sometimes"/],
    ['postgresql://db/gw?pool=3', /unsupported parameter 'pool'/],
    ['postgresql://db:0x10/gw', /port "0x10"/],
    ['postgresql://db/gw/extra', /names no database/],
  ];
  for (const [text, why] of refusals) {
    t.throws(() => parseDbConnection(text, DEFAULT_DB), why, `${text} refused`);
    t.throws(() => parseDbConnection(text, DEFAULT_DB), DbConnectionError);
  }
});

t.test('the password never appears in what is shown', async (t) => {
  t.equal(redact('postgresql://gw:hunter22@db/gw'), 'postgresql://gw:***@db/gw');
  t.equal(redact('postgresql://db/gw?user=gw&password=hunter22&sslmode=require'), 'postgresql://db/gw?user=gw&password=***&sslmode=require');
  for (const text of ['postgresql://gw:hunter22@db/gw?sslmode=bogus', 'mysql://gw:hunter22@db/gw', 'postgresql://gw:hunter22@db']) {
    let message = '';
    try {
      parseDbConnection(text, DEFAULT_DB);
    } catch (err) {
      message = (err as Error).message;
    }
    t.not(message, '', `${redact(text)} refused`);
    t.notMatch(message, /hunter22/, `no password in: ${message}`);
  }
  const conn = parseDbConnection('postgresql://gw:hunter22@db.example.com/gw', DEFAULT_DB);
  t.equal(describeDbConnection(conn), 'postgresql gw@db.example.com:5432/gw');
  t.equal(describeDbConnection(parseDbConnection('postgresql:///gw', DEFAULT_DB)), 'postgresql socket /var/run/postgresql/.s.PGSQL.5432/gw');
});

/** The gateway failed at start with a message naming its settings file and `key`; the daemon runs on. */
async function assertRefused(t: Test, gateway: Record<string, unknown>, key: string, why: RegExp, secret?: string): Promise<void> {
  const proxyd = await startProxyd({ fixtures: false, plugins: { container_gateway: { enabled: true, ...gateway } } });
  if (secret) proxyd.secrets.push(secret);
  t.teardown(async () => {
    await proxyd.stop();
    rmSync(proxyd.dir, { recursive: true, force: true });
  });
  const features = await request(`${proxyd.httpUrl}/v2/features`);
  t.equal(features.status, 200, 'the daemon answers');
  const entry = (features.json() as Record<string, { state: string; message?: string }>).container_gateway;
  t.equal(entry?.state, 'failed', 'container_gateway failed');
  const message = entry?.message ?? '';
  t.ok(message.includes(join(proxyd.dir, 'settings.d', 'container_gateway.yml')), `names the file: ${message}`);
  t.ok(message.includes(`'${key}'`), `names the key '${key}'`);
  t.match(message, why);
  if (secret) t.notOk(message.includes(secret), 'no password in the message');
}

t.test('bad database settings refused by the real daemon', async (t) => {
  t.test('db_connection_string: unknown scheme, password kept out', async (t) => {
    await assertRefused(t, { db_connection_string: 'mysql://gw:hunter22@db/gw' }, 'db_connection_string', /postgresql:\/\/.*sqlite:\/\//, 'hunter22');
  });
  t.test('db_connection_string: no database name', async (t) => {
    await assertRefused(t, { db_connection_string: 'postgresql://gw:hunter22@127.0.0.1:5432' }, 'db_connection_string', /names no database/, 'hunter22');
  });
  t.test('db_max_connections: 0', async (t) => {
    await assertRefused(t, { db_max_connections: 0 }, 'db_max_connections', /1/);
  });
  t.test('db_pool_timeout: not a number', async (t) => {
    await assertRefused(t, { db_pool_timeout: 'soon' }, 'db_pool_timeout', /seconds/);
  });
});
