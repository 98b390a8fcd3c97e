// /pulpcore_registry/v2/ → Pulp's own /v2/ API (what Apache's ProxyPass with
// `RequestHeader set REMOTE_USER %{SSL_CLIENT_S_DN_CN}s` did, now Remote-User,
// which Pulp's web server lets through): the backend is an echo server on a
// unix socket (and once on TCP) that answers with the
// method, URL, headers and body length it received. Remote-User is the CN of a
// verified client certificate and nothing else, whatever the client sends.
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { makePki, type CertPair } from './helpers/pki.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

interface Echo {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaderNames: string[];
  bodyLength: number;
  bodySha256: string;
}

const work = mkdtempSync(join(tmpdir(), 'proxyd-gw-pulpcore-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();
t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));
const capsule = pki.client('capsule.example.com');
/** Emits ('data', url, bytesSoFar) as the echo backend receives request bodies. */
const progress = new EventEmitter();
const rogueCapsule = pki.rogue('capsule.example.com');

/**
 * The echo backend. Besides echoing: `/v2/redirect/...` answers 302 with a
 * relative `Location: /v2/x`, `/v2/created/...` 201 with `Location: /v2/x?upload=1`,
 * `/v2/absolute/...` 302 with an absolute Location (left alone),
 * `/v2/notmodified/...` with `If-None-Match: "v1"` 304 with a Content-Length.
 * HEAD gets the headers of the GET (Content-Length included), without a body,
 * as node's http server (and Pulp) answer HEAD.
 */
function echoServer(): http.Server {
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let length = 0;
    req.on('data', (c: Buffer) => {
      length += c.length;
      hash.update(c);
      progress.emit('data', req.url, length);
    });
    req.on('end', () => {
      const echo: Echo = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaderNames: req.rawHeaders.filter((_, i) => i % 2 === 0),
        bodyLength: length,
        bodySha256: hash.digest('hex'),
      };
      const body = JSON.stringify(echo);
      const url = req.url ?? '';
      const extra: Record<string, string> = {};
      let status = 200;
      if (url.startsWith('/v2/redirect/')) [status, extra.Location] = [302, '/v2/x'];
      if (url.startsWith('/v2/created/')) [status, extra.Location] = [201, '/v2/x?upload=1'];
      if (url.startsWith('/v2/absolute/')) [status, extra.Location] = [302, 'http://content.example.com/pulp/content/x'];
      if (url.startsWith('/v2/notmodified/') && req.headers['if-none-match'] === '"v1"') {
        // RFC 9110 §8.6: a 304 may carry the Content-Length of the representation; it has no body.
        res.writeHead(304, { ETag: '"v1"', 'Content-Length': String(Buffer.byteLength(body)), 'Docker-Distribution-API-Version': 'registry/2.0' });
        res.end();
        return;
      }
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Docker-Distribution-API-Version': 'registry/2.0', ...extra });
      res.end(body);
    });
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const close = server.close.bind(server);
  server.close = ((cb?: (err?: Error) => void) => {
    for (const s of sockets) s.destroy();
    return close(cb);
  }) as typeof server.close;
  return server;
}

function listen(server: http.Server, where: string | number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    if (typeof where === 'string') server.listen(where, () => resolve());
    else server.listen(where, '127.0.0.1', () => resolve());
  });
}

async function gateway(tt: Tap, name: string, pulpcoreEndpoint: string): Promise<RunningProxyd> {
  const p = await startProxyd({
    https: true,
    http: false,
    fixtures: false,
    settings: { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca, trusted_hosts: ['foreman.example.com'], log_level: 'INFO' },
    plugins: {
      container_gateway: {
        enabled: true,
        // The registry backend is not used here; the pulpcore route has its own endpoint.
        pulp_endpoint: 'http://127.0.0.1:9/',
        pulp_registry_path: '/v2/',
        sqlite_db_path: join(work, `${name}.db`),
        pulpcore_api_endpoint: pulpcoreEndpoint,
        upstream_connect_timeout: 2,
        upstream_response_timeout: 5,
        upstream_idle_timeout: 5,
      },
    },
  });
  tt.teardown(async () => {
    await p.stop();
    rmSync(p.dir, { recursive: true, force: true });
  });
  return p;
}

