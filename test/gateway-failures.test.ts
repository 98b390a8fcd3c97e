// The content backend misbehaves (registry-clients.md §6): whatever it does,
// a registry client of the gateway gets an answer or a closed connection within
// its timeout, never a hang. A real docker-registry for the 416 pitfall and
// ranges; a scripted faulty backend (a raw `net` server: a registry that fails
// on purpose cannot be made from the real one) for cut, silent and stalled
// answers; a port with nothing listening. Every client request here has its
// own 15 s deadline, so a hang shows up as a failure, not as a stuck run.
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, layoutBlobPath, layoutManifest, pushImage } from './helpers/images.ts';
import { startKatelloDouble } from './helpers/katello-double.ts';
import { makePki } from './helpers/pki.ts';
import { freePort, startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const CLIENT_DEADLINE_MS = 15_000;
/** Short upstream timeouts, in seconds, for the faulty backends. */
const CONNECT_S = 1;
const RESPONSE_S = 1.5;
const IDLE_S = 2;

const work = mkdtempSync(join(tmpdir(), 'proxyd-gw-fail-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();
t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));
const foreman = pki.client('foreman.example.com');
// Smart-proxy mode (the management routes exist only there): a Katello double as foreman_url.
const katello = await startKatelloDouble();
t.teardown(() => katello.stop());

/** An HTTPS daemon with the gateway in front of `pulpEndpoint`, stopped (and its dir removed) at teardown. */
async function gateway(tt: Tap, name: string, pulpEndpoint: string, timeouts: { connect: number; response: number; idle: number }): Promise<RunningProxyd> {
  const p = await startProxyd({
    https: true,
    http: false,
    fixtures: false,
    settings: { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca, trusted_hosts: ['foreman.example.com'], foreman_url: katello.url, log_level: 'INFO' },
    plugins: {
      container_gateway: {
        enabled: true,
        pulp_endpoint: pulpEndpoint,
        pulp_registry_path: '/v2/',
        sqlite_db_path: join(work, `${name}.db`),
        upstream_connect_timeout: timeouts.connect,
        upstream_response_timeout: timeouts.response,
        upstream_idle_timeout: timeouts.idle,
      },
    },
  });
  tt.teardown(async () => {
    await p.stop();
    rmSync(p.dir, { recursive: true, force: true });
  });
  return p;
}

/** Register public repositories, as Katello does after a sync. */
async function registerPublic(tt: Tap, p: RunningProxyd, names: string[]): Promise<void> {
  const r = await request(`${p.httpsUrl}/container_gateway/repository_list/`, {
    method: 'PUT',
    ca: pki.ca,
    client: foreman,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ repositories: names.map((repository) => ({ repository, auth_required: false })) }),
  });
  tt.equal(r.status, 200, `repository_list: ${r.status} ${r.body}`);
}

async function healthy(tt: Tap, p: RunningProxyd, after: string): Promise<void> {
  const r = await request(`${p.httpsUrl}/healthz`, { ca: pki.ca, timeoutMs: CLIENT_DEADLINE_MS });
  tt.equal(r.status, 200, `after ${after}: GET /healthz answers 200`);
}

interface Outcome {
  /** 0 when no response head arrived. */
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** end: the body completed; cut: the connection closed/errored mid-body; error: no response; deadline: our 15 s ran out. */
  end: 'end' | 'cut' | 'error' | 'deadline';
  error?: string;
  /** ms until the response head, and until the end. */
  headMs?: number;
  ms: number;
}

/** A GET that never rejects and never waits more than 15 s. */
function fetch(url: string, headers: Record<string, string> = {}): Promise<Outcome> {
  const started = Date.now();
  return new Promise((resolve) => {
    let out: Omit<Outcome, 'end' | 'ms'> = { status: 0, headers: {}, body: Buffer.alloc(0) };
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (end: Outcome['end'], error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      req.destroy();
      resolve({ ...out, body: Buffer.concat(chunks), end, ...(error ? { error } : {}), ms: Date.now() - started });
    };
    const req = https.request(url, { ca: readFileSync(pki.ca), agent: false, headers }, (res) => {
      out = { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.alloc(0), headMs: Date.now() - started };
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => finish('end'));
      res.on('error', (e) => finish('cut', e.message));
      res.on('close', () => finish(res.complete ? 'end' : 'cut', 'closed'));
    });
    const deadline = setTimeout(() => finish('deadline', `no end within ${CLIENT_DEADLINE_MS} ms`), CLIENT_DEADLINE_MS);
    req.on('error', (e) => finish(out.status ? 'cut' : 'error', e.message));
    req.end();
  });
}

