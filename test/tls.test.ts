// HTTPS, client certificates, trusted_hosts, identity, per-listener mounting,
// TLS version policy and request ids, all through real requests against a
// real proxyd process (smart-proxy.md §1, §6; environment.md §5).
import { readFileSync } from 'node:fs';
import { lookupService } from 'node:dns/promises';
import tls from 'node:tls';
import t from 'tap';
import { IDENTITY_HEADERS } from '../lib/http/identity.ts';
import { request, type Reply } from './helpers/http.ts';
import { makePki, type CertPair } from './helpers/pki.ts';
import { startProxyd, type ProxydOptions, type RunningProxyd } from './helpers/proxyd.ts';

const pki = makePki();
const admin = pki.client('admin');
const stranger = pki.client('stranger');
const adminUpper = pki.client('ADMIN');
const rogueAdmin = pki.rogue('admin');

const ssl = { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Start a daemon for one subtest and stop it when that subtest ends. */
async function daemon(tt: Tap, opts: ProxydOptions): Promise<RunningProxyd> {
  const p = await startProxyd(opts);
  tt.teardown(() => p.stop());
  return p;
}
/** The type of a subtest's `t` (the last overload of t.test is `(cb)`). */
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

/** An HTTPS daemon (no HTTP listener) with the given extra global settings. */
function httpsDaemon(tt: Tap, settings: Record<string, unknown>, plugins?: ProxydOptions['plugins']): Promise<RunningProxyd> {
  return daemon(tt, { https: true, http: false, settings: { ...ssl, ...settings }, ...(plugins ? { plugins } : {}) });
}

function get(p: RunningProxyd, path: string, client?: CertPair, headers?: Record<string, string>): Promise<Reply> {
  return request(`${p.httpsUrl}${path}`, { ca: pki.ca, ...(client ? { client } : {}), ...(headers ? { headers } : {}) });
}

/** Status and the start of the body, for assertion messages. */
function brief(r: Reply): string {
  return `${r.status} ${r.body.length > 160 ? `${r.body.slice(0, 160)}...` : r.body}`;
}

/** A 403 with a JSON `{error}` body; returns the message. */
function forbidden(tt: Tap, r: Reply, what: string): string {
  tt.equal(r.status, 403, `${what}: 403`);
  tt.match(r.headers['content-type'], /application\/json/, `${what}: JSON body`);
  let body: { error?: unknown } = {};
  try {
    body = r.json();
  } catch {
    tt.fail(`${what}: body is not JSON: ${r.body}`);
  }
  tt.type(body.error, 'string', `${what}: body has an error message`);
  return String(body.error);
}

/** `https`: whether the daemon has an HTTPS listener (logs is enabled for both; it serves on the configured ones). */
function checkFeaturesShape(tt: Tap, body: Record<string, Record<string, unknown>>, https = true): void {
  tt.type(body, 'object');
  tt.ok(body.logs, 'the logs plugin is listed');
  for (const [name, entry] of Object.entries(body)) {
    tt.type(entry.http_enabled, 'boolean', `${name}.http_enabled`);
    tt.type(entry.https_enabled, 'boolean', `${name}.https_enabled`);
    tt.type(entry.settings, 'object', `${name}.settings`);
    tt.type(entry.state, 'string', `${name}.state`);
    tt.ok(Array.isArray(entry.capabilities), `${name}.capabilities is an array`);
  }
  tt.match(body.logs, { state: 'running', https_enabled: https });
}

interface TlsOutcome {
  ok: boolean;
  protocol?: string | null;
  code?: string;
  message?: string;
}

/** A bare TLS handshake against the daemon; never rejects. */
function handshake(p: RunningProxyd, opts: tls.ConnectionOptions): Promise<TlsOutcome> {
  const port = Number(new URL(p.httpsUrl).port);
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(pki.ca), ...opts });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ok: false, code: 'TIMEOUT', message: 'handshake timed out' });
    }, 10_000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const protocol = socket.getProtocol();
      socket.end();
      resolve({ ok: true, protocol });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok: false, code: err.code, message: err.message });
    });
  });
}

