// The main server (Katello) unreachable, refusing, resetting, hanging up
// after a status line, silent or answering 503: logins and pulls go on
// (anonymous logins get the `unauthenticated` token here, a user whose login
// Katello accepted within login_cache_ttl gets a local token reading what
// this proxy's lists allow), everything else gets 503 UNAVAILABLE with
// Retry-After, and no log line holds a credential. docker-registry is the
// content backend, skopeo the client, a Katello double the main server.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { buildImage, layoutManifest, pullImage, pushImage, skopeo } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { startProxyd, type RunningProxyd, lineLogged } from './helpers/proxyd.ts';
import { queryGateway } from './helpers/test-database.ts';
import { startRegistry } from './helpers/registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const work = mkdtempSync(join(tmpdir(), 'gw-login-fallback-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const registry = await startRegistry();
t.teardown(() => registry.stop());
const app = await buildImage(work, { name: 'app', files: { '/etc/app.txt': 'public app\n' }, layers: 2 });
const priv = await buildImage(work, { name: 'priv', files: { '/etc/secret.txt': 'private\n' }, layers: 1 });
await pushImage(app.ref, `${registry.host}/org/prod/app:v1`);
await pushImage(priv.ref, `${registry.host}/org/prod/priv:v1`);

const PASSWORDS = { admin: 'admin-katello-pw', bob: 'bob-katello-pw' };
const katello = new KatelloDouble({
  users: { admin: { password: PASSWORDS.admin, repositories: ['org/prod/priv'] }, bob: { password: PASSWORDS.bob, repositories: ['org/prod/priv'] } },
  publicRepositories: ['org/prod/app'],
});
const foremanUrl = await katello.start();
const katelloPort = katello.port;
t.teardown(() => katello.stop());

const db = join(work, 'gw.db');
const proxyd = await startProxyd({
  fixtures: false,
  settings: { foreman_url: foremanUrl, log_level: 'DEBUG' },
  plugins: {
    container_gateway: {
      enabled: true,
      pulp_endpoint: registry.url,
      pulp_registry_path: '/v2/',
      sqlite_db_path: db,
      upstream_response_timeout: 1.5,
      login_cache_ttl: 600,
    },
  },
});
proxyd.secrets.push(...Object.values(PASSWORDS), 'wrong-password');
t.teardown(() => proxyd.stop());
const gw = new URL(proxyd.httpUrl).host;

const listed = await request(`${proxyd.httpUrl}/container_gateway/repository_list/`, {
  method: 'PUT',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ repositories: [{ repository: 'org/prod/app', auth_required: false }, { repository: 'org/prod/priv', auth_required: true }] }),
});
if (listed.status !== 200) throw new Error(`repository_list: ${listed.status} ${listed.body}`);

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

function login(authorization: string | undefined, scope: string): Promise<Reply> {
  return request(`${proxyd.httpUrl}/v2/token?service=${gw}&scope=${encodeURIComponent(scope)}`, authorization ? { headers: { Authorization: authorization } } : {});
}

function assertUnavailable(tt: Tap, res: Reply, what: string): void {
  tt.equal(res.status, 503, `${what}: 503`);
  tt.equal(res.json().errors?.[0]?.code, 'UNAVAILABLE', `${what}: UNAVAILABLE`);
  tt.ok(Number(res.headers['retry-after']) > 0, `${what}: Retry-After ${res.headers['retry-after']}`);
}

function tableRows(sql: string): Promise<unknown[]> {
  return queryGateway(db, sql);
}

async function pullPrivate(tt: Tap, creds: string, what: string): Promise<void> {
  const out = join(work, `out-${Math.random().toString(36).slice(2)}`);
  await pullImage(`${gw}/org/prod/priv:v1`, `oci:${out}:copy`, { creds });
  tt.equal(layoutManifest(out, 'copy').digest, layoutManifest(priv.layout).digest, `${what}: skopeo copied the private image, same manifest digest`);
}

