// What proxyd nodes sharing one PostgreSQL database (a private cluster of
// Debian's server) and one storage coordinate through it, seen from outside:
// - a push through node A is visible on B at once (manifest, tag list);
// - tokens revoked and a repository made private on A: refused on B by the
//   next request, though B answered (and cached) them a moment before;
// - two requests on one upload via A and B at once: the second is told the
//   upload is busy (416, the Range held), the first's bytes are untouched and
//   the upload completes correct;
// - gc on A while B streams an upload (paused longer than the purge age):
//   nothing of it is purged, the blob it becomes survives the next gc (grace
//   period) and the image pushed with it pulls whole from A;
// - two gc at once: one runs, the other is refused (409 JSON naming the node;
//   `proxyctl gc` exits non-zero with that message);
// - two nodes starting a sync at the same instant: exactly one run starts;
// - smart-proxy mode with the Pulp backend: Katello's management calls on A
//   take effect on B at once, and the manifests B cached are dropped when
//   Katello's repository_list reaches A.
// Node coverage of the load balancer itself (HAProxy, failover): multi-node.test.ts.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { openPostgres, parseDbConnection } from '../plugins/container_gateway/db/connection.ts';
import { emptyProgress, SyncRuns } from '../plugins/container_gateway/sync/runs.ts';
import { request, type Reply } from './helpers/http.ts';
import { buildImage, pushImage } from './helpers/images.ts';
import { startKatelloDouble } from './helpers/katello-double.ts';
import { makePki, type CertPair } from './helpers/pki.ts';
import { startPostgres } from './helpers/postgres.ts';
import { PROXYCTL, run, startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';
import { manifestOf, OCI_MANIFEST, ociCode, sha256, StandaloneGateway } from './helpers/standalone-gateway.ts';

t.setTimeout(180_000);

const work = mkdtempSync(join(tmpdir(), 'gw-coordination-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const postgres = await startPostgres(t);

// --- two standalone nodes: one database, one storage ---

/** Seconds: an upload idle this long is abandoned; a blob younger than the grace is never collected. */
const PURGE_AGE = 2;
const GRACE = 60;
const shared = { db_connection_string: await postgres.createDatabase('standalone'), storage_path: join(work, 'storage'), upload_purge_age: PURGE_AGE, gc_grace_period: GRACE };
const startNode = (name: string) => StandaloneGateway.start(join(work, `node-${name}`), { settings: { ...shared, node_name: name } });
const [A, B] = await Promise.all([startNode('A'), startNode('B')]);
t.teardown(async () => {
  await Promise.all([A.stop(), B.stop()]);
});
await A.addUser('alice');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A PATCH whose body the test writes piece by piece: the request stays open until `end`. */
function streamingPatch(node: StandaloneGateway, location: string, token: string) {
  const req = http.request(new URL(location, node.base), { method: 'PATCH', agent: false, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' } });
  const answer = new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
  return { write: (b: Buffer) => new Promise<void>((resolve, reject) => req.write(b, (e) => (e ? reject(e) : resolve()))), end: () => (req.end(), answer) };
}

const uploadFile = (uuid: string) => join(shared.storage_path, 'uploads', uuid);
const uuidOf = (location: string) => location.split('/').pop()!.split('?')[0]!;
const octets = { 'Content-Type': 'application/octet-stream' };

t.test('a push through A is visible on B at once: manifest and tag list', async (t) => {
  const token = await A.tokenOf('alice', 'pull,push', 'alice/visible');
  const accept = { Accept: OCI_MANIFEST };
  const first = await A.pushImage('alice/visible', token, 'v1');
  const onB = await B.call('GET', '/v2/alice/visible/manifests/v1', { token, headers: accept });
  t.equal(onB.status, 200);
  t.equal(sha256(onB.body), first.digest, 'B serves what A stored');
  const moved = await A.pushImage('alice/visible', token, 'v1');
  await A.pushImage('alice/visible', token, 'v2');
  const again = await B.call('GET', '/v2/alice/visible/manifests/v1', { token, headers: accept });
  t.equal(sha256(again.body), moved.digest, 'v1 moved on A: B serves the new manifest at once');
  const tags = await B.call('GET', '/v2/alice/visible/tags/list', { token });
  t.same(tags.json<{ tags: string[] }>().tags, ['v1', 'v2'], "B's tag list has the tag A just pushed");
});

t.test("tokens revoked and a repository made private on A: B's next request says no, although it just said yes", async (t) => {
  const token = await A.tokenOf('alice', 'pull,push', 'alice/revoked');
  const accept = { Accept: OCI_MANIFEST };
  await A.pushImage('alice/revoked', token, 'v1');
  t.equal((await A.admin('PUT', '/repositories/alice/revoked/visibility', { public: true })).status, 200);
  // B has answered (and keeps in its cache) the token, the repository and the tag.
  for (let i = 0; i < 3; i++) t.equal((await B.call('GET', '/v2/alice/revoked/manifests/v1', { token, headers: accept })).status, 200);
  t.equal((await B.call('GET', '/v2/alice/revoked/manifests/v1', { headers: accept })).status, 200, 'public: anonymous reads it on B');
  t.equal((await A.admin('PUT', '/repositories/alice/revoked/visibility', { public: false })).status, 200);
  const anonymous = await B.call('GET', '/v2/alice/revoked/manifests/v1', { headers: accept });
  t.equal(anonymous.status, 401, 'made private on A: B challenges the anonymous reader at once');
  t.equal((await A.admin('DELETE', '/users/alice/tokens')).status, 200);
  const revoked = await B.call('GET', '/v2/alice/revoked/manifests/v1', { token, headers: accept });
  t.equal(revoked.status, 401, "alice's tokens revoked on A: B refuses the one it accepted a moment ago");
});

t.test('two requests on one upload via A and B at once: one writes, the other is told it is busy, the upload ends correct', async (t) => {
  const token = await A.tokenOf('alice', 'pull,push', 'alice/contended');
  const started = await A.call('POST', '/v2/alice/contended/blobs/uploads/', { token });
  t.equal(started.status, 202);
  const location = started.headers.location!;
  const uuid = uuidOf(location);
  const pieces = [randomBytes(256 * 1024), randomBytes(256 * 1024)];
  const onA = streamingPatch(A, location, token);
  await onA.write(pieces[0]!);
  // A is inside its write (holding the upload) once bytes reach the file.
  await until('A writing the upload', () => existsSync(uploadFile(uuid)) && statSync(uploadFile(uuid)).size > 0);

  const intruder = randomBytes(1000).toString('hex');
  const patchB = await B.call('PATCH', new URL(location, B.base).pathname, { token, body: intruder, headers: octets });
  t.equal(patchB.status, 416, `a PATCH on B meanwhile: 416, got ${patchB.status} ${patchB.body}`);
  t.equal(ociCode(patchB), 'RANGE_INVALID', 'in the OCI error form');
  t.match(patchB.headers.range, /^0-\d+$/, 'with the Range held so far');
  t.ok(patchB.headers.location, 'and the Location to ask where to resume');
  const whole = Buffer.concat(pieces);
  const digest = sha256(whole);
  const putB = await B.call('PUT', `${new URL(location, B.base).pathname}?digest=${digest}`, { token });
  t.equal(putB.status, 416, `completing it on B meanwhile: 416 too, got ${putB.status} ${putB.body}`);
  const deleteB = await B.call('DELETE', new URL(location, B.base).pathname, { token });
  t.equal(deleteB.status, 416, `cancelling it on B meanwhile: refused too, got ${deleteB.status} ${deleteB.body}`);

  await onA.write(pieces[1]!);
  const doneA = await onA.end();
  t.equal(doneA.status, 202, `A's PATCH completes: ${doneA.body}`);
  t.equal(doneA.headers.range, `0-${whole.length - 1}`, "it holds A's bytes only");
  const status = await B.call('GET', new URL(location, B.base).pathname, { token });
  t.equal(status.headers.range, `0-${whole.length - 1}`, 'B sees the same, the session still open');
  const done = await B.call('PUT', `${new URL(doneA.headers.location!, B.base).pathname}?digest=${digest}`, { token });
  t.equal(done.status, 201, `completed on B: ${done.body}`);
  // The test client reads bodies as UTF-8: compare digests of HEAD-free ranges instead.
  for (const [name, node] of [['A', A], ['B', B]] as const) {
    const head = await node.call('HEAD', `/v2/alice/contended/blobs/${digest}`, { token });
    t.equal(head.status, 200, `node ${name} has the blob`);
    t.equal(head.headers['content-length'], String(whole.length), `node ${name}: its size is A's bytes`);
  }
});

t.test('gc on A while B streams an upload: nothing is lost', async (t) => {
  const token = await A.tokenOf('alice', 'pull,push', 'alice/gc-safe');
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(4).toString('hex') });
  const configPush = await B.pushBlob('alice/gc-safe', token, config);
  t.equal(configPush.res.status, 201);
  const started = await B.call('POST', '/v2/alice/gc-safe/blobs/uploads/', { token });
  const uuid = uuidOf(started.headers.location!);
  const layer = Buffer.from(randomBytes(300 * 1024).toString('hex'));
  const onB = streamingPatch(B, started.headers.location!, token);
  await onB.write(layer.subarray(0, 200 * 1024));
  await until('B writing the upload', () => existsSync(uploadFile(uuid)) && statSync(uploadFile(uuid)).size > 0);
  // Paused past the purge age: only the lock B holds says the upload is not abandoned.
  await sleep((PURGE_AGE + 1) * 1000);
  const gc = await A.admin('POST', '/gc');
  t.equal(gc.status, 200, `gc on A: ${gc.body}`);
  t.notOk(gc.json<{ purged: { sessions?: string[] } }>().purged.sessions?.includes(uuid), 'the upload B streams is not purged');
  t.ok(existsSync(uploadFile(uuid)), 'its file is there');
  await onB.write(layer.subarray(200 * 1024));
  const patched = await onB.end();
  t.equal(patched.status, 202, `B's PATCH completes: ${patched.body}`);
  const digest = sha256(layer);
  const committed = await B.call('PUT', `${new URL(patched.headers.location!, B.base).pathname}?digest=${digest}`, { token });
  t.equal(committed.status, 201, `committed on B: ${committed.body}`);

  // Committed, not referenced yet: the grace period keeps it through a gc.
  const again = await A.admin('POST', '/gc');
  t.equal(again.status, 200);
  const manifest = manifestOf(configPush.blob, [{ digest, size: layer.length, bytes: '' }]);
  const put = await B.call('PUT', '/v2/alice/gc-safe/manifests/v1', { token, body: manifest, headers: { 'Content-Type': OCI_MANIFEST } });
  t.equal(put.status, 201, `the manifest is accepted: every blob is there (${put.body})`);
  const got = await A.call('GET', `/v2/alice/gc-safe/blobs/${digest}`, { token });
  t.equal(got.status, 200);
  t.equal(sha256(got.body), digest, 'A serves the whole layer');
});

t.test('two gc at once: one runs, the other is refused naming the node', async (t) => {
  // Old unreferenced blobs to collect, enough that A's gc runs for seconds
  // (here ~6 s; proxyctl needs ~1.5 s to start and ask).
  const old = new Date(Date.now() - 3600_000);
  for (let i = 0; i < 5000; i++) {
    const hex = randomBytes(32).toString('hex');
    const dir = join(shared.storage_path, 'blobs', 'sha256', hex.slice(0, 2));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, hex), hex);
    utimesSync(join(dir, hex), old, old);
  }
  const gcStart = Date.now();
  const onA = A.admin('POST', '/gc');
  await until("A's gc to start", () => existsSync(join(shared.storage_path, 'gc-running')));
  const [onB, cli] = await Promise.all([B.admin('POST', '/gc'), run([PROXYCTL, 'gc', '--settings', B.proxyd.settingsFile])]);
  t.comment(`proxyctl on B answered ${Date.now() - gcStart} ms after A's gc started`);
  t.equal(onB.status, 409, `B's gc meanwhile: ${onB.body}`);
  t.match(onB.headers['content-type'], /application\/json/);
  t.match(onB.json<{ error: string }>().error, /^gc is already running on node A/);
  t.not(cli.code, 0, 'proxyctl gc on B exits non-zero');
  t.match(cli.stderr, /gc is already running on node A/, `and says why: ${cli.stderr}`);
  const ranA = await onA;
  t.equal(ranA.status, 200);
  t.comment(`A's gc took ${Date.now() - gcStart} ms`);
  t.ok(ranA.json<{ removed: number }>().removed >= 5000, "A's gc collected the old blobs");
  t.notOk(existsSync(join(shared.storage_path, 'gc-running')), 'and says no more that it runs');
  const after = await B.admin('POST', '/gc');
  t.equal(after.status, 200, 'once it ended, B runs one');
});

t.test('two nodes starting a sync at the same instant: exactly one run starts', async (t) => {
  const conn = parseDbConnection(shared.db_connection_string, join(work, 'unused.db'));
  if (conn.kind !== 'postgres') throw new Error('PostgreSQL expected');
  const [dbA, dbB] = await Promise.all([openPostgres(conn, { maxConnections: 2, poolTimeoutMs: 5000 }), openPostgres(conn, { maxConnections: 2, poolTimeoutMs: 5000 })]);
  t.teardown(async () => {
    await dbA.close();
    await dbB.close();
  });
  const [runsA, runsB] = [new SyncRuns(dbA, () => new Set(), 'A'), new SyncRuns(dbB, () => new Set(), 'B')];
  for (let round = 0; round < 20; round++) {
    const both = await Promise.all([runsA.start(null), runsB.start(null)]);
    const started = both.flatMap((r) => ('run' in r ? [r.run] : []));
    t.equal(started.length, 1, `round ${round}: one run started`);
    const winner = started[0]?.id ?? -1;
    const other = both.find((r) => 'running' in r);
    t.equal(other && 'running' in other ? other.running.id : undefined, winner, `round ${round}: the other node is told that one runs`);
    await runsA.finish(winner, 'succeeded', emptyProgress());
  }
});

// --- smart-proxy mode, Pulp backend: two nodes on another database ---

t.test("smart-proxy mode: Katello's management calls on A take effect on B at once", async (t) => {
  const APP = 'default_organization/product/app';
  const PRIV = 'default_organization/product/private';
  const HOST = '6f2a1c3e-8b4d-4e5f-9a7b-1c2d3e4f5a6b';
  const ACCEPT = { Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' };
  const pki = makePki();
  t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));
  const foreman = pki.client('foreman.example.com');
  const host = pki.client(HOST);
  // Pulp's registry API here: a real docker-registry.
  const registry = await startRegistry();
  t.teardown(() => registry.stop());
  const [one, two] = await Promise.all([1, 2].map((i) => buildImage(join(work, 'images'), { name: `smart${i}`, files: { '/etc/motd': `image ${i}\n` } })));
  for (const name of [APP, PRIV]) await pushImage(one!.ref, `${registry.host}/${name}:v1`);
  const katello = await startKatelloDouble();
  t.teardown(() => katello.stop());
  katello.override((req, res) => {
    if (req.headers.hostuuid === undefined) return false;
    res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":{"message":"host not found"}}');
    return true;
  });
  const db_connection_string = await postgres.createDatabase('smart');
  const start = (name: string): Promise<RunningProxyd> =>
    startProxyd({
      https: true,
      http: false,
      fixtures: false,
      settings: { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca, trusted_hosts: ['foreman.example.com'], foreman_url: katello.url, log_level: 'INFO' },
      plugins: {
        container_gateway: { enabled: true, pulp_endpoint: registry.url, pulp_registry_path: '/v2/', db_connection_string, sqlite_db_path: join(work, `unused-${name}.db`), node_name: name, manifest_cache_ttl: 600 },
      },
    });
  const [nodeA, nodeB] = await Promise.all([start('A'), start('B')]);
  t.teardown(async () => {
    await Promise.all([nodeA.stop(), nodeB.stop()]);
  });
  const put = (route: string, body: unknown) =>
    request(`${nodeA.httpsUrl}/container_gateway/${route}/`, { method: 'PUT', ca: pki.ca, client: foreman, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const onB = (path: string, client?: CertPair, headers: Record<string, string> = {}): Promise<Reply> => request(`${nodeB.httpsUrl}${path}`, { ca: pki.ca, headers, ...(client ? { client } : {}) });
  const digestOnB = async (name: string, client?: CertPair) => {
    const r = await onB(`/v2/${name}/manifests/v1`, client, ACCEPT);
    return `${r.status} ${r.headers['docker-content-digest'] ?? r.body}`;
  };

  const listed = await put('repository_list', { repositories: [{ repository: APP, auth_required: false }, { repository: PRIV, auth_required: true }] });
  t.ok(listed.status >= 200 && listed.status < 300, `repository_list on A: ${listed.status} ${listed.body}`);
  const first = await digestOnB(APP);
  t.match(first, /^200 sha256:/, 'B serves the repository A was told of');

  // Pulp's content changes (a capsule sync); B's cache still holds the old manifest until Katello says so.
  await pushImage(two!.ref, `${registry.host}/${APP}:v1`);
  t.equal(await digestOnB(APP), first, 'before Katello tells: B answers from its cache (the cache is on)');
  const relisted = await put('repository_list', { repositories: [{ repository: APP, auth_required: false }, { repository: PRIV, auth_required: true }] });
  t.ok(relisted.status >= 200 && relisted.status < 300, `repository_list again on A: ${relisted.status}`);
  const second = await digestOnB(APP);
  t.match(second, /^200 sha256:/);
  t.not(second, first, "repository_list on A: B's cached manifest is dropped at once");

  t.match(await digestOnB(PRIV, host), /^404 /, 'the host may not read the private repository yet');
  const mapped = await put('update_host_repositories', { hosts: [{ [HOST]: [{ repository: PRIV, auth_required: true }] }] });
  t.ok(mapped.status >= 200 && mapped.status < 300, `update_host_repositories on A: ${mapped.status} ${mapped.body}`);
  t.match(await digestOnB(PRIV, host), /^200 sha256:/, 'on B at once, the host reads it');

  const users = await put('user_repository_mapping', { users: [{ bob: [{ repository: PRIV, auth_required: true }] }] });
  t.ok(users.status >= 200 && users.status < 300, `user_repository_mapping on A: ${users.status} ${users.body}`);
  const listedOnB = await onB('/container_gateway/users', foreman);
  t.same(listedOnB.json<{ users: string[] }>().users, ['bob'], 'B lists the user A was told of');
});