function describe(o: Outcome): string {
  return `${o.end} status=${o.status} bytes=${o.body.length} in ${o.ms} ms${o.error ? ` (${o.error})` : ''} ${o.body.length < 400 ? o.body.toString('utf8') : ''}`;
}

/** An OCI error answer with this status and code. */
function ociError(tt: Tap, o: Outcome, status: number, code: string): void {
  tt.not(o.end, 'deadline', `no hang: ${describe(o)}`);
  tt.equal(o.status, status, `status ${status}: ${describe(o)}`);
  tt.equal(o.end, 'end', 'a complete answer');
  tt.match(o.headers['content-type'], /^application\/json/, 'a JSON body');
  let body: unknown;
  try {
    body = JSON.parse(o.body.toString('utf8'));
  } catch {
    tt.fail(`not JSON: ${o.body.toString('utf8').slice(0, 200)}`);
  }
  tt.match(body, { errors: [{ code, message: String }] }, `an OCI {"errors":[...]} body with code ${code}`);
  if (o.headers['content-length'] !== undefined) tt.equal(Number(o.headers['content-length']), o.body.length, 'Content-Length matches the body');
}

/** A response that was cut: fewer bytes than announced, the connection closed or errored, all within the deadline. */
function cut(tt: Tap, o: Outcome, announced: number): void {
  tt.not(o.end, 'deadline', `no hang: ${describe(o)}`);
  tt.equal(o.end, 'cut', `the response is cut (error or premature close): ${describe(o)}`);
  tt.ok(o.body.length < announced, `fewer bytes (${o.body.length}) than the ${announced} announced`);
}

/** Upstream timeouts the proxy logged after `mark` (an index into its log lines). */
function timeoutsLogged(p: RunningProxyd, mark: number): string[] {
  return p.lines.slice(mark).filter((line) => /went idle for|within \d+ ms|took over \d+ ms/.test(line));
}

t.test('a real docker-registry: the unsatisfiable Range pitfall, and a normal Range', async (t) => {
  const registry = await startRegistry();
  t.teardown(() => registry.stop());
  const image = await buildImage(join(work, 'images'), { name: 'ranges', files: { '/etc/hello.txt': 'ranges\n' }, randomBytes: 200 * 1024 });
  const NAME = 'default_organization/product/ranges';
  await pushImage(image.ref, `${registry.host}/${NAME}:v1`);
  const layer = layoutManifest(image.layout).manifest.layers[0]!;
  const blob = readFileSync(layoutBlobPath(image.layout, layer.digest));
  t.equal(blob.length, layer.size);

  // The premise, straight from docker-registry: 416, the whole blob's length announced, a short body, then close.
  const direct = await rawExchange(registry.port, `GET /v2/${NAME}/blobs/${layer.digest} HTTP/1.1\r\nHost: ${registry.host}\r\nRange: bytes=999999999-\r\n\r\n`);
  t.match(direct.head, /^HTTP\/1\.1 416 /, 'docker-registry answers 416');
  const announced = Number(/\r\ncontent-length:\s*(\d+)/i.exec(direct.head)?.[1]);
  t.equal(announced, blob.length, 'with the full blob length as Content-Length');
  t.ok(direct.body.length < announced, `and a short body (${direct.body.length} bytes), then closes`);

  // Upstream timeouts longer than the client's deadline: an answer at all did not come from a timeout rescuing a stuck stream.
  const p = await gateway(t, 'registry', registry.url, { connect: CONNECT_S, response: 60, idle: 60 });
  await registerPublic(t, p, [NAME]);
  const url = `${p.httpsUrl}/v2/${NAME}/blobs/${layer.digest}`;

  await t.test('Range: bytes=999999999- → 416 with an OCI body, before any upstream timeout', async (t) => {
    const mark = p.lines.length;
    const o = await fetch(url, { Range: 'bytes=999999999-' });
    ociError(t, o, 416, 'RANGE_INVALID');
    t.same(timeoutsLogged(p, mark), [], 'no upstream timeout was involved');
    await healthy(t, p, 'the 416');
  });

  await t.test('Range: bytes=10-99 → 206 with exactly those bytes', async (t) => {
    const o = await fetch(url, { Range: 'bytes=10-99' });
    t.equal(o.end, 'end', describe(o));
    t.equal(o.status, 206);
    t.equal(o.headers['content-range'], `bytes 10-99/${blob.length}`);
    t.equal(o.headers['content-length'], '90');
    t.equal(o.body.length, 90);
    t.ok(o.body.equals(blob.subarray(10, 100)), 'the bytes are the blob\'s bytes 10..99');
    t.equal(o.headers['docker-content-digest'], layer.digest);
  });

  await t.test('no Range → 200 with the whole blob', async (t) => {
    const o = await fetch(url);
    t.equal(o.end, 'end', describe(o));
    t.equal(o.status, 200);
    t.equal(Number(o.headers['content-length']), blob.length);
    t.ok(o.body.equals(blob), 'byte for byte');
  });

  await t.test('the 416 again, then a normal request: the pool is not poisoned', async (t) => {
    for (let i = 0; i < 3; i++) ociError(t, await fetch(url, { Range: 'bytes=999999999-' }), 416, 'RANGE_INVALID');
    const o = await fetch(url, { Range: 'bytes=0-9' });
    t.equal(o.status, 206, describe(o));
    t.ok(o.body.equals(blob.subarray(0, 10)));
    await healthy(t, p, 'repeated 416s');
  });
});