/** While Katello misbehaves as `setup` makes it, what clients see. */
async function whileDown(tt: Tap, what: string): Promise<void> {
  const admin = await login(basic('admin', PASSWORDS.admin), 'repository:org/prod/priv:pull');
  tt.equal(admin.status, 200, `${what}: admin, verified recently, gets a token`);
  const token = String(admin.json().token);
  proxyd.secrets.push(token);
  tt.not(token, 'unauthenticated');
  const manifest = await request(`${proxyd.httpUrl}/v2/org/prod/priv/manifests/v1`, {
    headers: { Authorization: `Bearer ${token}`, Accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  tt.equal(manifest.status, 200, `${what}: the local token reads what the lists allow admin`);

  const tokensBefore = (await tableRows('SELECT token_checksum FROM authentication_tokens')).length;
  assertUnavailable(tt, await login(basic('admin', 'wrong-password'), 'repository:org/prod/priv:pull'), `${what}: admin with another password`);
  assertUnavailable(tt, await login(basic('bob', PASSWORDS.bob), 'repository:org/prod/priv:pull'), `${what}: bob, never verified here`);
  assertUnavailable(tt, await login(basic('bob', PASSWORDS.bob), 'repository:org/prod/new:pull,push'), `${what}: a push login of bob`);
  const denied = await skopeo(['inspect', '--tls-verify=false', '--creds', `bob:${PASSWORDS.bob}`, `docker://${gw}/org/prod/priv:v1`]);
  tt.not(denied.code, 0, `${what}: skopeo as bob fails`);
  tt.match(denied.stderr, /503|unavailable/i, `${what}: skopeo says the service is unavailable`);
  tt.equal((await tableRows('SELECT token_checksum FROM authentication_tokens')).length, tokensBefore, `${what}: the refused logins stored no token`);
  await pullPrivate(tt, `admin:${PASSWORDS.admin}`, what);

  const anonymous = await login(undefined, 'repository:org/prod/app:pull');
  tt.equal(anonymous.status, 200, `${what}: an anonymous login is answered here`);
  tt.equal(anonymous.json().token, 'unauthenticated', `${what}: with the unauthenticated token`);
  const out = join(work, `anon-${Math.random().toString(36).slice(2)}`);
  await pullImage(`${gw}/org/prod/app:v1`, `oci:${out}:copy`);
  tt.equal(layoutManifest(out, 'copy').digest, layoutManifest(app.layout).digest, `${what}: a fresh anonymous client pulls the public image`);

  const search = await request(`${proxyd.httpUrl}/v1/search?q=prod`, { headers: { Authorization: basic('admin', PASSWORDS.admin) } });
  tt.equal(search.status, 200, `${what}: /v1/search as admin`);
  tt.same(search.json().results.map((r: { name: string }) => r.name), ['org/prod/app', 'org/prod/priv'], `${what}: admin sees the private repository`);
  assertUnavailable(tt, await request(`${proxyd.httpUrl}/v1/search?q=prod`, { headers: { Authorization: basic('bob', PASSWORDS.bob) } }), `${what}: /v1/search as bob`);
}

t.test('Katello up: admin logs in; only a salted hash of the credentials is kept', async (t) => {
  const res = await login(basic('admin', PASSWORDS.admin), 'repository:org/prod/priv:pull');
  t.equal(res.status, 200);
  proxyd.secrets.push(res.json().token as string);
  await pullPrivate(t, `admin:${PASSWORDS.admin}`, 'Katello up');
  const cache = (await tableRows('SELECT "user", credentials_hash FROM login_cache')) as Array<{ user: string; credentials_hash: string }>;
  t.same(cache.map((r) => r.user), ['admin'], 'one cached login: admin');
  t.match(cache[0]!.credentials_hash, /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/, 'a salted scrypt hash');
  t.notOk(JSON.stringify(cache).includes(PASSWORDS.admin), 'not the password');
});

t.test('Katello stopped (connection refused)', async (t) => {
  await katello.stop();
  await whileDown(t, 'refused');
});

t.test('Katello resets every connection', async (t) => {
  await katello.start(katelloPort);
  katello.override((req) => {
    req.socket.resetAndDestroy();
    return true;
  });
  await whileDown(t, 'reset');
});

t.test('Katello sends a status line and hangs up', async (t) => {
  katello.override((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '100' });
    res.write('{"tok');
    setTimeout(() => res.socket?.destroy(), 50);
    return true;
  });
  await whileDown(t, 'hang-up');
});

t.test('Katello answers 503', async (t) => {
  katello.override((_req, res) => {
    res.writeHead(503, { 'Content-Type': 'text/html' }).end('<h1>Service Unavailable</h1>');
    return true;
  });
  await whileDown(t, '503');
});

t.test('Katello is silent (no answer within upstream_response_timeout)', async (t) => {
  katello.override(() => true);
  await whileDown(t, 'silent');
});

t.test('Katello back: logins go to it again; nothing was stored for the refused logins', async (t) => {
  katello.override(null);
  const before = katello.requestsTo('/v2/token').length;
  const bob = await login(basic('bob', PASSWORDS.bob), 'repository:org/prod/priv:pull');
  t.equal(bob.status, 200, 'bob logs in');
  proxyd.secrets.push(bob.json().token as string);
  t.equal(katello.requestsTo('/v2/token').length, before + 1, 'through Katello');
  const wrong = await login(basic('admin', 'wrong-password'), 'repository:org/prod/priv:pull');
  t.equal(wrong.status, 401, "Katello's answer to a wrong password: 401");
  const users = ((await tableRows('SELECT "user" FROM login_cache ORDER BY "user"')) as Array<{ user: string }>).map((r) => r.user);
  t.same(users, ['admin', 'bob'], 'only logins Katello accepted are cached');
});

t.test('no log line holds a password, token or Authorization header', async (t) => {
  const leaks = proxyd.lines.filter((l) => /Authorization|Basic [A-Za-z0-9+/=]{8,}|Bearer [^ "]{8,}/.test(l) || proxyd.secrets.some((s) => l.includes(s)));
  t.same(leaks, [], 'none');
  t.ok(await lineLogged(proxyd, /main server unreachable/), 'the outage is logged (without secrets)');
});

t.test('a cached login lasts login_cache_ttl; 0 caches nothing', async (t) => {
  const start = async (name: string, ttl: number) => {
    const p = await startProxyd({
      fixtures: false,
      settings: { foreman_url: katello.url, log_level: 'INFO' },
      plugins: { container_gateway: { enabled: true, pulp_endpoint: registry.url, pulp_registry_path: '/v2/', sqlite_db_path: join(work, `${name}.db`), login_cache_ttl: ttl } },
    });
    p.secrets.push(...Object.values(PASSWORDS));
    t.teardown(() => p.stop());
    return p;
  };
  const short = await start('ttl-short', 1);
  const none = await start('ttl-none', 0);
  const loginAt = (p: RunningProxyd) =>
    request(`${p.httpUrl}/v2/token?service=x&scope=${encodeURIComponent('repository:org/prod/priv:pull')}`, { headers: { Authorization: basic('admin', PASSWORDS.admin) } });
  for (const p of [short, none]) {
    const res = await loginAt(p);
    t.equal(res.status, 200, 'admin logs in while Katello is up');
    p.secrets.push(String(res.json().token));
  }
  const verifiedAt = (await queryGateway<{ verified_at: number }>(join(work, 'ttl-short.db'), `SELECT verified_at FROM login_cache WHERE "user" = 'admin'`))[0]!.verified_at;
  t.equal((await queryGateway<{ n: number }>(join(work, 'ttl-none.db'), 'SELECT count(*) AS n FROM login_cache'))[0]!.n, 0, 'login_cache_ttl 0: nothing cached');
  katello.override((_req, res) => {
    res.writeHead(503).end();
    return true;
  });
  t.teardown(() => katello.override(null));
  assertUnavailable(t, await loginAt(none), 'login_cache_ttl 0, Katello down');
  const wait = verifiedAt + 1000 - Date.now() + 50;
  if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, 2000)));
  assertUnavailable(t, await loginAt(short), 'past login_cache_ttl (1 s), Katello down');
});