function call(p: RunningProxyd, path: string, opts: { method?: string; client?: CertPair; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return request(`${p.httpsUrl}${path}`, {
    method: opts.method ?? 'GET',
    ca: pki.ca,
    headers: opts.headers ?? {},
    ...(opts.client ? { client: opts.client } : {}),
    ...(opts.body !== undefined ? { body: opts.body } : {}),
    timeoutMs: 15_000,
  });
}

function echoed(tt: Tap, r: Reply): Echo {
  tt.equal(r.status, 200, `reached the backend: ${r.status} ${r.body.slice(0, 300)}`);
  return r.json() as Echo;
}

const IDENTITY_CLAIMS: Record<string, string> = {
  REMOTE_USER: 'admin',
  'Remote-User': 'admin',
  'X-Remote-User': 'admin',
  'X-Forwarded-User': 'admin',
};

/** The whole behaviour, against one backend transport. */
async function behaviour(t: Tap, p: RunningProxyd, transport: string): Promise<void> {
  await t.test(`${transport}: GET reaches the backend under /v2/ with Remote-User = the verified CN`, async (t) => {
    const e = echoed(t, await call(p, '/pulpcore_registry/v2/foo/manifests/bar', { client: capsule }));
    t.equal(e.method, 'GET');
    t.equal(e.url, '/v2/foo/manifests/bar');
    t.equal(e.headers['remote-user'], 'capsule.example.com', 'Remote-User is the CN');
    t.equal(e.rawHeaderNames.filter((h) => h.toLowerCase() === 'remote-user').length, 1, 'exactly one Remote-User header');
    t.equal(e.headers.remote_user, undefined, 'no REMOTE_USER');
    t.ok(e.headers['x-request-id'], 'the request id is passed on');

    const q = echoed(t, await call(p, '/pulpcore_registry/v2/foo/tags/list?n=2&last=a', { client: capsule }));
    t.equal(q.url, '/v2/foo/tags/list?n=2&last=a', 'the query string is kept');
    const root = echoed(t, await call(p, '/pulpcore_registry/v2/', { client: capsule }));
    t.equal(root.url, '/v2/', 'the /v2/ ping');
  });

  const clients: Array<[string, CertPair | undefined, string | undefined]> = [
    ['a verified CA-signed certificate', capsule, 'capsule.example.com'],
    ['no client certificate', undefined, undefined],
    ['a self-signed certificate with the same CN', rogueCapsule, undefined],
  ];
  for (const [who, client, expected] of clients) {
    await t.test(`${transport}: client-sent identity headers never get through (${who})`, async (t) => {
      for (const [name, value] of Object.entries(IDENTITY_CLAIMS)) {
        const e = echoed(t, await call(p, '/pulpcore_registry/v2/foo/manifests/bar', { ...(client ? { client } : {}), headers: { [name]: value } }));
        t.equal(e.headers['remote-user'], expected, `${name}: ${value} sent → remote_user ${expected ?? 'absent'}`);
        t.equal(e.headers.remote_user, undefined, `${name}: no remote_user header`);
        t.notOk(Object.values(e.headers).some((v) => v === 'admin' || (Array.isArray(v) && v.includes('admin'))), `${name}: the claimed name is nowhere in the backend's headers`);
      }
      // All at once, in both spellings, with the header repeated.
      const e = echoed(t, await call(p, '/pulpcore_registry/v2/foo/blobs/sha256:00', { ...(client ? { client } : {}), headers: { ...IDENTITY_CLAIMS, remote_user: 'root' } }));
      t.equal(e.headers['remote-user'], expected, `everything at once → remote_user ${expected ?? 'absent'}`);
      t.equal(e.rawHeaderNames.filter((h) => /^remote[_-]user$/i.test(h)).length, expected ? 1 : 0, 'at most the one header the gateway set');
    });
  }

  await t.test(`${transport}: a PUT body is streamed through`, async (t) => {
    const body = randomBytes(768 * 1024).toString('base64'); // ~1 MiB of ASCII
    const r = await call(p, '/pulpcore_registry/v2/foo/blobs/uploads/abc?digest=sha256:1', {
      method: 'PUT',
      client: capsule,
      headers: { 'Content-Type': 'application/octet-stream' },
      body,
    });
    const e = echoed(t, r);
    t.equal(e.method, 'PUT');
    t.equal(e.url, '/v2/foo/blobs/uploads/abc?digest=sha256:1');
    t.equal(e.bodyLength, Buffer.byteLength(body), 'the backend received the whole body');
    t.equal(e.bodySha256, createHash('sha256').update(body).digest('hex'), 'byte for byte');
    t.equal(e.headers['content-type'], 'application/octet-stream');
    t.equal(e.headers['remote-user'], 'capsule.example.com');

    // A chunked body (no Content-Length).
    const chunked = await chunkedPut(p, '/pulpcore_registry/v2/foo/blobs/uploads/def', ['abc', 'defg', 'h'.repeat(100_000)]);
    t.equal(chunked.status, 200, chunked.body.slice(0, 200));
    const c = chunked.json() as Echo;
    t.equal(c.method, 'PUT');
    t.equal(c.bodyLength, 3 + 4 + 100_000, 'a chunked body arrives whole');

    // Streamed, not buffered: the backend has the first half before the client sends the second.
    const half = 'x'.repeat(256 * 1024);
    const streamed = await chunkedPut(p, '/pulpcore_registry/v2/foo/blobs/uploads/streamed', [half, half], (sent) => backendReceived('/v2/foo/blobs/uploads/streamed', sent, 10_000));
    t.equal(streamed.status, 200, streamed.body.slice(0, 200));
    t.equal((streamed.json() as Echo).bodyLength, 2 * half.length, 'the backend received both halves');

    // A client that sends Expect: 100-continue and waits for it before the body (as curl does for large bodies).
    const expectBody = 'e'.repeat(300_000);
    const expected = await expectContinuePut(p, '/pulpcore_registry/v2/foo/blobs/uploads/expect', expectBody);
    t.equal(expected.status, 200, expected.body.slice(0, 200));
    t.equal((expected.json() as Echo).bodyLength, expectBody.length, 'Expect: 100-continue: the body arrives whole');
  });

  await t.test(`${transport}: HEAD answers with the backend's head (Content-Length, no body)`, async (t) => {
    // podman/skopeo HEAD manifests and blobs; the backend announces a Content-Length and sends no body.
    for (const path of ['/pulpcore_registry/v2/foo/manifests/bar', '/pulpcore_registry/v2/foo/blobs/sha256:00']) {
      let r: Reply | undefined;
      try {
        r = await call(p, path, { method: 'HEAD', client: capsule });
      } catch (err) {
        t.fail(`HEAD ${path}: no answer (${(err as Error).message})`);
      }
      if (!r) continue;
      t.equal(r.status, 200, `HEAD ${path}: 200`);
      t.match(r.headers['content-type'], /application\/json/, 'the backend\'s Content-Type');
      t.match(r.headers['content-length'], /^[1-9]\d*$/, 'the backend\'s Content-Length');
      t.equal(r.body, '', 'no body');
    }
    const health = await call(p, '/healthz');
    t.equal(health.status, 200, 'still serving');
  });

  await t.test(`${transport}: a 304 Not Modified with a Content-Length passes through`, async (t) => {
    let r: Reply | undefined;
    try {
      r = await call(p, '/pulpcore_registry/v2/notmodified/manifests/v1', { client: capsule, headers: { 'If-None-Match': '"v1"' } });
    } catch (err) {
      t.fail(`no answer (${(err as Error).message})`);
    }
    if (r) {
      t.equal(r.status, 304);
      t.equal(r.headers.etag, '"v1"');
      t.equal(r.body, '');
    }
    const fresh = echoed(t, await call(p, '/pulpcore_registry/v2/notmodified/manifests/v1', { client: capsule }));
    t.equal(fresh.url, '/v2/notmodified/manifests/v1', 'without If-None-Match: the full answer');
  });

  await t.test(`${transport}: a relative Location /v2/... comes back under /pulpcore_registry/v2/`, async (t) => {
    const r = await call(p, '/pulpcore_registry/v2/redirect/manifests/latest', { client: capsule });
    t.equal(r.status, 302, r.body.slice(0, 200));
    t.equal(r.headers.location, '/pulpcore_registry/v2/x');
    const created = await call(p, '/pulpcore_registry/v2/created/blobs/uploads/', { method: 'POST', client: capsule });
    t.equal(created.status, 201);
    t.equal(created.headers.location, '/pulpcore_registry/v2/x?upload=1', 'the query string is kept');
    const abs = await call(p, '/pulpcore_registry/v2/absolute/blobs/sha256:00', { client: capsule });
    t.equal(abs.status, 302);
    t.equal(abs.headers.location, 'http://content.example.com/pulp/content/x', 'an absolute Location is left alone');
  });
}

/**
 * A PUT with Transfer-Encoding: chunked through the daemon. Before each chunk
 * after the first, `between(sentSoFar)` is awaited (to watch the backend).
 */
function chunkedPut(p: RunningProxyd, path: string, chunks: string[], between?: (sent: number) => Promise<void>): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${p.httpsUrl}${path}`, { method: 'PUT', agent: false, ca: readFileSync(pki.ca), cert: readFileSync(capsule.cert), key: readFileSync(capsule.key) }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(parts).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) });
      });
    });
    req.setTimeout(15_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    (async () => {
      let sent = 0;
      for (const [i, c] of chunks.entries()) {
        if (i > 0 && between) await between(sent);
        req.write(c);
        sent += Buffer.byteLength(c);
      }
      req.end();
    })().catch((err: Error) => req.destroy(err));
  });
}

/** A PUT with `Expect: 100-continue` whose body is written only once the daemon says 100 Continue. */
function expectContinuePut(p: RunningProxyd, path: string, body: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${p.httpsUrl}${path}`, {
      method: 'PUT',
      agent: false,
      ca: readFileSync(pki.ca),
      cert: readFileSync(capsule.cert),
      key: readFileSync(capsule.key),
      headers: { Expect: '100-continue', 'Content-Length': String(Buffer.byteLength(body)) },
    }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, json: () => JSON.parse(text) });
      });
    });
    req.setTimeout(15_000, () => req.destroy(new Error('timeout: no 100 Continue or no answer')));
    req.on('error', reject);
    req.on('continue', () => req.end(body));
  });
}

