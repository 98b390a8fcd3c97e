// Logins cannot starve the registry (standalone mode, the real daemon over
// HTTP): wrong passwords on /v2/token and /v1/search are throttled per
// account and per client address (429 TOOMANYREQUESTS with Retry-After, one
// log line), a correct password works again once the window has passed, and
// a flood of parallel wrong-password logins gets fast 429s from the bounded
// hashing queue while blob reads keep being answered.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { makePki } from './helpers/pki.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { queryGateway } from './helpers/test-database.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const work = mkdtempSync(join(tmpdir(), 'gw-login-throttle-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();
t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));
const admin = pki.client('foreman.example.com');

const PASSWORDS = { alice: 'alice-correct-pw', bob: 'bob-correct-pw' };
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** A standalone daemon with users alice and bob; stopped (and its log checked for credentials) at teardown. */
async function daemon(tt: Tap, name: string, gateway: Record<string, unknown>, global: Record<string, unknown> = {}): Promise<RunningProxyd & { db: string }> {
  const db = join(work, `${name}.db`);
  const p = await startProxyd({
    fixtures: false,
    https: true,
    settings: { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca, trusted_hosts: ['foreman.example.com'], log_level: 'INFO', ...global },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: db, storage_path: join(work, `${name}-storage`), ...gateway } },
  });
  p.secrets.push(...Object.values(PASSWORDS), 'wrong-password', 'carol-new-pw');
  tt.teardown(async () => {
    await p.stop();
    rmSync(p.dir, { recursive: true, force: true });
  });
  for (const [user, password] of Object.entries(PASSWORDS)) {
    const res = await request(`${p.httpsUrl}/container_gateway/admin/users`, {
      method: 'POST',
      ca: pki.ca,
      client: admin,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: user, password }),
    });
    if (res.status !== 201) throw new Error(`add user ${user}: ${res.status} ${res.body}`);
  }
  return Object.assign(p, { db });
}

function login(p: RunningProxyd, authorization: string, scope = 'repository:alice/app:pull'): Promise<Reply> {
  return request(`${p.httpUrl}/v2/token?service=x&scope=${encodeURIComponent(scope)}`, { headers: { Authorization: authorization } });
}

async function tokenCount(db: string): Promise<number> {
  return (await queryGateway<{ n: number }>(db, 'SELECT count(*) AS n FROM authentication_tokens'))[0]!.n;
}

function assertThrottled(tt: Tap, res: Reply, windowSeconds: number, what: string): void {
  tt.equal(res.status, 429, `${what}: 429`);
  tt.equal(res.json().errors?.[0]?.code, 'TOOMANYREQUESTS', `${what}: TOOMANYREQUESTS`);
  const retry = Number(res.headers['retry-after']);
  tt.ok(Number.isInteger(retry) && retry >= 1 && retry <= windowSeconds, `${what}: Retry-After ${res.headers['retry-after']} within the window`);
}

/** Poll (bounded) until `ok` is true of the answer; the Retry-After says when to expect it. */
async function pollUntil(fetchOnce: () => Promise<Reply>, ok: (r: Reply) => boolean, bound: number): Promise<Reply> {
  let last = await fetchOnce();
  for (let i = 0; i < bound && !ok(last); i++) {
    await new Promise((r) => setTimeout(r, 250));
    last = await fetchOnce();
  }
  return last;
}