// A client willing to speak TLS 1.0/1.1 (security level 0 so that OpenSSL on
// the client side does not refuse these versions itself): any failure is then
// the server's refusal.
const legacyClient: tls.ConnectionOptions = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' };
// The server answers a version it does not allow with a protocol_version alert.
const SERVER_REFUSED_VERSION = /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|WRONG_VERSION|VERSION_TOO_LOW/i;

t.test('trusted_hosts [admin]: /v2/features and /logs/ need a verified CA-signed cert with a trusted CN', async (t) => {
  const p = await httpsDaemon(t, { trusted_hosts: ['admin'] });

  for (const path of ['/v2/features', '/logs/']) {
    await t.test(`GET ${path}`, async (t) => {
      const none = forbidden(t, await get(p, path), 'no client certificate');
      t.match(none, /No client SSL certificate supplied/);

      const untrusted = forbidden(t, await get(p, path, stranger), 'CA-signed CN=stranger');
      t.match(untrusted, /Untrusted client stranger/);
      t.match(untrusted, path, 'the message names the path');

      const rogue = forbidden(t, await get(p, path, rogueAdmin), 'self-signed CN=admin');
      t.match(rogue, /not verified/);
      t.notMatch(rogue, /Untrusted client admin/, 'the rogue CN is never used as the client name');

      const ok = await get(p, path, admin);
      t.equal(ok.status, 200, `CA-signed CN=admin: ${brief(ok)}`);
      t.match(ok.headers['content-type'], /application\/json/);
      if (path === '/v2/features') {
        checkFeaturesShape(t, ok.json());
      } else {
        const body = ok.json();
        t.match(body, { info: { size: Number, tail_size: Number, level_tail: 3, failed_modules: {} }, logs: Array });
      }
    });
  }

  await t.test('refusals are logged at ERROR with the reason', async (t) => {
    const rec = await p.waitForLog(/Untrusted client stranger attempted to access \/v2\/features/, 5_000);
    t.equal(rec.level, 'error');
  });

  await t.test('the CN is compared case-insensitively (CN=ADMIN vs trusted_hosts [admin])', async (t) => {
    const r = await get(p, '/v2/features', adminUpper);
    t.equal(r.status, 200, brief(r));
  });
});

t.test('trusted_hosts [Admin] in settings matches CN=admin', async (t) => {
  const p = await httpsDaemon(t, { trusted_hosts: ['Admin'] });
  const r = await get(p, '/v2/features', admin);
  t.equal(r.status, 200, brief(r));
  const logs = await get(p, '/logs/', admin);
  t.equal(logs.status, 200, brief(logs));
  const r2 = await get(p, '/v2/features', stranger);
  t.match(forbidden(t, r2, 'CN=stranger'), /Untrusted client stranger/);
});

t.test('trusted_hosts absent: any verified CA-signed cert is enough; rogue and none still refused', async (t) => {
  const p = await httpsDaemon(t, {});
  for (const [name, client] of [['admin', admin], ['stranger', stranger]] as const) {
    const r = await get(p, '/v2/features', client);
    t.equal(r.status, 200, `CN=${name}: ${brief(r)}`);
    checkFeaturesShape(t, r.json());
    const logs = await get(p, '/logs/', client);
    t.equal(logs.status, 200, `CN=${name} /logs/: ${brief(logs)}`);
  }
  t.match(forbidden(t, await get(p, '/v2/features', rogueAdmin), 'rogue CN=admin'), /not verified/);
  t.match(forbidden(t, await get(p, '/v2/features'), 'no certificate'), /No client SSL certificate supplied/);
  t.match(forbidden(t, await get(p, '/logs/', rogueAdmin), 'rogue CN=admin /logs/'), /not verified/);
  t.match(forbidden(t, await get(p, '/logs/'), 'no certificate /logs/'), /No client SSL certificate supplied/);
});

