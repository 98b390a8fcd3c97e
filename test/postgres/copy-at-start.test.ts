// Moving a gateway from SQLite to PostgreSQL with the real daemon: a gateway
// that ran on SQLite (users, tokens, repositories, pushed content) restarted
// with db_connection_string at an empty PostgreSQL database finds everything
// there, and the log says what was copied; restarting copies nothing again; a
// PostgreSQL database that holds data is never overwritten by another SQLite
// file. Also `proxyctl status`'s database line, without the password.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startPostgres } from '../helpers/postgres.ts';
import { PROXYCTL, run } from '../helpers/proxyd.ts';
import { OCI_MANIFEST, StandaloneGateway } from '../helpers/standalone-gateway.ts';

const cluster = await startPostgres(t);
const work = mkdtempSync(join(tmpdir(), 'gw-move-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

/** Byte order ("B" < "_" < "a" < "a-b" < "a.b"): what SQLite lists, and PostgreSQL must list too. */
const TAGS = ['a.b', 'B', 'a', '_z', 'a-b'];
const PASSWORD = 'pg-secret-1234';

/** What a client sees of alice's content: tag lists (whole and page by page), manifests, a layer, the repositories. */
async function seen(gw: StandaloneGateway, token: string, image: { digest: string; layer: { digest: string } }) {
  const tags = (await gw.call('GET', '/v2/alice/app/tags/list', { token })).json<{ tags: string[] }>().tags;
  const paged: string[] = [];
  let next: string | undefined = '/v2/alice/app/tags/list?n=2';
  while (next) {
    const page = await gw.call('GET', next, { token });
    paged.push(...page.json<{ tags: string[] }>().tags);
    const link = /<([^>]+)>/.exec(String(page.headers.link ?? ''))?.[1];
    next = link === undefined ? undefined : new URL(link, gw.base).pathname + new URL(link, gw.base).search;
  }
  const manifests = await Promise.all(TAGS.map(async (tag) => (await gw.call('GET', `/v2/alice/app/manifests/${tag}`, { token, headers: { Accept: OCI_MANIFEST } })).headers['docker-content-digest']));
  const layer = await gw.call('GET', `/v2/alice/app/blobs/${image.layer.digest}`, { token });
  const repositories = (await gw.admin('GET', '/repositories')).json();
  return { tags, paged, manifests, layer: [layer.status, layer.body.length], repositories };
}

t.test('a gateway moved from SQLite to an empty PostgreSQL database: everything is there, copied once', async (t) => {
  const dir = join(work, 'moved');
  const onSqlite = await StandaloneGateway.start(dir);
  t.teardown(() => onSqlite.stop());
  await onSqlite.addUser('alice');
  const token = await onSqlite.tokenOf('alice', 'pull,push', 'alice/app', 'alice/zed');
  const image = await onSqlite.pushImage('alice/app', token, 'v1');
  for (const tag of TAGS) {
    const put = await onSqlite.call('PUT', `/v2/alice/app/manifests/${tag}`, { token, body: image.manifest, headers: { 'Content-Type': OCI_MANIFEST } });
    t.equal(put.status, 201, `tag ${tag} pushed on SQLite`);
  }
  await onSqlite.pushImage('alice/zed', token, 'v1');
  const before = await seen(onSqlite, token, image);
  t.same(before.tags, ['B', '_z', 'a', 'a-b', 'a.b', 'v1'], 'SQLite lists tags in byte order');
  await onSqlite.stop();

  const url = (await cluster.createDatabase('moved')).replace('postgres@', `postgres:${PASSWORD}@`);
  const onPg = await StandaloneGateway.start(dir, { settings: { db_connection_string: url, db_max_connections: 4 }, logLevel: 'INFO' });
  onPg.proxyd.secrets.push(PASSWORD);
  t.teardown(() => onPg.stop());
  const copied = await onPg.proxyd.waitForLog(/copied the SQLite database/);
  t.match(String(copied.msg), /copied the SQLite database .*gw\.db into postgresql postgres@127\.0\.0\.1:\d+\/moved: \d+ rows \(users 1, repositories 2, authentication_tokens \d+, .*tags 7/, 'the log says what was copied');
  t.same(await seen(onPg, token, image), before, 'the token issued on SQLite still works; tags (in the same order, page by page), manifests, blobs and repositories are all there');
  const login = await onPg.call('GET', `/v2/token?service=${new URL(onPg.base).host}&scope=repository:alice/app:pull`, { headers: onPg.basic('alice') });
  t.equal(login.status, 200, "alice logs in with her password from SQLite");
  const later = await onPg.pushImage('alice/new', await onPg.tokenOf('alice', 'pull,push', 'alice/new'), 'v1');
  t.equal((await onPg.call('GET', `/v2/alice/new/manifests/v1`, { token: await onPg.tokenOf('alice', 'pull', 'alice/new'), headers: { Accept: OCI_MANIFEST } })).headers['docker-content-digest'], later.digest, 'a new repository after the copy (new ids past the copied ones)');

  const moved = await seen(onPg, token, image);

  const status = await run([PROXYCTL, '--url', onPg.base, 'status']);
  t.equal(status.code, 0, status.stderr);
  t.match(status.stdout, /container_gateway[^\n]*\n(\s+[^\n]*\n)*\s+database: postgresql postgres@127\.0\.0\.1:\d+\/moved, reachable \(\d+ ms\), pool \d\/4 in use, read cache \d+% of \d+ reads/, 'status: kind, place, reachable, pool, read cache');
  const json = JSON.parse((await run([PROXYCTL, '--url', onPg.base, 'status', '--json'])).stdout);
  t.match(json.plugins.find((p: { name: string }) => p.name === 'container_gateway').details.database, { kind: 'postgres', reachable: true, pool: { max: 4 } });
  t.notMatch(status.stdout + JSON.stringify(json), PASSWORD, 'the password is never shown');
  await onPg.stop();

  const again = await StandaloneGateway.start(dir, { settings: { db_connection_string: url }, logLevel: 'INFO' });
  again.proxyd.secrets.push(PASSWORD);
  t.teardown(() => again.stop());
  t.same(await seen(again, token, image), moved, 'restarted: the same, alice/new included');
  t.notOk(again.proxyd.lines.some((l) => l.includes('copied the SQLite database')), 'restarted: nothing copied again');
  t.same((await again.admin('GET', '/users')).json(), { users: ['alice'] }, 'no row doubled');
  await again.stop();

  // Another gateway's SQLite file pointed at the database that now holds alice's data.
  const other = join(work, 'other');
  const otherSqlite = await StandaloneGateway.start(other);
  t.teardown(() => otherSqlite.stop());
  await otherSqlite.addUser('bob');
  await otherSqlite.stop();
  const onto = await StandaloneGateway.start(other, { settings: { db_connection_string: url }, logLevel: 'INFO' });
  onto.proxyd.secrets.push(PASSWORD);
  t.teardown(() => onto.stop());
  t.same((await onto.admin('GET', '/users')).json(), { users: ['alice'] }, 'a PostgreSQL database with data is never overwritten: bob is not copied in');
  t.notOk(onto.proxyd.lines.some((l) => l.includes('copied the SQLite database')), 'and nothing is said to be copied');
});

t.test('proxyctl status on SQLite: the file, reachable, no pool', async (t) => {
  const gw = await StandaloneGateway.start(join(work, 'sqlite'));
  t.teardown(() => gw.stop());
  const status = await run([PROXYCTL, '--url', gw.base, 'status']);
  t.match(status.stdout, /\s+database: sqlite \S+gw\.db, reachable \(\d+ ms\)\n/);
  t.notMatch(status.stdout, /pool/);
});