/** One raw HTTP exchange with a server that closes: the head and the body bytes that arrived. */
function rawExchange(port: number, text: string): Promise<{ head: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('no close within 15 s'));
    }, CLIENT_DEADLINE_MS);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      resolve({ head: all.subarray(0, split).toString('latin1'), body: all.subarray(split + 4) });
    });
    s.end(text);
  });
}

// ---------------------------------------------------------------------------
// The scripted faulty backend: what it does depends on the repository name.
// ---------------------------------------------------------------------------

const FAULTY = {
  cut: 'faulty/cut', // 200, Content-Length 1000000, 1000 bytes, then the socket is destroyed
  silent: 'faulty/silent', // accepts, reads the request, never answers
  stall: 'faulty/stall', // 200, Content-Length 1000000, 1000 bytes, then nothing
  short416: 'faulty/short416', // docker-registry's 416 shape, scripted
  ok: 'faulty/ok', // a correct 200 with 1000 bytes, keep-alive
} as const;
const ANNOUNCED = 1_000_000;
const SENT = 1000;
const DIGEST = `sha256:${'ab'.repeat(32)}`;

interface Faulty {
  port: number;
  requests: string[];
  /** 'request' (target) when a request arrives; 'closed' (target) when the connection that carried it closes. */
  events: EventEmitter;
  close(): Promise<void>;
}

function startFaulty(): Promise<Faulty> {
  const sockets = new Set<net.Socket>();
  const requests: string[] = [];
  const events = new EventEmitter();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      // One request at a time per connection (the gateway keeps connections alive).
      while (buf.includes('\r\n\r\n')) {
        const end = buf.indexOf('\r\n\r\n');
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const target = head.split(' ')[1] ?? '';
        requests.push(head.split('\r\n')[0]!);
        socket.once('close', () => events.emit('closed', target));
        events.emit('request', target);
        answer(socket, target);
      }
    });
  });
  const payload = Buffer.alloc(SENT, 0x61);
  function answer(socket: net.Socket, target: string): void {
    const headers = (status: string, length: number, type = 'application/octet-stream') =>
      `HTTP/1.1 ${status}\r\nContent-Type: ${type}\r\nContent-Length: ${length}\r\nConnection: keep-alive\r\n\r\n`;
    if (target.startsWith(`/v2/${FAULTY.cut}/`)) {
      socket.write(headers('200 OK', ANNOUNCED));
      socket.write(payload, () => setTimeout(() => socket.destroy(), 50));
    } else if (target.startsWith(`/v2/${FAULTY.silent}/`)) {
      // nothing, ever
    } else if (target.startsWith(`/v2/${FAULTY.stall}/`)) {
      socket.write(headers('200 OK', ANNOUNCED));
      socket.write(payload);
    } else if (target.startsWith(`/v2/${FAULTY.short416}/`)) {
      socket.write(headers('416 Requested Range Not Satisfiable', ANNOUNCED, 'text/plain; charset=utf-8'));
      socket.end('invalid range: failed to overlap\n');
    } else if (target.startsWith(`/v2/${FAULTY.ok}/`)) {
      socket.write(headers('200 OK', SENT));
      socket.write(payload);
    } else {
      const body = JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: 'not here' }] });
      socket.write(headers('404 Not Found', Buffer.byteLength(body), 'application/json'));
      socket.write(body);
    }
  }
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as net.AddressInfo).port,
        requests,
        events,
        close: () =>
          new Promise<void>((res) => {
            for (const s of sockets) s.destroy();
            server.close(() => res());
          }),
      });
    });
  });
}

