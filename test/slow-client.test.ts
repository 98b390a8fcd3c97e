// A slow client beyond Node's old 300 s request limit: a chunked PATCH at
// 1 KiB/s and a download at 160 KiB/s, each for about 310 s, at the same time,
// against a daemon with default settings. Both complete with every byte.
// Meanwhile a client trickling its request headers a byte a second (slowloris)
// is answered 408 and closed: headers still have a bound.
// (This file takes over five minutes; the short-limit cases are in
// test/idle-timeout.test.ts.)
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import t from 'tap';
import { sha256, startLocalRegistry } from './helpers/local-registry.ts';
import { pacedDownload, pacedUpload } from './helpers/slow-client.ts';

const OLD_LIMIT_SECONDS = 300;
const RUN_SECONDS = OLD_LIMIT_SECONDS + 10;
t.setTimeout((RUN_SECONDS + 120) * 1000);

const registry = await startLocalRegistry();
t.teardown(() => registry.stop());
const { call, base } = registry;
await registry.addUser('alice', 'alice-pw');
const repo = 'alice/slow';
const token = await registry.tokenFor('alice', 'alice-pw', repo);
const auth = { Authorization: `Bearer ${token}` };

/** Send a request line and headers a byte a second, never ending them; resolves with what came back once the server closes. */
function trickleHeaders(): Promise<{ received: string; bytesSent: number }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const head = `GET /healthz HTTP/1.1\r\nHost: ${url.host}\r\nX-Slow: ${'a'.repeat(RUN_SECONDS)}`;
    let sent = 0;
    let received = '';
    const socket = net.connect(Number(url.port), url.hostname);
    const timer = setInterval(() => {
      if (sent < head.length) socket.write(head[sent++]!);
    }, 1000);
    socket.on('data', (d) => (received += d.toString()));
    socket.on('error', reject);
    socket.on('close', () => {
      clearInterval(timer);
      resolve({ received, bytesSent: sent });
    });
  });
}

t.test(`a 1 KiB/s chunked PATCH and a slow download, each for ${RUN_SECONDS} s, complete`, async (t) => {
  const download = randomBytes(RUN_SECONDS * 160 * 1024);
  const { digest: downloadDigest } = await registry.pushBlob(repo, token, download);
  const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
  t.equal(start.status, 202);
  const pieces = Array.from({ length: RUN_SECONDS }, () => randomBytes(1024));

  const [patch, got, slowloris] = await Promise.all([
    pacedUpload({ url: new URL(start.headers.location!, base).href, method: 'PATCH', headers: { ...auth, 'Content-Type': 'application/octet-stream' } }, pieces, 1000),
    pacedDownload({ url: `${base}/v2/${repo}/blobs/${downloadDigest}`, method: 'GET', headers: auth }, 160 * 1024),
    trickleHeaders(),
  ]);

  t.equal(patch.status, 202, `the PATCH was answered 202 after ${patch.seconds} s (not 408)`);
  const whole = Buffer.concat(pieces);
  t.equal(patch.headers?.range, `0-${whole.length - 1}`, 'every uploaded byte arrived');
  const done = new URL(patch.headers!.location as string, base);
  done.searchParams.set('digest', sha256(whole));
  t.equal((await call('PUT', done.pathname + done.search, { token })).status, 201, 'the upload completes');
  t.ok((await call('GET', `/v2/${repo}/blobs/${sha256(whole)}`, { token })).body.equals(whole), 'the blob holds exactly the bytes sent');

  t.equal(got.status, 200, `the download ended after ${got.seconds} s`);
  t.equal(got.received, download.length, 'every downloaded byte arrived');
  t.equal(got.digest, downloadDigest, 'and they are the blob');

  t.match(slowloris.received, /^HTTP\/1\.1 408 /, `headers trickled a byte a second: 408, then closed (after ${slowloris.bytesSent} bytes)`);
  t.ok(slowloris.bytesSent < RUN_SECONDS, 'before the client ran out of header bytes to send');
});
