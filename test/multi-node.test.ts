// Several proxyd nodes sharing one database and one storage_path, behind the
// HAProxy of extra/haproxy/proxyd.cfg (real HAProxy, real daemons, real
// skopeo), as README's "Several proxies behind a load balancer" sets them up:
// - a token one node issued is accepted by the other;
// - an upload started on one node continues and completes on the other;
// - a push through HAProxy is pullable from each node at once;
// - one node killed (SIGKILL) while pushes and pulls stream through HAProxy:
//   pulls go on (client retries allowed: skopeo's own, and the pull in flight
//   at the kill may be run again, as a user would), no image whose push succeeded is
//   lost, HAProxy marks the node down; restarted, it is marked up and serves;
// - /readyz answers as HAProxy's check needs it (200 running, 503 failed,
//   refused stopping);
// - each node reports its node_name in `proxyctl status --json`, and shared
//   state names the node (sync runs, on-demand counters); two nodes never
//   share a temporary file of an upload's note.
// The nodes share one database of a private PostgreSQL cluster (real
// PostgreSQL, as several machines would); what the nodes coordinate through it
// (caches, locks, one upload at a time) is in multi-node-coordination.test.ts.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SharedCounters } from '../plugins/container_gateway/backends/on-demand-records.ts';
import { OnDemandStats } from '../plugins/container_gateway/backends/on-demand-stats.ts';
import { openPostgres, parseDbConnection } from '../plugins/container_gateway/db/connection.ts';
import { UploadNotes } from '../plugins/container_gateway/store/upload-notes.ts';
import { STALE_MS, SyncRuns } from '../plugins/container_gateway/sync/runs.ts';
import { HAPROXY_EXAMPLE, RunningHaproxy } from './helpers/haproxy.ts';
import { buildImage, layoutManifest, pullImage, pushImage, sha256, type BuiltImage } from './helpers/images.ts';
import { makePki } from './helpers/pki.ts';
import { startPostgres } from './helpers/postgres.ts';
import { request } from './helpers/http.ts';
import { PROXYCTL, ROOT, run, startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { StandaloneGateway } from './helpers/standalone-gateway.ts';

t.setTimeout(300_000);
/** GET /readyz on a new connection: the status, or the connection error's code. */
function readyz(node: RunningProxyd): Promise<number | string> {
  return new Promise((resolve) => {
    const req = http.get(`${node.httpUrl}/readyz`, { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

const work = mkdtempSync(join(tmpdir(), 'gw-multi-node-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();

/** Where the nodes keep their shared metadata: one PostgreSQL database. */
const postgres = await startPostgres(t);
const database = { db_connection_string: await postgres.createDatabase('nodes') };
const shared = { ...database, storage_path: join(work, 'storage') };

/** A node: its own settings directory, the shared database and storage, its node_name. */
async function startNode(name: string): Promise<StandaloneGateway> {
  const dir = join(work, `node-${name}`);
  return StandaloneGateway.start(dir, { pki, settings: { ...shared, node_name: name } });
}

const nodes: Readonly<Record<'A' | 'B', StandaloneGateway>> = { A: await startNode('A'), B: await startNode('B') };
t.teardown(async () => {
  for (const n of Object.values(nodes)) await n.stop();
});
const portOf = (url: string) => new URL(url).port;
const haproxy = await RunningHaproxy.start({
  ca: pki.ca,
  nodes: (['A', 'B'] as const).map((n) => ({ name: n, address: `127.0.0.1:${portOf(nodes[n].proxyd.httpsUrl)}` })),
});
t.teardown(() => haproxy.stop());

const { A, B } = nodes;
await A.addUser('alice');
const ALICE = 'alice:alice-pw';

t.test("README's HAProxy configuration is the shipped example's, without its comments", async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = /^```haproxy\n([\s\S]*?)^```$/m.exec(readme)?.[1];
  const directives = readFileSync(HAPROXY_EXAMPLE, 'utf8')
    .split('\n')
    .filter((line) => !line.trim().startsWith('#'))
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
  t.equal(block?.trim(), directives);
});

t.test('each node reports its node_name in proxyctl status', async (t) => {
  for (const [name, node] of Object.entries(nodes)) {
    const r = await run([PROXYCTL, 'status', '--json', '--settings', node.proxyd.settingsFile]);
    t.equal(r.code, 0, r.stderr);
    const gw = (JSON.parse(r.stdout) as { plugins: Array<{ name: string; details?: { node_name?: string } }> }).plugins.find((p) => p.name === 'container_gateway');
    t.equal(gw?.details?.node_name, name, `node ${name} says it is ${name}`);
    const text = await run([PROXYCTL, 'status', '--settings', node.proxyd.settingsFile]);
    t.match(text.stdout, new RegExp(`^  node: ${name}$`, 'm'), 'and in the text under the plugin row');
  }
});

t.test('node_name: a bad value is refused naming file and key; the default is the hostname', async (t) => {
  for (const bad of ['node a', 'x'.repeat(65), '', 'nöde', 42]) {
    const p = await startProxyd({ fixtures: false, plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'refused.db'), storage_path: join(work, 'refused'), node_name: bad } } });
    const entry = (await request(`${p.httpUrl}/v2/features`)).json().container_gateway as { state: string; message?: string };
    const ready = await readyz(p);
    await p.stop();
    t.equal(ready, 503, `${JSON.stringify(bad)}: /readyz answers 503, so HAProxy sends no traffic there`);
    t.equal(entry.state, 'failed', `${JSON.stringify(bad)}: container_gateway failed`);
    t.match(entry.message, `${join(p.dir, 'settings.d', 'container_gateway.yml')}: setting 'node_name' must be this node's name`, `${JSON.stringify(bad)}: file, key and what is allowed`);
  }
  const p = await startProxyd({ fixtures: false, plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'default.db'), storage_path: join(work, 'default') } } });
  t.teardown(() => p.stop());
  const status = JSON.parse((await run([PROXYCTL, 'status', '--json', '--settings', p.settingsFile])).stdout) as { plugins: Array<{ name: string; details?: { node_name?: string } }> };
  t.equal(status.plugins.find((x) => x.name === 'container_gateway')?.details?.node_name, hostname(), 'unset: the hostname');
});

t.test('shared state names the node: the same pid on two nodes (as in containers) is two processes', async (t) => {
  const conn = parseDbConnection(database.db_connection_string, join(work, 'unused.db'));
  if (conn.kind !== 'postgres') throw new Error('the nodes share a PostgreSQL database');
  const db = await openPostgres(conn, { maxConnections: 2, poolTimeoutMs: 5000 });
  t.teardown(() => db.close());
  const running = new Set<number>();
  const onA = new SyncRuns(db, () => running, 'A');
  const onB = new SyncRuns(db, () => new Set(), 'B');
  const started = await onA.start(['org/app'], process.pid);
  if (!('run' in started)) throw new Error('a sync is running already');
  running.add(started.run.id);
  const seenByB = await onB.start(null, process.pid);
  t.same('running' in seenByB && seenByB.running.id, started.run.id, "B sees A's sync running: not taken for one of its own processes that is gone");
  await onB.reap(Date.now() + STALE_MS + 1);
  t.equal((await onB.get(started.run.id))?.state, 'interrupted', 'once A stops reporting, B takes it for dead');
  const gone = spawnSync('true').pid!;
  const ownDead = await onB.start(null, gone);
  if (!('run' in ownDead)) throw new Error('a sync is running still');
  await onB.reap();
  t.equal((await onB.get(ownDead.run.id))?.state, 'interrupted', "a run of B's own whose process is gone: at once");

  const statsA = Object.assign(new OnDemandStats(), { hits: 3 });
  const countersA = new SharedCounters(db, statsA, 'A');
  await countersA.start();
  await countersA.flush();
  const countersB = new SharedCounters(db, new OnDemandStats(), 'B');
  await countersB.start();
  t.equal((await countersA.totals()).hits, 3, "B starting (same pid) leaves A's counts alone");
  t.equal((await countersB.totals()).hits, 0, 'and counts its own');
  await countersA.close();
  await countersB.close();
});

t.test("two nodes writing one upload's note at once never share a temporary file", async (t) => {
  const dir = join(work, 'notes');
  mkdirSync(dir);
  const [onA, onB] = [new UploadNotes(dir), new UploadNotes(dir)];
  const uuid = '0b6f7c1e-2222-4c3d-8e9f-00112233aabb';
  const writes = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => (i % 2 ? onA : onB).write(uuid, { durable: i })));
  t.same(writes.filter((w) => w.status === 'rejected').map((w) => String((w as PromiseRejectedResult).reason)), [], 'every write succeeded');
  t.ok((await onB.read(uuid))?.durable !== undefined, 'the note is whole');
});