t.test("smart-proxy mode: wrong passwords are throttled here, before they reach Katello", async (t) => {
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: katello.url, log_level: 'INFO' },
    plugins: {
      container_gateway: { enabled: true, pulp_endpoint: registry.url, pulp_registry_path: '/v2/', sqlite_db_path: join(work, 'throttle.db'), login_failure_limit: 3, login_failure_window: 60 },
    },
  });
  p.secrets.push(...Object.values(PASSWORDS), 'wrong-password');
  t.teardown(() => p.stop());
  const loginAs = (password: string) =>
    request(`${p.httpUrl}/v2/token?service=x&scope=${encodeURIComponent('repository:org/prod/priv:pull')}`, { headers: { Authorization: basic('bob', password) } });
  for (let i = 1; i <= 3; i++) t.equal((await loginAs('wrong-password')).status, 401, `wrong password #${i}: Katello says 401`);
  const asked = katello.requestsTo('/v2/token').length;
  const throttled = await loginAs('wrong-password');
  t.equal(throttled.status, 429, 'the next one: 429');
  t.equal(throttled.json().errors?.[0]?.code, 'TOOMANYREQUESTS');
  t.ok(Number(throttled.headers['retry-after']) > 0, 'with Retry-After');
  t.equal((await loginAs(PASSWORDS.bob)).status, 429, 'the right password too, until the window has passed');
  const search = await request(`${p.httpUrl}/v1/search?q=`, { headers: { Authorization: basic('bob', PASSWORDS.bob) } });
  t.equal(search.status, 429, '/v1/search with Basic as well');
  t.equal(katello.requestsTo('/v2/token').length, asked, 'none of these reached Katello');
  await p.waitForLog(/logins throttled for account 'bob': 3 failed logins within 60 s/);
});