/** Resolves once the backend has received at least `bytes` of the body of `url`; rejects after `ms`. */
function backendReceived(url: string, bytes: number, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = (u: string, total: number) => {
      if (u === url && total >= bytes) done(resolve);
    };
    const timer = setTimeout(() => done(() => reject(new Error(`the backend had not received ${bytes} bytes of ${url} after ${ms} ms: the body is not streamed`))), ms);
    const done = (f: () => void) => {
      clearTimeout(timer);
      progress.off('data', check);
      f();
    };
    progress.on('data', check);
  });
}

t.test('pulpcore_api_endpoint on a unix socket', async (t) => {
  const socketPath = join(work, 'pulp.sock');
  const server = echoServer();
  await listen(server, socketPath);
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const p = await gateway(t, 'unix', `unix:${socketPath}`);
  await behaviour(t, p, 'unix socket');
  const health = await call(p, '/healthz');
  t.equal(health.status, 200);
});

t.test('pulpcore_api_endpoint over TCP', async (t) => {
  const server = echoServer();
  await listen(server, 0);
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;
  const p = await gateway(t, 'tcp', `http://127.0.0.1:${port}`);
  await behaviour(t, p, 'TCP');
});

t.test('the backend is down: 502 with an OCI body, not a hang', async (t) => {
  const p = await gateway(t, 'down', `unix:${join(work, 'nobody-listens.sock')}`);
  const r = await call(p, '/pulpcore_registry/v2/foo/manifests/bar', { client: capsule });
  t.equal(r.status, 502, r.body);
  t.match(r.json(), { errors: [{ code: 'UNAVAILABLE' }] });
});