t.test('a token issued by one node is accepted by the other', async (t) => {
  const token = await A.tokenOf('alice', 'pull,push', 'alice/token-test');
  const image = await B.pushImage('alice/token-test', token, 'v1');
  for (const node of [A, B]) {
    const got = await node.call('GET', `/v2/alice/token-test/manifests/v1`, { token, headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    t.equal(got.status, 200);
    t.equal(sha256(got.body), image.digest, 'the manifest B stored, served by either');
  }
  const refused = await B.call('GET', '/v2/alice/token-test/tags/list', { token: randomBytes(32).toString('base64url') });
  t.equal(refused.status, 401, 'a token no node issued is refused');
});

t.test('an upload started on one node continues and completes on the other', async (t) => {
  const token = await A.tokenOf('alice', 'pull,push', 'alice/upload-test');
  // Hex text: the test client sends and reads bodies as UTF-8 strings.
  const first = randomBytes(128 * 1024).toString('hex');
  const second = randomBytes(50 * 1024).toString('hex');
  const last = randomBytes(500).toString('hex');
  const whole = first + second + last;
  const digest = sha256(whole);
  const started = await A.call('POST', '/v2/alice/upload-test/blobs/uploads/', { token });
  t.equal(started.status, 202);
  const location = started.headers.location!;
  const chunk = (node: StandaloneGateway, method: string, path: string, body: string, start: number) =>
    node.call(method, path, { token, body, headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${start}-${start + body.length - 1}` } });
  const onA = await chunk(A, 'PATCH', location, first, 0);
  t.equal(onA.status, 202, 'first chunk on A');
  t.equal(onA.headers.range, `0-${first.length - 1}`);
  const status = await B.call('GET', new URL(onA.headers.location!, B.base).pathname, { token });
  t.equal(status.status, 204, 'B knows the upload');
  t.equal(status.headers.range, `0-${first.length - 1}`, 'and how far it is');
  const onB = await chunk(B, 'PATCH', onA.headers.location!, second, first.length);
  t.equal(onB.status, 202, 'second chunk on B');
  t.equal(onB.headers.range, `0-${first.length + second.length - 1}`);
  const put = new URL(onB.headers.location!, B.base);
  put.searchParams.set('digest', digest);
  const done = await chunk(B, 'PUT', put.pathname + put.search, last, first.length + second.length);
  t.equal(done.status, 201, `completed on B: ${done.body}`);
  for (const [name, node] of Object.entries(nodes)) {
    const got = await node.call('GET', `/v2/alice/upload-test/blobs/${digest}`, { token });
    t.equal(got.status, 200, `node ${name} serves the blob`);
    t.equal(sha256(got.body), digest, `node ${name}: the same bytes`);
  }
});

/** Distinct images (a random layer each), built once, pushed by the tests below. */
const images: BuiltImage[] = [];
for (let i = 0; i < 6; i++) images.push(await buildImage(join(work, 'images'), { name: `img${i}`, files: { '/etc/motd': `image ${i}\n` }, randomBytes: 3 * 1024 * 1024 }));

/** Pull `repo:tag` from `address` into a fresh layout; the manifest digest got. */
async function pulledDigest(address: string, ref: string, args: string[] = []): Promise<string> {
  mkdirSync(join(work, 'pulled'), { recursive: true });
  const out = join(work, 'pulled', `${ref.replace(/[/:]/g, '_')}-${randomBytes(4).toString('hex')}`);
  await pullImage(`${address}/${ref}`, `oci:${out}:x`, { creds: ALICE, args });
  const got = layoutManifest(out, 'x').digest;
  rmSync(out, { recursive: true, force: true });
  return got;
}

const direct = (node: StandaloneGateway) => new URL(node.proxyd.httpsUrl).host;

t.test('a push through HAProxy is pullable from each node at once', async (t) => {
  const image = images[0]!;
  await pushImage(image.ref, `${haproxy.address}/alice/balanced:v1`, { creds: ALICE });
  const expected = layoutManifest(image.layout, image.tag).digest;
  const [fromA, fromB] = await Promise.all([pulledDigest(direct(A), 'alice/balanced:v1'), pulledDigest(direct(B), 'alice/balanced:v1')]);
  t.equal(fromA, expected, 'from A');
  t.equal(fromB, expected, 'from B');
});

t.test('failover: a node killed while pushes and pulls stream through HAProxy', async (t) => {
  const base = images[0]!;
  const baseDigest = layoutManifest(base.layout, base.tag).digest;
  t.equal(await readyz(A.proxyd), 200, 'A is ready');
  const pushed: Array<{ tag: string; digest: string; afterKill: boolean }> = [];
  const pushFailures: string[] = [];
  let pulls = 0;
  /** Pulls done when A was killed (none yet: Infinity). */
  let pullsAtKill = Infinity;
  let killed = false;
  let pushing = true;
  const retry = ['--retry-times', '5'];

  const pushLoop = (async () => {
    for (let i = 1; i < images.length; i++) {
      const image = images[i]!;
      const tag = `alice/failover:v${i}`;
      try {
        await pushImage(image.ref, `${haproxy.address}/${tag}`, { creds: ALICE, args: retry });
        pushed.push({ tag, digest: layoutManifest(image.layout, image.tag).digest, afterKill: killed });
      } catch (err) {
        pushFailures.push(`${tag}: ${(err as Error).message.split('\n').slice(-1)[0]}`);
      }
    }
    pushing = false;
  })();
  /** A pull in flight when A died that failed, then succeeded when run again (the user's retry). */
  const rerunAtKill: string[] = [];
  const pullLoop = (async () => {
    const failures: string[] = [];
    // Until the pushes are done and at least 3 pulls ran after the kill.
    while (pushing || pulls < pullsAtKill + 3) {
      const startedAlive = !killed;
      try {
        let got: string;
        try {
          got = await pulledDigest(haproxy.address, 'alice/balanced:v1', retry);
        } catch (err) {
          // A connection cut by the kill fails the pull when skopeo does not retry that step (its
          // /v2/ ping is never retried): run again, as a user would; any other pull must not fail.
          if (!(startedAlive && killed)) throw err;
          rerunAtKill.push(`pull ${pulls}: ${(err as Error).message.split('\n').slice(-1)[0]}`);
          got = await pulledDigest(haproxy.address, 'alice/balanced:v1', retry);
        }
        if (got !== baseDigest) failures.push(`pull ${pulls}: ${got}, not ${baseDigest}`);
      } catch (err) {
        failures.push(`pull ${pulls}: ${(err as Error).message}`);
      }
      pulls++;
    }
    return failures;
  })();

  // Kill A once both loops have had a request go through (or the pushes ended:
  // the assertions below say why), at a moment HAProxy has client connections open to it.
  const deadline = Date.now() + 60_000;
  while ((pulls < 1 || (pushed.length < 1 && pushing)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  let openOnA = 0;
  // (The pull loop runs until after the kill, so there is traffic to catch.)
  while (openOnA === 0 && Date.now() < deadline) {
    openOnA = (await haproxy.servers()).A?.sessions ?? 0;
    if (openOnA === 0) await new Promise((r) => setTimeout(r, 10));
  }
  A.proxyd.proc.kill('SIGKILL');
  await A.proxyd.exited;
  killed = true;
  pullsAtKill = pulls;
  await haproxy.waitFor({ A: 'DOWN', B: 'UP' }, 15_000);
  t.pass('HAProxy marks the killed node down');
  t.ok(openOnA > 0, `A was killed with ${openOnA} client connection(s) open through HAProxy`);

  const [pullFailures] = await Promise.all([pullLoop, pushLoop]);
  t.same(pullFailures, [], `every pull through HAProxy succeeded (${pulls} pulls, ${pulls - pullsAtKill} after the kill)`);
  t.comment(`the pull in flight at the kill ${rerunAtKill.length > 0 ? `failed and was run again: ${JSON.stringify(rerunAtKill)}` : 'succeeded'}`);
  t.ok(pulls >= pullsAtKill + 3, 'pulls went on after the kill');
  t.comment(`pushes: ${pushed.length} succeeded, ${pushFailures.length} failed ${JSON.stringify(pushFailures)}`);
  t.ok(pushed.length >= images.length - 2, 'at most the push in flight at the kill failed');
  t.ok(pushed.some((p) => p.afterKill), 'pushes through HAProxy succeeded after the kill');
  for (const p of pushed) {
    t.equal(await pulledDigest(direct(B), p.tag), p.digest, `${p.tag}, pushed with success, is whole on B`);
  }

  // Restarted on the same ports: HAProxy finds it up again, and it serves.
  await A.restart();
  await haproxy.waitFor({ A: 'UP', B: 'UP' }, 15_000);
  t.pass('HAProxy marks the restarted node up');
  t.equal(await readyz(A.proxyd), 200, 'the restarted node is ready');
  for (const p of pushed) {
    t.equal(await pulledDigest(direct(A), p.tag), p.digest, `${p.tag} served by the restarted A`);
  }
});

t.test('/readyz: 200 while running; a stopping node refuses the check and HAProxy marks it down', async (t) => {
  const a = A;
  t.equal(await readyz(a.proxyd), 200);
  // An upload left open keeps A draining (stopping) for a while after SIGTERM.
  const token = await a.tokenOf('alice', 'pull,push', 'alice/drain');
  const started = await a.call('POST', '/v2/alice/drain/blobs/uploads/', { token });
  t.equal(started.status, 202);
  const slow = http.request(new URL(started.headers.location!, a.base), { method: 'PATCH', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' }, agent: false });
  slow.on('error', () => {});
  slow.write(randomBytes(1024));
  await new Promise((r) => setTimeout(r, 200));
  const stopping = a.proxyd.stop('SIGTERM');
  let answer: number | string = 200;
  for (let i = 0; i < 100 && answer === 200; i++) {
    await new Promise((r) => setTimeout(r, 50));
    answer = await readyz(a.proxyd);
  }
  t.equal(answer, 'ECONNREFUSED', 'the check of a stopping node is refused');
  t.equal(a.proxyd.proc.exitCode, null, 'while it still drains the open upload');
  await haproxy.waitFor({ A: 'DOWN', B: 'UP' }, 15_000);
  t.pass('HAProxy marks the stopping node down');
  slow.end(randomBytes(1024));
  await stopping;
});
