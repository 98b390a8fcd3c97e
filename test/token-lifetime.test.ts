// Token lifetimes are enforced (smart-proxy mode, the real daemon over HTTP):
// a stored token past Katello's expiry, and a Katello token past
// token_max_lifetime, are refused with 401 and a Bearer challenge on every
// route the proxy decides (ping, manifests, blobs, tags, catalog; pushes go
// to the main server, which judges its own tokens); a user revoked in Katello
// loses access here within token_max_lifetime. docker-registry is the content
// backend, a Katello double the main server. The tests wait until the stored
// expiry (read from the daemon's database) has passed, then ask. Standalone
// mode, where this proxy is also the push authority, is tested at the end:
// its tokens live at least 60 s, so the stored expiry is moved into the past.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, layoutBlobPath, layoutManifest, pushImage } from './helpers/images.ts';
import { makePki } from './helpers/pki.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { queryGateway } from './helpers/test-database.ts';
import { startRegistry } from './helpers/registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const work = mkdtempSync(join(tmpdir(), 'gw-token-lifetime-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const registry = await startRegistry();
t.teardown(() => registry.stop());
const priv = await buildImage(work, { name: 'priv', files: { '/etc/secret.txt': 'private\n' }, layers: 1 });
await pushImage(priv.ref, `${registry.host}/org/prod/priv:v1`);
const manifest = layoutManifest(priv.layout);
const layer = manifest.manifest.layers[0]!.digest;

const USERS = ['capped', 'short', 'revoked'] as const;
const katello = new KatelloDouble({
  users: Object.fromEntries(USERS.map((u) => [u, { password: `${u}-katello-pw`, repositories: ['org/prod/priv'] }])),
});
await katello.start();
t.teardown(() => katello.stop());

async function daemon(tt: Tap, name: string, tokenMaxLifetime: number): Promise<RunningProxyd & { db: string }> {
  const db = join(work, `${name}.db`);
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: katello.url, log_level: 'INFO' },
    plugins: { container_gateway: { enabled: true, pulp_endpoint: registry.url, pulp_registry_path: '/v2/', sqlite_db_path: db, token_max_lifetime: tokenMaxLifetime } },
  });
  p.secrets.push(...USERS.map((u) => `${u}-katello-pw`));
  tt.teardown(() => p.stop());
  const listed = await request(`${p.httpUrl}/container_gateway/repository_list/`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ repositories: [{ repository: 'org/prod/priv', auth_required: true }] }),
  });
  if (listed.status !== 200) throw new Error(`repository_list: ${listed.status} ${listed.body}`);
  return Object.assign(p, { db });
}

async function login(p: RunningProxyd, user: string): Promise<string> {
  const auth = Buffer.from(`${user}:${user}-katello-pw`).toString('base64');
  const res = await request(`${p.httpUrl}/v2/token?service=x&scope=${encodeURIComponent('repository:org/prod/priv:pull,push')}`, { headers: { Authorization: `Basic ${auth}` } });
  if (res.status !== 200) throw new Error(`login ${user}: ${res.status} ${res.body}`);
  const token = res.json().token as string;
  p.secrets.push(token);
  return token;
}

/** The expiry (epoch ms) the daemon stored for the user's newest token. */
async function storedExpiry(db: string, user: string): Promise<number> {
  return (await queryGateway<{ at: number }>(db, 'SELECT max(t.expire_at) AS at FROM authentication_tokens t JOIN users u ON u.id = t.user_id WHERE u.name = ?', [user]))[0]!.at;
}

const ROUTES: Array<{ method: string; path: string; body?: string; headers?: Record<string, string> }> = [
  { method: 'GET', path: '/v2/' },
  { method: 'GET', path: '/v2/org/prod/priv/manifests/v1' },
  { method: 'HEAD', path: '/v2/org/prod/priv/manifests/v1' },
  { method: 'GET', path: `/v2/org/prod/priv/blobs/${layer}` },
  { method: 'HEAD', path: `/v2/org/prod/priv/blobs/${layer}` },
  { method: 'GET', path: '/v2/org/prod/priv/tags/list' },
  { method: 'GET', path: '/v2/_catalog' },
];

async function tagsInBackend(): Promise<string[]> {
  const res = await request(`${registry.url}/v2/org/prod/priv/tags/list`);
  return (res.json().tags as string[]).sort();
}