t.test('wrong passwords for one account are throttled; the right one works again after the window', async (t) => {
  const p = await daemon(t, 'account', { login_failure_limit: 4, login_failure_window: 3 });
  const before = await tokenCount(p.db);
  const wrong = basic('alice', 'wrong-password');
  for (let i = 1; i <= 4; i++) {
    const res = await login(p, wrong);
    t.equal(res.status, 401, `wrong password #${i}: 401`);
    t.match(res.headers['www-authenticate'], /^Bearer realm=/, 'with a challenge');
  }
  for (let i = 1; i <= 3; i++) assertThrottled(t, await login(p, wrong), 3, `wrong password #${4 + i}, over the limit`);
  assertThrottled(t, await login(p, basic('alice', PASSWORDS.alice)), 3, 'the correct password while throttled');
  t.equal(await tokenCount(p.db), before, 'no token was stored by any of these');
  const line = await p.waitForLog(/logins throttled for account 'alice'/);
  t.match(String(line.msg), /4 failed logins within 3 s/, 'one log line says who and why');
  t.equal(p.lines.filter((l) => l.includes("logins throttled for account 'alice'")).length, 1, 'logged once, not per refused guess');

  const after = await pollUntil(() => login(p, basic('alice', PASSWORDS.alice)), (r) => r.status !== 429, 40);
  t.equal(after.status, 200, 'once the window has passed, the correct password gets a token');
  const token = after.json().token as string;
  const catalog = await request(`${p.httpUrl}/v2/_catalog`, { headers: { Authorization: `Bearer ${token}` } });
  t.equal(catalog.status, 200, 'and the token works');
  t.equal(await tokenCount(p.db), before + 1, 'exactly one token stored');
});

t.test('wrong passwords from one address are throttled for every account, /v1/search included', async (t) => {
  const p = await daemon(t, 'address', { login_failure_limit: 5, login_failure_window: 60 });
  // Guesses spread over user names (existing or not) and over both login routes.
  const guesses: Array<() => Promise<Reply>> = [
    () => login(p, basic('carol', 'wrong-password')),
    () => login(p, basic('dave', 'wrong-password')),
    () => request(`${p.httpUrl}/v1/search?q=app`, { headers: { Authorization: basic('erin', 'wrong-password') } }),
    () => login(p, basic('alice', 'wrong-password')),
    () => request(`${p.httpUrl}/v1/search?q=app`, { headers: { Authorization: basic('bob', 'wrong-password') } }),
  ];
  for (const [i, guess] of guesses.entries()) t.equal((await guess()).status, 401, `guess #${i + 1}: 401`);
  assertThrottled(t, await login(p, basic('frank', 'wrong-password')), 60, '/v2/token from the same address');
  assertThrottled(t, await login(p, basic('bob', PASSWORDS.bob)), 60, "bob's correct password from that address");
  const search = await request(`${p.httpUrl}/v1/search?q=app`, { headers: { Authorization: basic('bob', PASSWORDS.bob) } });
  assertThrottled(t, search, 60, '/v1/search with Basic from that address');
  await p.waitForLog(/logins throttled for address 127\.0\.0\.1: 5 failed logins within 60 s/);
  const anonymous = await request(`${p.httpUrl}/v2/token?service=x`);
  t.equal(anonymous.status, 200, 'anonymous logins are not throttled (they check no password)');
  t.equal(anonymous.json().token, 'unauthenticated');
});

t.test('/v1/search with a wrong password is throttled per account too', async (t) => {
  const p = await daemon(t, 'search', { login_failure_limit: 3, login_failure_window: 60 });
  for (let i = 1; i <= 3; i++) {
    const res = await request(`${p.httpUrl}/v1/search?q=`, { headers: { Authorization: basic('bob', 'wrong-password') } });
    t.equal(res.status, 401, `wrong password #${i} on /v1/search: 401`);
  }
  assertThrottled(t, await login(p, basic('bob', PASSWORDS.bob)), 60, '/v2/token for the same account');
  await p.waitForLog(/logins throttled for account 'bob'/);
});