t.test('a scripted faulty backend', async (t) => {
  const faulty = await startFaulty();
  t.teardown(() => faulty.close());
  const p = await gateway(t, 'faulty', `http://127.0.0.1:${faulty.port}`, { connect: CONNECT_S, response: RESPONSE_S, idle: IDLE_S });
  await registerPublic(t, p, Object.values(FAULTY));
  const blobUrl = (name: string) => `${p.httpsUrl}/v2/${name}/blobs/${DIGEST}`;

  await t.test('the backend itself works: a correct blob passes through', async (t) => {
    const o = await fetch(blobUrl(FAULTY.ok));
    t.equal(o.end, 'end', describe(o));
    t.equal(o.status, 200);
    t.equal(o.body.length, SENT);
  });

  await t.test('200 with Content-Length 1000000, 1000 bytes, then the socket is destroyed: the client\'s response is cut', async (t) => {
    const mark = p.lines.length;
    const o = await fetch(blobUrl(FAULTY.cut));
    t.equal(o.status, 200, 'the head had been sent');
    t.equal(o.headers['content-length'], String(ANNOUNCED), 'with the announced length');
    cut(t, o, ANNOUNCED);
    t.same(timeoutsLogged(p, mark), [], 'cut because the backend hung up, not by a timeout');
    await healthy(t, p, 'a cut body');
  });

  await t.test('a backend that accepts and never answers: 504 UNAVAILABLE after upstream_response_timeout', async (t) => {
    const o = await fetch(blobUrl(FAULTY.silent));
    ociError(t, o, 504, 'UNAVAILABLE');
    t.match(o.body.toString('utf8'), `within ${RESPONSE_S * 1000} ms`, 'the response timeout is what answered');
    const manifest = await fetch(`${p.httpsUrl}/v2/${FAULTY.silent}/manifests/latest`);
    ociError(t, manifest, 504, 'UNAVAILABLE');
    await healthy(t, p, 'a silent backend');
  });

  await t.test('a backend that sends the head and stalls mid-body: cut after upstream_idle_timeout', async (t) => {
    const mark = p.lines.length;
    const o = await fetch(blobUrl(FAULTY.stall));
    t.equal(o.status, 200, 'the head had been sent');
    cut(t, o, ANNOUNCED);
    t.equal(o.body.length, SENT, 'the bytes that did arrive were passed on');
    // The client sees the cut before the daemon's log line reaches us: poll for it, bounded.
    const idleLogged = () => timeoutsLogged(p, mark).some((line) => line.includes(`went idle for ${IDLE_S * 1000} ms`));
    for (let i = 0; i < 100 && !idleLogged(); i++) await new Promise((r) => setTimeout(r, 50));
    t.ok(
      idleLogged(),
      `cut by upstream_idle_timeout, as the log says (${timeoutsLogged(p, mark).join(' | ') || 'nothing logged'})`,
    );
    await healthy(t, p, 'a stalled body');
  });

  await t.test('manifests and tag lists from a cut or stalled backend: 502 with an OCI body, never a hang', async (t) => {
    for (const name of [FAULTY.cut, FAULTY.stall]) {
      for (const path of [`/v2/${name}/manifests/latest`, `/v2/${name}/tags/list`]) {
        const o = await fetch(`${p.httpsUrl}${path}`);
        ociError(t, o, 502, 'UNAVAILABLE');
      }
    }
    await healthy(t, p, 'cut and stalled manifests');
  });

  await t.test('a scripted 416 with the full Content-Length and a short body, then close: 416 OCI, before any upstream timeout', async (t) => {
    const mark = p.lines.length;
    const o = await fetch(blobUrl(FAULTY.short416), { Range: 'bytes=999999999-' });
    ociError(t, o, 416, 'RANGE_INVALID');
    t.same(timeoutsLogged(p, mark), [], 'no upstream timeout was involved');
    await healthy(t, p, 'a scripted 416');
  });

  await t.test('several failures at once, then a correct request: still served', async (t) => {
    const all = await Promise.all([
      fetch(blobUrl(FAULTY.cut)),
      fetch(blobUrl(FAULTY.silent)),
      fetch(blobUrl(FAULTY.stall)),
      fetch(blobUrl(FAULTY.short416), { Range: 'bytes=999999999-' }),
      fetch(blobUrl(FAULTY.cut)),
    ]);
    for (const o of all) t.not(o.end, 'deadline', `no hang: ${describe(o)}`);
    cut(t, all[0]!, ANNOUNCED);
    ociError(t, all[1]!, 504, 'UNAVAILABLE');
    cut(t, all[2]!, ANNOUNCED);
    ociError(t, all[3]!, 416, 'RANGE_INVALID');
    cut(t, all[4]!, ANNOUNCED);
    const ok = await fetch(blobUrl(FAULTY.ok));
    t.equal(ok.end, 'end', describe(ok));
    t.equal(ok.status, 200);
    t.equal(ok.body.length, SENT);
    await healthy(t, p, 'a burst of failures');
  });

  t.ok(faulty.requests.every((r) => r.startsWith('GET /v2/faulty/')), 'the backend only saw blob/manifest GETs under pulp_registry_path');
});

