// idle_timeout: a connection that moves no bytes for that long is closed; one
// that keeps moving is never cut, however long it takes. The daemon runs with
// idle_timeout: 2 s, so "longer than the limit" is cheap to show here
// (test/slow-client.test.ts shows the same beyond Node's old 300 s limit).
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import t from 'tap';
import { sha256, startLocalRegistry } from './helpers/local-registry.ts';
import { pacedDownload, pacedUpload, silentUpload } from './helpers/slow-client.ts';

const IDLE_SECONDS = 2;
const registry = await startLocalRegistry({ idle_timeout: IDLE_SECONDS });
t.teardown(() => registry.stop());
const { call, base } = registry;
await registry.addUser('alice', 'alice-pw');
const repo = 'alice/slow';
const token = await registry.tokenFor('alice', 'alice-pw', repo);
const auth = { Authorization: `Bearer ${token}` };

async function newUpload(): Promise<string> {
  const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
  if (start.status !== 202) throw new Error(`POST uploads: ${start.status} ${start.text}`);
  return new URL(start.headers.location!, base).href;
}

/** Resolves when the server closes a connection that has sent `bytes` (or nothing). */
function closedByServer(bytes: string): Promise<{ received: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => socket.write(bytes));
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    socket.on('error', reject);
    socket.on('close', () => resolve({ received }));
  });
}

t.test('a chunked PATCH that keeps moving (a byte every 0.5 s) for 6 × idle_timeout completes, and the blob is whole', async (t) => {
  const pieces = Array.from({ length: 6 * IDLE_SECONDS * 2 }, () => randomBytes(1));
  const location = await newUpload();
  const patch = await pacedUpload({ url: location, method: 'PATCH', headers: { ...auth, 'Content-Type': 'application/octet-stream' } }, pieces, 500);
  t.equal(patch.status, 202, `PATCH answered 202 after ${patch.seconds} s (${pieces.length} bytes, one every 0.5 s)`);
  t.equal(patch.headers?.range, `0-${pieces.length - 1}`, 'every byte arrived');
  const whole = Buffer.concat(pieces);
  const done = new URL(patch.headers!.location as string, base);
  done.searchParams.set('digest', sha256(whole));
  t.equal((await call('PUT', done.pathname + done.search, { token })).status, 201, 'the upload completes');
  const blob = await call('GET', `/v2/${repo}/blobs/${sha256(whole)}`, { token });
  t.ok(blob.body.equals(whole), 'the blob holds exactly the bytes sent');
});

t.test('a download read slowly for several idle timeouts completes with every byte', async (t) => {
  const bytes = randomBytes(24 * 1024 * 1024);
  const { digest } = await registry.pushBlob(repo, token, bytes);
  // 3 MiB/s: about 8 s, far longer than idle_timeout, with bytes moving all along.
  const got = await pacedDownload({ url: `${base}/v2/${repo}/blobs/${digest}`, method: 'GET', headers: auth }, 3 * 1024 * 1024);
  t.equal(got.status, 200, `the download ended after ${got.seconds} s`);
  t.equal(got.received, bytes.length, 'every byte arrived');
  t.equal(got.digest, digest, 'and they are the blob');
});

t.test('a PATCH that goes silent is closed without an answer; the upload keeps what it held before', async (t) => {
  const location = await newUpload();
  const first = randomBytes(10);
  const before = await call('PATCH', location, { token, body: first, headers: { 'Content-Type': 'application/octet-stream' } });
  t.equal(before.status, 202);
  const silent = await silentUpload({ url: new URL(before.headers.location!, base).href, method: 'PATCH', headers: { ...auth, 'Content-Type': 'application/octet-stream' } }, randomBytes(100));
  t.equal(silent.status, undefined, 'no answer: the server closed the connection');
  const status = await call('GET', new URL(before.headers.location!, base).pathname, { token });
  t.equal(status.status, 204);
  t.equal(status.headers.range, '0-9', 'the 100 bytes of the cut PATCH were not kept');
  const done = new URL(before.headers.location!, base);
  done.searchParams.set('digest', sha256(first));
  t.equal((await call('PUT', done.pathname + done.search, { token })).status, 201, 'the upload can still be completed');
  const health = await call('GET', '/healthz');
  t.equal(health.status, 200, 'the daemon is healthy');
});

t.test('a connection that sends nothing, or half of its headers, is closed', async (t) => {
  const nothing = await closedByServer('');
  t.equal(nothing.received, '', 'closed without a word');
  const half = await closedByServer(`GET /v2/ HTTP/1.1\r\nHost: ${new URL(base).host}\r\n`);
  t.equal(half.received, '', 'half a request: closed without an answer');
});

t.test('a kept-alive connection is closed once idle; the next request on a new one works', async (t) => {
  const closed = await closedByServer(`GET /healthz HTTP/1.1\r\nHost: ${new URL(base).host}\r\n\r\n`);
  t.match(closed.received, /^HTTP\/1\.1 200 /, 'the request was answered, then the idle connection closed');
  t.equal((await call('GET', '/healthz')).status, 200);
});