t.test('trusted_hosts []: nobody is trusted, not even CN=admin', async (t) => {
  const p = await httpsDaemon(t, { trusted_hosts: [] });
  t.match(forbidden(t, await get(p, '/v2/features', admin), 'CN=admin'), /Untrusted client admin/);
  t.match(forbidden(t, await get(p, '/logs/', admin), 'CN=admin /logs/'), /Untrusted client admin/);
  t.match(forbidden(t, await get(p, '/v2/features', stranger), 'CN=stranger'), /Untrusted client stranger/);
});

t.test('HTTPS with hello enabled: public routes, identity, header stripping, request ids', async (t) => {
  const p = await httpsDaemon(t, { trusted_hosts: ['admin'] }, { hello: { enabled: true } });

  await t.test('public routes answer without a client certificate', async (t) => {
    const features = await get(p, '/features');
    t.equal(features.status, 200, brief(features));
    t.same(features.json(), ['hello', 'logs']);
    const version = await get(p, '/version');
    t.equal(version.status, 200, brief(version));
    t.match(version.json(), { version: String, modules: { hello: '1.2.3', logs: String } });
    const health = await get(p, '/healthz');
    t.equal(health.status, 200, brief(health));
    t.same(health.json(), { status: 'alive' });
    // also with a rogue certificate: public routes do not care
    const withRogue = await get(p, '/features', rogueAdmin);
    t.equal(withRogue.status, 200, brief(withRogue));
  });

  await t.test('a verified CA-signed certificate gives a verified identity with its CN', async (t) => {
    const r = await get(p, '/hello/whoami', admin);
    t.equal(r.status, 200, brief(r));
    const body = r.json();
    t.equal(body.identity.transport, 'https');
    t.equal(body.identity.certificate, 'verified');
    t.equal(body.identity.cn, 'admin');
    t.equal(body.remote_user, null);
  });

  await t.test('a self-signed CN=admin certificate is unverified and carries no CN', async (t) => {
    const r = await get(p, '/hello/whoami', rogueAdmin);
    t.equal(r.status, 200, brief(r));
    const body = r.json();
    t.equal(body.identity.certificate, 'unverified');
    t.notOk('cn' in body.identity, `no cn in ${JSON.stringify(body.identity)}`);
    t.type(body.identity.authorizationError, 'string');
    t.equal(body.remote_user, null);
  });

  await t.test('no certificate: identity none', async (t) => {
    const r = await get(p, '/hello/whoami');
    t.equal(r.status, 200, brief(r));
    t.match(r.json().identity, { transport: 'https', certificate: 'none' });
    t.notOk('cn' in r.json().identity);
  });

  await t.test('client-sent identity headers never reach a route', async (t) => {
    for (const header of ['REMOTE_USER', 'Remote-User', 'X-Remote-User', 'remote_user']) {
      for (const [label, client] of [['no cert', undefined], ['rogue CN=admin', rogueAdmin], ['CN=stranger', stranger]] as const) {
        const r = await get(p, '/hello/whoami', client, { [header]: 'admin' });
        t.equal(r.status, 200, brief(r));
        const body = r.json();
        t.equal(body.remote_user, null, `${header} (${label}) is not seen`);
        t.not(body.identity.cn, 'admin', `${header} (${label}) does not make the client admin`);
      }
    }
    // nor can any identity header make a protected route trust the client
    for (const header of new Set(['REMOTE_USER', 'Remote-User', 'X-Remote-User', ...IDENTITY_HEADERS])) {
      const r = await get(p, '/hello/trusted', stranger, { [header]: 'admin' });
      t.equal(r.status, 403, `/hello/trusted with CN=stranger and ${header}: admin`);
      const r2 = await get(p, '/v2/features', undefined, { [header]: 'admin' });
      t.equal(r2.status, 403, `/v2/features without cert and ${header}: admin`);
    }
  });

  await t.test('/hello/trusted is protected by the trusted-client check', async (t) => {
    t.equal((await get(p, '/hello/trusted', admin)).status, 200);
    t.match(forbidden(t, await get(p, '/hello/trusted', stranger), 'CN=stranger'), /Untrusted client stranger attempted to access \/hello\/trusted/);
    t.match(forbidden(t, await get(p, '/hello/trusted', rogueAdmin), 'rogue'), /not verified/);
    t.match(forbidden(t, await get(p, '/hello/trusted'), 'no cert'), /No client SSL certificate supplied/);
  });

  await t.test('X-Request-Id is echoed and carried by the log lines of the request', async (t) => {
    const r = await get(p, '/hello/whoami', admin, { 'X-Request-Id': 'test-req-42' });
    t.equal(r.status, 200, brief(r));
    t.equal(r.headers['x-request-id'], 'test-req-42');
    t.equal(r.json().request_id, 'test-req-42');
    // The Finished line is written on 'close', maybe after the reply arrived.
    const deadline = Date.now() + 5_000;
    let records: Array<Record<string, unknown>> = [];
    while (Date.now() < deadline) {
      records = p.lines
        .filter((l) => l.includes('"request":"test-req-42"'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      if (records.some((r) => /^Finished GET \/hello\/whoami with 200/.test(String(r.msg)))) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    t.ok(records.some((r) => r.msg === 'Started GET /hello/whoami'), 'the Started line carries the id');
    t.ok(records.some((r) => /^Finished GET \/hello\/whoami with 200/.test(String(r.msg))), 'the Finished line carries the id');
    for (const rec of records) t.equal(rec.request, 'test-req-42');
  });

  await t.test('without X-Request-Id a UUID is generated', async (t) => {
    const a = await get(p, '/hello/whoami', admin);
    const b = await get(p, '/hello/whoami', admin);
    t.match(a.headers['x-request-id'], UUID);
    t.match(b.headers['x-request-id'], UUID);
    t.not(a.headers['x-request-id'], b.headers['x-request-id'], 'a new id per request');
    t.equal(a.json().request_id, a.headers['x-request-id']);
  });
});

t.test('enabled: https mounts the plugin on the HTTPS listener only', async (t) => {
  const p = await daemon(t, { https: true, settings: { ...ssl, trusted_hosts: ['admin'] }, plugins: { hello: { enabled: 'https' } } });
  const overHttps = await get(p, '/hello/ping');
  t.equal(overHttps.status, 200, brief(overHttps));
  t.same(overHttps.json(), { greeting: 'hello' });
  const overHttp = await request(`${p.httpUrl}/hello/ping`);
  t.equal(overHttp.status, 404, brief(overHttp));
  const features = await get(p, '/v2/features', admin);
  t.equal(features.status, 200, brief(features));
  t.match(features.json().hello, { http_enabled: false, https_enabled: true, state: 'running', settings: { greeting: 'hello' } });
  t.match(features.json().logs, { http_enabled: true, https_enabled: true });
});

t.test('enabled: http mounts the plugin on the HTTP listener only', async (t) => {
  const p = await daemon(t, { https: true, settings: { ...ssl, trusted_hosts: ['admin'] }, plugins: { hello: { enabled: 'http' } } });
  const overHttp = await request(`${p.httpUrl}/hello/ping`);
  t.equal(overHttp.status, 200, brief(overHttp));
  const overHttps = await get(p, '/hello/ping');
  t.equal(overHttps.status, 404, brief(overHttps));
  const features = await get(p, '/v2/features', admin);
  t.equal(features.status, 200, brief(features));
  t.match(features.json().hello, { http_enabled: true, https_enabled: false, state: 'running' });
});

t.test('TLS policy', async (t) => {
  await t.test('default: TLS 1.0/1.1 refused, 1.2 and 1.3 accepted', async (t) => {
    const p = await httpsDaemon(t, {});
    const legacy = await handshake(p, legacyClient);
    t.equal(legacy.ok, false, `TLS <= 1.1 handshake fails (${legacy.code}: ${legacy.message})`);
    t.match(`${legacy.code} ${legacy.message}`, SERVER_REFUSED_VERSION, 'refused by the server for its version');
    const tls11 = await handshake(p, { ...legacyClient, minVersion: 'TLSv1.1' });
    t.equal(tls11.ok, false, 'TLS 1.1 exactly fails too');
    const v12 = await handshake(p, { maxVersion: 'TLSv1.2' });
    t.same(v12, { ok: true, protocol: 'TLSv1.2' }, 'TLS 1.2 works by default');
    const v13 = await handshake(p, { minVersion: 'TLSv1.3' });
    t.same(v13, { ok: true, protocol: 'TLSv1.3' });
  });

  await t.test("tls_disabled_versions ['1.2']: only TLS 1.3", async (t) => {
    const p = await httpsDaemon(t, { tls_disabled_versions: ['1.2'] });
    const v12 = await handshake(p, { maxVersion: 'TLSv1.2' });
    t.equal(v12.ok, false, `TLS 1.2 fails (${v12.code}: ${v12.message})`);
    t.match(`${v12.code} ${v12.message}`, SERVER_REFUSED_VERSION);
    const legacy = await handshake(p, legacyClient);
    t.equal(legacy.ok, false, 'TLS 1.1 still fails');
    const v13 = await handshake(p, { minVersion: 'TLSv1.3' });
    t.same(v13, { ok: true, protocol: 'TLSv1.3' }, 'TLS 1.3 works');
    const r = await get(p, '/v2/features', admin);
    t.equal(r.status, 200, `a real request over TLS 1.3 works: ${brief(r)}`);
  });
});

// Over HTTP the client name is the reverse DNS name of the peer, as the system
// resolver gives it (getnameinfo: nsswitch, /etc/hosts first). On this machine
// `getent hosts 127.0.0.1` says `localhost` (the first /etc/hosts entry), which
// is also what smart-proxy (Ruby Resolv.getname) calls the client; the name is
// taken from the same resolver here so that the test holds on other machines.
t.test('plain HTTP: the client name is the reverse DNS name of the peer', async (t) => {
  const { hostname } = await lookupService('127.0.0.1', 0);
  const peerName = hostname.toLowerCase();
  t.comment(`127.0.0.1 reverse-resolves to ${peerName}`);

  await t.test(`trusted_hosts ['${peerName}']: 200`, async (t) => {
    const p = await daemon(t, { settings: { trusted_hosts: [peerName] } });
    const r = await request(`${p.httpUrl}/v2/features`);
    t.equal(r.status, 200, `/v2/features: ${brief(r)}`);
    if (r.status === 200) checkFeaturesShape(t, r.json(), false);
    const logs = await request(`${p.httpUrl}/logs/`);
    t.equal(logs.status, 200, `/logs/: ${brief(logs)}`);
  });

  await t.test("trusted_hosts ['somewhere.example']: 403 naming the client", async (t) => {
    const p = await daemon(t, { settings: { trusted_hosts: ['somewhere.example'] } });
    const msg = forbidden(t, await request(`${p.httpUrl}/v2/features`), 'HTTP /v2/features from 127.0.0.1');
    t.equal(msg, `Untrusted client ${peerName} attempted to access /v2/features. Check :trusted_hosts: in settings.yml`, 'names the client by its reverse DNS name');
    const logs = forbidden(t, await request(`${p.httpUrl}/logs/`), 'HTTP /logs/');
    t.equal(logs, `Untrusted client ${peerName} attempted to access /logs/. Check :trusted_hosts: in settings.yml`, 'same for /logs/');
    // identity headers do not help over HTTP either
    const spoof = await request(`${p.httpUrl}/v2/features`, { headers: { REMOTE_USER: 'somewhere.example', 'X-Remote-User': 'somewhere.example', 'X-Forwarded-For': '192.0.2.1' } });
    t.equal(spoof.status, 403, 'identity headers are ignored');
  });

  // A non-loopback peer is refused: test/trusted-client-default.test.ts.
  await t.test('trusted_hosts absent: HTTP from loopback is trusted without a name lookup', async (t) => {
    const p = await daemon(t, {});
    const r = await request(`${p.httpUrl}/v2/features`);
    t.equal(r.status, 200, brief(r));
  });
});
