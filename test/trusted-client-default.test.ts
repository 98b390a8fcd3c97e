// Trusted-client routes are closed by default (trusted_hosts unset): over plain
// HTTP only a loopback peer may call them, over HTTPS only a client with a
// verified certificate. The attacks of issue 9 are made from a non-loopback
// peer (a network namespace of the test, helpers/netns.ts) against the real
// daemon: each is refused with 403
// and leaves the database and the store exactly as they were; the same calls
// from 127.0.0.1, ::1 or with a verified certificate work.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { buildImage, pushImage } from './helpers/images.ts';
import { startKatelloDouble } from './helpers/katello-double.ts';
import { createPeerNamespace } from './helpers/netns.ts';
import { makePki } from './helpers/pki.ts';
import { startProxyd, type RunningProxyd, lineLogged } from './helpers/proxyd.ts';
import { databaseRows, storeFiles } from './helpers/state.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

/** The daemon also listens on HOST; requests made through `peer` come from PEER, which is not loopback. */
const peer = createPeerNamespace();
t.teardown(() => peer.destroy());
const HOST = peer.hostAddress;
const PEER = peer.peerAddress;

const work = mkdtempSync(join(tmpdir(), 'proxyd-trusted-default-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();
t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));
const admin = pki.client('admin');
const rogue = pki.rogue('admin');
const tls = { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca };

/** A daemon on 127.0.0.1, ::1 and HOST, HTTP and HTTPS, without trusted_hosts. */
async function daemon(name: string, settings: Record<string, unknown>, gateway: Record<string, unknown>): Promise<RunningProxyd & { db: string; storage: string }> {
  const db = join(work, `${name}.db`);
  const storage = join(work, `${name}-storage`);
  const p = await startProxyd({
    https: true,
    fixtures: false,
    settings: { ...tls, bind_host: ['127.0.0.1', '::1', HOST], log_level: 'INFO', ...settings },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: db, storage_path: storage, ...gateway }, logs: { enabled: true } },
  });
  t.teardown(() => p.stop());
  return Object.assign(p, { db, storage });
}

const from = (p: RunningProxyd, host: string) => p.httpUrl.replace('127.0.0.1', host.includes(':') ? `[${host}]` : host);
const JSON_BODY = { 'Content-Type': 'application/json' };

/** A refusal: 403, JSON {error} naming the peer and the loopback rule. */
function refused(tt: Tap, r: Reply, what: string): void {
  tt.equal(r.status, 403, `${what}: 403 (${r.status} ${r.body.slice(0, 200)})`);
  tt.match(r.headers['content-type'], /application\/json/, `${what}: JSON`);
  tt.match(r.json(), { error: new RegExp(`^Untrusted client ${PEER.replace(/\./g, '\\.')} attempted to access .*loopback only`) }, `${what}: says who and why`);
}

// --- standalone mode: users and repositories of this proxy ------------------

const standalone = await daemon('standalone', {}, {});
const LOCAL = standalone.httpUrl;
const created = await request(`${LOCAL}/container_gateway/admin/users`, { method: 'POST', headers: JSON_BODY, body: JSON.stringify({ name: 'alice', password: 'alice-pw' }) });
if (created.status !== 201) throw new Error(`seeding alice from 127.0.0.1: ${created.status} ${created.body}`);
const image = await buildImage(join(work, 'images'), { name: 'private', files: { '/etc/secret.txt': 'alice only\n' } });
await pushImage(image.ref, `${new URL(LOCAL).host}/alice/app:v1`, { creds: 'alice:alice-pw' });

async function snapshot(p: { db: string; storage: string }) {
  return { rows: await databaseRows(p.db), files: storeFiles(p.storage) };
}

async function anonymousManifest(base: string, send: typeof request = request): Promise<Reply> {
  return send(`${base}/v2/alice/app/manifests/v1`, { headers: { Authorization: 'Bearer unauthenticated', Accept: 'application/vnd.oci.image.manifest.v1+json' } });
}