t.test('64 parallel wrong-password loops: fast 429s from the hashing queue, blob reads still answered', async (t) => {
  // A limit the flood does not reach: only the bounded hashing queue stands between it and the thread pool.
  const p = await daemon(t, 'flood', { login_failure_limit: 100_000, login_failure_window: 60 });
  const tokenRes = await login(p, basic('alice', PASSWORDS.alice), 'repository:alice/app:pull,push');
  t.equal(tokenRes.status, 200);
  const token = tokenRes.json().token as string;
  const blob = randomBytes(4 * 1024 * 1024);
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
  const upload = await fetch(`${p.httpUrl}/v2/alice/app/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' },
    body: blob,
  });
  t.equal(upload.status, 201, 'a blob pushed');

  const readBlob = async (what: string): Promise<number> => {
    const started = performance.now();
    const res = await fetch(`${p.httpUrl}/v2/alice/app/blobs/${digest}`, { headers: { Authorization: `Bearer ${token}` } });
    const body = Buffer.from(await res.arrayBuffer());
    t.equal(res.status, 200, `${what}: 200`);
    t.ok(body.equals(blob), `${what}: the same bytes`);
    return performance.now() - started;
  };
  const quiet: number[] = [];
  for (let i = 0; i < 3; i++) quiet.push(await readBlob(`blob read #${i + 1} before the flood`));

  let flooding = true;
  const statuses = new Map<number, number>();
  let retryAfterOk = true;
  const loop = async () => {
    while (flooding) {
      const res = await login(p, basic('alice', 'wrong-password'));
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status === 429 && res.headers['retry-after'] !== '1') retryAfterOk = false;
    }
  };
  const loops = Array.from({ length: 64 }, loop);
  const reads: number[] = [];
  try {
    // Wait (bounded) until the flood is on: the hashing queue has refused some.
    for (let i = 0; i < 400 && !statuses.get(429); i++) await new Promise((r) => setTimeout(r, 25));
    t.ok(statuses.get(429), 'the flood got 429s');
    for (let i = 0; i < 5; i++) reads.push(await readBlob(`blob read #${i + 1} during the flood`));
    const added = await request(`${p.httpsUrl}/container_gateway/admin/users`, {
      method: 'POST',
      ca: pki.ca,
      client: admin,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'carol', password: 'carol-new-pw' }),
    });
    t.ok(added.status === 201 || added.status === 503, `adding a user during the flood: ${added.status} (created, or busy: never a 500)`);
    if (added.status === 503) t.match(added.json().error, /busy/);
  } finally {
    flooding = false;
    await Promise.all(loops);
  }
  t.same([...statuses.keys()].sort(), [401, 429], 'every flood answer is 401 (checked) or 429 (queue full): no 5xx');
  t.ok(retryAfterOk, 'every 429 of the queue says Retry-After: 1');
  t.comment(`flood answers: ${JSON.stringify(Object.fromEntries(statuses))}; blob reads (4 MiB) before: ${quiet.map((ms) => ms.toFixed(0)).join(', ')} ms, during: ${reads.map((ms) => ms.toFixed(0)).join(', ')} ms`);
  const after = await login(p, basic('alice', PASSWORDS.alice));
  t.equal(after.status, 200, 'the correct password works right after the flood');
});

t.test('with two workers the failure counts are shared', async (t) => {
  const p = await daemon(t, 'workers', { login_failure_limit: 4, login_failure_window: 60 }, { workers: 2 });
  for (let i = 1; i <= 4; i++) t.equal((await login(p, basic('bob', 'wrong-password'))).status, 401, `wrong password #${i}: 401`);
  assertThrottled(t, await login(p, basic('bob', 'wrong-password')), 60, 'the 5th, whichever worker takes it');
  assertThrottled(t, await login(p, basic('bob', PASSWORDS.bob)), 60, 'the right password, whichever worker takes it');
  const pids = new Set(
    p.lines
      .map((l) => {
        try {
          return JSON.parse(l) as { pid?: number; msg?: string };
        } catch {
          return {};
        }
      })
      .filter((r) => /^Finished GET \/v2\/token with 40[19]/.test(String(r.msg)))
      .map((r) => r.pid),
  );
  t.ok(pids.size >= 2, `the logins were answered by ${pids.size} worker processes`);
});