/** Resolves with the ms until `events` emits `name` for a target starting with `prefix`; rejects after 15 s. */
function nextEvent(events: EventEmitter, name: string, prefix: string): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const on = (target: string) => {
      if (!target.startsWith(prefix)) return;
      clearTimeout(timer);
      events.off(name, on);
      resolve(Date.now() - started);
    };
    const timer = setTimeout(() => {
      events.off(name, on);
      reject(new Error(`no '${name}' for ${prefix} within ${CLIENT_DEADLINE_MS} ms`));
    }, CLIENT_DEADLINE_MS);
    events.on(name, on);
  });
}

t.test('the client goes away: the upstream request is aborted, not left to the timeouts', async (t) => {
  const faulty = await startFaulty();
  t.teardown(() => faulty.close());
  // Upstream timeouts longer than the wait for the backend's close (CLIENT_DEADLINE_MS): only the client's departure can close it in time.
  const p = await gateway(t, 'abort', `http://127.0.0.1:${faulty.port}`, { connect: CONNECT_S, response: 60, idle: 60 });
  await registerPublic(t, p, Object.values(FAULTY));

  for (const [what, name, waitForHead] of [
    ['while the backend is silent', FAULTY.silent, false],
    ['while the backend stalls mid-body', FAULTY.stall, true],
  ] as const) {
    await t.test(what, async (t) => {
      const prefix = `/v2/${name}/`;
      const arrived = nextEvent(faulty.events, 'request', prefix);
      const closed = nextEvent(faulty.events, 'closed', prefix);
      const head = new Promise<void>((resolve) => {
        const req = https.request(`${p.httpsUrl}/v2/${name}/blobs/${DIGEST}`, { ca: readFileSync(pki.ca), agent: false }, (res) => {
          res.once('data', () => {
            req.destroy();
            resolve();
          });
          res.on('error', () => {});
        });
        req.on('error', () => {});
        req.end();
        if (!waitForHead) void arrived.then(() => setTimeout(() => {
          req.destroy();
          resolve();
        }, 200));
      });
      await arrived;
      await head;
      const mark = p.lines.length;
      await closed.then(
        () => t.pass('the backend connection closed after the client left'),
        (err: Error) => t.fail(err.message),
      );
      t.same(timeoutsLogged(p, mark), [], 'not by an upstream timeout');
      await healthy(t, p, `a client leaving ${what}`);
    });
  }
});

t.test('nothing listening on the backend port: 502 with an OCI body', async (t) => {
  const port = await freePort();
  const p = await gateway(t, 'nothing', `http://127.0.0.1:${port}`, { connect: CONNECT_S, response: RESPONSE_S, idle: IDLE_S });
  await registerPublic(t, p, ['nothing/here']);
  for (const path of [`/v2/nothing/here/blobs/${DIGEST}`, '/v2/nothing/here/manifests/latest', '/v2/nothing/here/tags/list']) {
    const o = await fetch(`${p.httpsUrl}${path}`);
    ociError(t, o, 502, 'UNAVAILABLE');
    t.match(o.body.toString('utf8'), 'ECONNREFUSED', `${path}: the refused connection is what answered`);
  }
  await healthy(t, p, 'a refused connection');
});