/** Every route refuses `token` with 401 UNAUTHORIZED and a Bearer challenge; nothing reaches the backend's tags. */
async function assertRefusedEverywhere(tt: Tap, p: RunningProxyd, token: string, what: string, routes = ROUTES): Promise<void> {
  const tags = await tagsInBackend();
  for (const r of routes) {
    const res = await request(`${p.httpUrl}${r.path}`, { method: r.method, headers: { Authorization: `Bearer ${token}`, ...r.headers }, ...(r.body ? { body: r.body } : {}) });
    tt.equal(res.status, 401, `${what}: ${r.method} ${r.path}: 401`);
    tt.match(res.headers['www-authenticate'], /^Bearer realm="[^"]+\/v2\/token",service="[^"]+"/, `${what}: ${r.method} ${r.path}: a Bearer challenge`);
    if (r.method !== 'HEAD') tt.equal(res.json().errors?.[0]?.code, 'UNAUTHORIZED', `${what}: ${r.method} ${r.path}: UNAUTHORIZED`);
  }
  tt.same(await tagsInBackend(), tags, `${what}: the backend's tags are unchanged`);
}

async function assertReads(tt: Tap, p: RunningProxyd, token: string, what: string): Promise<void> {
  const res = await request(`${p.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: { Authorization: `Bearer ${token}`, Accept: manifest.mediaType } });
  tt.equal(res.status, 200, `${what}: the token reads the private manifest`);
}

async function waitPast(ms: number): Promise<void> {
  // Never longer than the lifetimes under test: a wrong expiry fails the test, it does not stall it.
  const wait = Math.min(ms - Date.now(), 5000) + 50;
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

t.test('a Katello token past token_max_lifetime is refused on every route', async (t) => {
  const p = await daemon(t, 'capped', 2);
  katello.tokenExpiresIn = 3600;
  const loggedIn = Date.now();
  const token = await login(p, 'capped');
  await assertReads(t, p, token, 'fresh');
  const expiry = await storedExpiry(p.db, 'capped');
  t.ok(expiry <= Date.now() + 2000 && expiry >= loggedIn, 'stored expiry: within token_max_lifetime (2 s), not Katello\'s 3600 s');
  await waitPast(expiry);
  await assertRefusedEverywhere(t, p, token, 'past token_max_lifetime');
});

t.test("a stored token past Katello's own (shorter) expiry is refused on every route", async (t) => {
  const p = await daemon(t, 'short', 900);
  katello.tokenExpiresIn = 2;
  const token = await login(p, 'short');
  katello.tokenExpiresIn = 3600;
  await assertReads(t, p, token, 'fresh');
  const expiry = await storedExpiry(p.db, 'short');
  t.ok(expiry <= Date.now() + 2000, "stored expiry: Katello's expires_in (2 s), not token_max_lifetime (900 s)");
  await waitPast(expiry);
  await assertRefusedEverywhere(t, p, token, "past Katello's expiry");
});

t.test('a user revoked in Katello loses access here within token_max_lifetime', async (t) => {
  const p = await daemon(t, 'revoked', 3);
  const token = await login(p, 'revoked');
  await assertReads(t, p, token, 'before the revocation');
  katello.revoke('revoked');
  const expiry = await storedExpiry(p.db, 'revoked');
  t.ok(expiry <= Date.now() + 3000, 'the stored token expires within token_max_lifetime of now');
  await waitPast(expiry);
  await assertRefusedEverywhere(t, p, token, 'revoked, past token_max_lifetime');
  const auth = Buffer.from('revoked:revoked-katello-pw').toString('base64');
  const again = await request(`${p.httpUrl}/v2/token?service=x&scope=${encodeURIComponent('repository:org/prod/priv:pull')}`, { headers: { Authorization: `Basic ${auth}` } });
  t.equal(again.status, 401, 'a new login is refused (Katello says so)');
  t.match(again.headers['www-authenticate'] ?? '', /^Bearer realm=/i, 'with a challenge');
});

t.test('standalone: a stored token past its expiry is refused on every route, pushes included; nothing changes', async (t) => {
  const pki = makePki();
  t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));
  const db = join(work, 'standalone.db');
  const p = await startProxyd({
    fixtures: false,
    https: true,
    settings: { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca, trusted_hosts: ['foreman.example.com'], log_level: 'INFO' },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: db, storage_path: join(work, 'standalone-storage') } },
  });
  p.secrets.push('alice-standalone-pw');
  t.teardown(() => p.stop());
  const added = await request(`${p.httpsUrl}/container_gateway/admin/users`, {
    method: 'POST',
    ca: pki.ca,
    client: pki.client('foreman.example.com'),
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'alice', password: 'alice-standalone-pw' }),
  });
  t.equal(added.status, 201, 'user alice');
  const tokenOf = async () => {
    const res = await request(`${p.httpUrl}/v2/token?service=x&scope=${encodeURIComponent('repository:alice/app:pull,push,delete')}&scope=registry:catalog:*`, {
      headers: { Authorization: `Basic ${Buffer.from('alice:alice-standalone-pw').toString('base64')}` },
    });
    t.equal(res.status, 200, 'alice logs in');
    const token = res.json().token as string;
    p.secrets.push(token);
    return token;
  };
  const token = await tokenOf();
  const bearer = { Authorization: `Bearer ${token}` };
  for (const digest of [manifest.manifest.config.digest, layer]) {
    const up = await fetch(`${p.httpUrl}/v2/alice/app/blobs/uploads/?digest=${digest}`, {
      method: 'POST',
      headers: { ...bearer, 'Content-Type': 'application/octet-stream' },
      body: new Uint8Array(readFileSync(layoutBlobPath(priv.layout, digest))),
    });
    t.equal(up.status, 201, `blob ${digest.slice(0, 19)} pushed`);
  }
  const put = await fetch(`${p.httpUrl}/v2/alice/app/manifests/v1`, { method: 'PUT', headers: { ...bearer, 'Content-Type': manifest.mediaType }, body: new Uint8Array(manifest.raw) });
  t.equal(put.status, 201, 'manifest v1 pushed');
  const opened = await request(`${p.httpUrl}/v2/alice/app/blobs/uploads/`, { method: 'POST', headers: bearer });
  t.equal(opened.status, 202, 'an upload opened before the expiry');
  const upload = new URL(opened.headers.location!, p.httpUrl).pathname;

  // The token's stored expiry moves into the past, as time would move it.
  await queryGateway(db, 'UPDATE authentication_tokens SET expire_at = ? WHERE token_checksum = ?', [Date.now() - 1, createHash('sha256').update(token).digest('hex')]);

  const body = manifest.raw.toString('utf8');
  const routes = [
    { method: 'GET', path: '/v2/' },
    { method: 'GET', path: '/v2/alice/app/manifests/v1' },
    { method: 'HEAD', path: '/v2/alice/app/manifests/v1' },
    { method: 'GET', path: `/v2/alice/app/blobs/${layer}` },
    { method: 'HEAD', path: `/v2/alice/app/blobs/${layer}` },
    { method: 'GET', path: '/v2/alice/app/tags/list' },
    { method: 'GET', path: '/v2/_catalog' },
    { method: 'POST', path: '/v2/alice/app/blobs/uploads/' },
    { method: 'POST', path: `/v2/alice/app/blobs/uploads/?digest=${layer}`, body: 'x' },
    { method: 'PATCH', path: upload, body: 'some bytes', headers: { 'Content-Type': 'application/octet-stream' } },
    { method: 'PUT', path: `${upload}?digest=${layer}` },
    { method: 'PUT', path: '/v2/alice/app/manifests/expired-push', body, headers: { 'Content-Type': manifest.mediaType } },
    { method: 'DELETE', path: `/v2/alice/app/manifests/${manifest.digest}` },
    { method: 'DELETE', path: `/v2/alice/app/blobs/${layer}` },
  ];
  for (const r of routes) {
    const res = await request(`${p.httpUrl}${r.path}`, { method: r.method, headers: { ...bearer, ...r.headers }, ...(r.body ? { body: r.body } : {}) });
    t.equal(res.status, 401, `${r.method} ${r.path}: 401`);
    t.match(res.headers['www-authenticate'], /^Bearer realm="[^"]+\/v2\/token",service="[^"]+"/, `${r.method} ${r.path}: a Bearer challenge`);
    if (r.method !== 'HEAD') t.equal(res.json().errors?.[0]?.code, 'UNAUTHORIZED', `${r.method} ${r.path}: UNAUTHORIZED`);
  }

  const fresh = { Authorization: `Bearer ${await tokenOf()}` };
  const tags = await request(`${p.httpUrl}/v2/alice/app/tags/list`, { headers: fresh });
  t.same(tags.json().tags, ['v1'], 'after a new login: still only tag v1');
  const still = await request(`${p.httpUrl}/v2/alice/app/manifests/${manifest.digest}`, { headers: { ...fresh, Accept: manifest.mediaType } });
  t.equal(still.status, 200, 'the manifest is still there');
  const blob = await fetch(`${p.httpUrl}/v2/alice/app/blobs/${layer}`, { headers: fresh });
  t.ok(Buffer.from(await blob.arrayBuffer()).equals(readFileSync(layoutBlobPath(priv.layout, layer))), 'the layer is intact');
  const status = await request(`${p.httpUrl}${upload}`, { headers: fresh });
  t.equal(status.headers.range ?? '0-0', '0-0', 'the open upload received nothing');
});