t.test('plain HTTP from a non-loopback peer: every attack on the admin API is refused and changes nothing', async (t) => {
  const before = await snapshot(standalone);
  t.equal((await anonymousManifest(LOCAL)).status, 401, 'baseline: alice/app is private (anonymous clients are asked to log in)');
  const ext = from(standalone, HOST);
  const attacks: Array<[string, string, unknown?]> = [
    ['POST', '/container_gateway/admin/users', { name: 'mallory', password: 'mallory-pw' }],
    ['PUT', '/container_gateway/admin/repositories/alice/app/visibility', { public: true }],
    ['DELETE', '/container_gateway/admin/users/alice'],
    ['GET', '/container_gateway/admin/users'],
    ['GET', '/container_gateway/admin/repositories'],
    ['POST', '/container_gateway/admin/gc'],
    ['GET', '/container_gateway/admin/verify'],
    ['POST', '/container_gateway/sync', { repositories: ['alice/app'] }],
    ['GET', '/container_gateway/sync'],
    ['GET', '/container_gateway/sync/1'],
    ['GET', '/v2/features'],
    ['GET', '/logs/'],
  ];
  for (const [method, path, body] of attacks) {
    const r = await peer.request(`${ext}${path}`, { method, ...(body ? { headers: JSON_BODY, body: JSON.stringify(body) } : {}) });
    refused(t, r, `${method} ${path} from ${PEER}`);
    // Headers claiming another peer or identity change nothing.
    const spoofed = await peer.request(`${ext}${path}`, {
      method,
      headers: { ...JSON_BODY, 'X-Forwarded-For': '127.0.0.1', 'X-Real-IP': '127.0.0.1', Forwarded: 'for=127.0.0.1', REMOTE_USER: 'admin', Host: `127.0.0.1:${new URL(ext).port}` },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    refused(t, spoofed, `${method} ${path} from ${PEER} claiming 127.0.0.1`);
  }
  t.same(await snapshot(standalone), before, 'the database and the store are unchanged');
  const login = await request(`${LOCAL}/v2/token?service=x&scope=repository:alice/app:pull`, { headers: { Authorization: `Basic ${Buffer.from('mallory:mallory-pw').toString('base64')}` } });
  t.equal(login.status, 401, 'mallory does not exist: her login is refused');
  t.equal((await anonymousManifest(ext, peer.request)).status, 401, 'alice/app is still private');
  const users = await request(`${LOCAL}/container_gateway/admin/users`);
  t.same(users.json(), { users: ['alice'] }, 'loopback sees alice, and only alice');
});

t.test('plain HTTP from 127.0.0.1 and ::1: the admin API works', async (t) => {
  for (const host of ['127.0.0.1', '::1']) {
    const base = from(standalone, host);
    const users = await request(`${base}/container_gateway/admin/users`);
    t.equal(users.status, 200, `GET admin/users from ${host}: ${users.body}`);
    t.equal((await request(`${base}/v2/features`)).status, 200, `GET /v2/features from ${host}`);
    t.equal((await request(`${base}/logs/`)).status, 200, `GET /logs/ from ${host}`);
  }
  const pub = await request(`${from(standalone, '::1')}/container_gateway/admin/repositories/alice/app/visibility`, { method: 'PUT', headers: JSON_BODY, body: '{"public":true}' });
  t.same([pub.status, pub.json()], [200, { name: 'alice/app', public: true }], 'the operator on ::1 makes alice/app public');
  t.equal((await anonymousManifest(LOCAL)).status, 200, 'anonymous clients read it now');
  const back = await request(`${LOCAL}/container_gateway/admin/repositories/alice/app/visibility`, { method: 'PUT', headers: JSON_BODY, body: '{"public":false}' });
  t.equal(back.status, 200, 'and private again');
  t.equal((await anonymousManifest(LOCAL)).status, 401);
});

t.test("a dual-stack listener (bind_host '::'): IPv4-mapped loopback is loopback, IPv4-mapped others are not", async (t) => {
  const p = await startProxyd({ fixtures: false, settings: { bind_host: ['::'], log_level: 'INFO' } });
  t.teardown(() => p.stop());
  const port = new URL(p.httpUrl).port;
  const local = await request(`http://127.0.0.1:${port}/v2/features`);
  t.equal(local.status, 200, `from 127.0.0.1 (peer ::ffff:127.0.0.1): ${local.body.slice(0, 100)}`);
  refused(t, await peer.request(`http://${HOST}:${port}/v2/features`), `from ${PEER} (peer ::ffff:${PEER})`);
  t.ok(await lineLogged(p, /"remote_ip":"127\.0\.0\.1"/), 'the log shows the peer without its ::ffff: prefix');
});

t.test('HTTPS: only a verified client certificate, even from loopback', async (t) => {
  const before = await snapshot(standalone);
  const post = (client?: typeof admin) => request(`${standalone.httpsUrl}/container_gateway/admin/users`, {
    method: 'POST', ca: pki.ca, headers: JSON_BODY, body: JSON.stringify({ name: 'mallory', password: 'mallory-pw' }), ...(client ? { client } : {}),
  });
  const none = await post();
  t.equal(none.status, 403, 'no certificate: 403');
  t.match(none.json(), { error: 'No client SSL certificate supplied' });
  const self = await post(rogue);
  t.equal(self.status, 403, 'a self-signed certificate with CN=admin: 403');
  t.match(self.json(), { error: /not verified/ });
  t.same(await snapshot(standalone), before, 'nothing changed');
  const list = await request(`${standalone.httpsUrl}/container_gateway/admin/users`, { ca: pki.ca, client: admin });
  t.same([list.status, list.json()], [200, { users: ['alice'] }], 'a verified certificate lists the users');
});

// --- smart-proxy mode: Katello's management routes --------------------------

t.test("smart-proxy mode: Katello's management routes from a non-loopback peer are refused and change nothing", async (t) => {
  const katello = await startKatelloDouble();
  t.teardown(() => katello.stop());
  const p = await daemon('smart', { foreman_url: katello.url }, {});
  const PRIV = 'org/prod/private';
  const put = (base: string, route: string, body: unknown, send: typeof request = request) => send(`${base}/container_gateway/${route}`, { method: 'PUT', headers: JSON_BODY, body: JSON.stringify(body) });
  t.equal((await put(p.httpUrl, 'repository_list', { repositories: [{ repository: PRIV, auth_required: true }] })).status, 200, 'Katello (on loopback) lists a private repository');
  t.equal((await put(p.httpUrl, 'user_repository_mapping', { users: [{ alice: [{ repository: PRIV, auth_required: true }] }] })).status, 200, 'and maps alice to it');
  const before = await snapshot(p);
  const ext = from(p, HOST);
  const grant = { users: [{ mallory: [{ repository: PRIV, auth_required: true }] }] };
  refused(t, await put(ext, 'user_repository_mapping', grant, peer.request), 'PUT /container_gateway/user_repository_mapping (mallory grants herself the private repository)');
  refused(t, await put(ext, 'repository_list', { repositories: [{ repository: PRIV, auth_required: false }] }, peer.request), 'PUT /container_gateway/repository_list (make it public)');
  refused(t, await put(ext, 'update_hosts', { hosts: [] }, peer.request), 'PUT /container_gateway/update_hosts');
  refused(t, await put(ext, 'host_repository_mapping', { hosts: [] }, peer.request), 'PUT /container_gateway/host_repository_mapping');
  refused(t, await put(ext, 'update_host_repositories', { hosts: [{ 'a-host': [{ repository: PRIV, auth_required: true }] }] }, peer.request), 'PUT /container_gateway/update_host_repositories');
  refused(t, await peer.request(`${ext}/container_gateway/users`), 'GET /container_gateway/users');
  t.same(await snapshot(p), before, 'the database and the store are unchanged');
  const users = await request(`${p.httpUrl}/container_gateway/users`);
  t.same(users.json(), { users: ['alice'] }, 'no mallory');
  const anon = await peer.request(`${ext}/v2/_catalog`, { headers: { Authorization: 'Bearer unauthenticated' } });
  t.same(anon.json(), { repositories: [] }, 'the private repository is not public');
});
