// Requests that used to crash or corrupt the embedded store, each repeated
// against the real daemon: malformed percent-escapes and Host headers (400,
// never 500, no stack trace logged), manifests PUT with a type that is not a
// manifest's or that re-labels stored bytes (400 MANIFEST_INVALID, the stored
// type kept), a final upload PUT whose Content-Range does not continue the
// upload (416). After each, the database and the files of the store are
// exactly what they were.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import t from 'tap';
import { sha256, startLocalRegistry, type Answer } from './helpers/local-registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

const registry = await startLocalRegistry();
t.teardown(() => registry.stop());
const { call, base, proxyd } = registry;
await registry.addUser('alice', 'alice-pw');
const repo = 'alice/app';
const token = await registry.tokenFor('alice', 'alice-pw', repo);

// An image in the store, so that attacks have something to damage.
const config = await registry.pushBlob(repo, token, Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'));
const layer = await registry.pushBlob(repo, token, randomBytes(2048));
const descriptors = { config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }] };
/** A manifest without a mediaType field: only its Content-Type says what it is. */
const untyped = Buffer.from(JSON.stringify({ schemaVersion: 2, ...descriptors }));
const first = await call('PUT', `/v2/${repo}/manifests/v1`, { token, body: untyped, headers: { 'Content-Type': OCI_MANIFEST } });
if (first.status !== 201) throw new Error(`PUT manifest: ${first.status} ${first.text}`);

function ociError(t: Tap, res: Answer, status: number, code: string, what: string): void {
  t.equal(res.status, status, `${what} → ${status} (${res.text.slice(0, 160)})`);
  let body: { errors?: Array<{ code?: string }> } = {};
  try {
    body = res.json();
  } catch {
    t.fail(`${what}: the body is JSON`);
  }
  t.equal(body.errors?.[0]?.code, code, `${what}: OCI error ${code}`);
}

/** Log records written since `from` at level error (50) or above, or carrying a stack. */
function errorsLoggedSince(from: number): string[] {
  return proxyd.lines.slice(from).filter((line) => /"level":(5|6)\d/.test(line) || line.includes('"stack"'));
}

/** Run `attack` twice; the store must be unchanged and nothing logged as an error. */
async function refusedTwice(t: Tap, attack: () => Promise<void>): Promise<void> {
  const before = await registry.snapshot();
  const logged = proxyd.lines.length;
  await attack();
  await attack();
  t.equal(await registry.snapshot(), before, 'the database and the files of the store are unchanged');
  t.same(errorsLoggedSince(logged), [], 'no error and no stack trace logged');
}

t.test('malformed percent-escapes in a /v2 path → 400 in the OCI form', async (t) => {
  await refusedTwice(t, async () => {
    for (const prefix of ['', '/container_gateway']) {
      ociError(t, await call('GET', `${prefix}/v2/alice/app/manifests/%E0%A4%A`, { token }), 400, 'MANIFEST_INVALID', `GET ${prefix}/v2/alice/app/manifests/%E0%A4%A`);
      ociError(t, await call('GET', `${prefix}/v2/alice/app/blobs/%ff`, { token }), 400, 'DIGEST_INVALID', `GET ${prefix}/v2/alice/app/blobs/%ff`);
    }
    ociError(t, await call('GET', '/v2/alice/app/manifests/%E0%A4%A'), 400, 'MANIFEST_INVALID', 'the same without a token');
    t.equal((await call('HEAD', '/v2/alice/app/blobs/%ff', { token })).status, 400, 'HEAD of a blob %ff → 400');
    ociError(t, await call('PUT', '/v2/alice/app/manifests/%ff', { token, body: untyped, headers: { 'Content-Type': OCI_MANIFEST } }), 400, 'MANIFEST_INVALID', 'PUT of a manifest %ff');
    ociError(t, await call('DELETE', '/v2/alice/app/manifests/%E0%A4%A', { token }), 400, 'MANIFEST_INVALID', 'DELETE of a manifest %E0%A4%A');
    ociError(t, await call('DELETE', '/v2/alice/app/blobs/%ff', { token }), 400, 'DIGEST_INVALID', 'DELETE of a blob %ff');
    ociError(t, await call('GET', '/v2/alice/app/referrers/%ff', { token }), 400, 'DIGEST_INVALID', 'referrers of %ff');
  });
  const still = await call('GET', `/v2/${repo}/manifests/v1`, { token });
  t.equal(still.status, 200, 'the image is still served');
});

t.test('a malformed Host header → 400, never 500', async (t) => {
  await refusedTwice(t, async () => {
    for (const host of ['a b', '[::1', 'a/b', 'x:99999999']) {
      ociError(t, await call('GET', '/v2/', { headers: { Host: host } }), 400, 'UNKNOWN', `GET /v2/ with Host: ${host}`);
      ociError(t, await call('GET', `/v2/${repo}/manifests/v1`, { token, headers: { Host: host } }), 400, 'UNKNOWN', `GET a manifest with Host: ${host}`);
      ociError(t, await call('POST', `/v2/${repo}/blobs/uploads/`, { token, headers: { Host: host } }), 400, 'UNKNOWN', `POST an upload with Host: ${host}`);
      const health = await call('GET', '/healthz', { headers: { Host: host } });
      t.equal(health.status, 200, `/healthz (which builds no URL from the Host) answers with Host: ${host}`);
    }
  });
  const ping = await call('GET', '/v2/', { headers: { Host: 'registry.example.com:5000' } });
  t.equal(ping.status, 401, 'a well-formed Host still gets its challenge');
  t.match(ping.headers['www-authenticate'], /realm="http:\/\/registry\.example\.com:5000\/v2\/token"/, 'with the realm at that host');
  const v6 = await call('GET', '/v2/', { headers: { Host: '[::1]:8080' } });
  t.equal(v6.status, 401, 'an IPv6 literal Host is well-formed');
});

t.test('a manifest PUT whose Content-Type is not a manifest media type → 400 MANIFEST_INVALID, nothing stored', async (t) => {
  const typed = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, ...descriptors, annotations: { n: '1' } }));
  await refusedTwice(t, async () => {
    for (const contentType of ['application/x-evil', 'text/html', 'text/html; charset=utf-8', 'application/json', 'application/octet-stream']) {
      for (const [what, body] of [['untyped', untyped], ['typed', typed]] as const) {
        const res = await call('PUT', `/v2/${repo}/manifests/evil`, { token, body, headers: { 'Content-Type': contentType } });
        ociError(t, res, 400, 'MANIFEST_INVALID', `PUT of the ${what} manifest as ${contentType}`);
      }
    }
    const html = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'text/html', ...descriptors }));
    ociError(t, await call('PUT', `/v2/${repo}/manifests/evil`, { token, body: html }), 400, 'MANIFEST_INVALID', 'no Content-Type, mediaType text/html');
    ociError(t, await call('PUT', `/v2/${repo}/manifests/evil`, { token, body: untyped }), 400, 'MANIFEST_INVALID', 'no Content-Type, no mediaType');
    ociError(t, await call('PUT', `/v2/${repo}/manifests/evil`, { token, body: typed, headers: { 'Content-Type': OCI_INDEX } }), 400, 'MANIFEST_INVALID', 'a Content-Type other than the body mediaType');
  });
  t.equal((await call('GET', `/v2/${repo}/manifests/evil`, { token })).status, 404, 'no tag "evil"');

  const res = await call('PUT', `/v2/${repo}/manifests/typed`, { token, body: typed });
  t.equal(res.status, 201, 'no Content-Type but a manifest mediaType in the body → 201');
  const get = await call('GET', `/v2/${repo}/manifests/typed`, { token });
  t.equal(get.headers['content-type'], OCI_MANIFEST, 'served with the body mediaType');
});

t.test('a stored manifest keeps its media type: re-PUT of the same bytes as another type → 400', async (t) => {
  const digest = sha256(untyped);
  await refusedTwice(t, async () => {
    for (const contentType of ['application/x-evil', 'text/html', DOCKER_MANIFEST]) {
      for (const reference of ['v1', digest, 'other-tag']) {
        const res = await call('PUT', `/v2/${repo}/manifests/${reference}`, { token, body: untyped, headers: { 'Content-Type': contentType } });
        ociError(t, res, 400, 'MANIFEST_INVALID', `re-PUT of ${digest.slice(0, 19)} at ${reference.slice(0, 19)} as ${contentType}`);
      }
    }
  });
  for (const reference of ['v1', digest]) {
    const pull = await call('GET', `/v2/${repo}/manifests/${reference}`, { token, headers: { Accept: `${OCI_MANIFEST}, ${DOCKER_MANIFEST}` } });
    t.equal(pull.status, 200, `pull of ${reference.slice(0, 19)} works`);
    t.equal(pull.headers['content-type'], OCI_MANIFEST, 'with the type of the first PUT');
    t.ok(pull.body.equals(untyped), 'and the same bytes');
  }
  const again = await call('PUT', `/v2/${repo}/manifests/v1-again`, { token, body: untyped, headers: { 'Content-Type': OCI_MANIFEST } });
  t.equal(again.status, 201, 'a re-PUT with the same type is fine (another tag)');
});

t.test('every response carries X-Content-Type-Options: nosniff', async (t) => {
  const answers: Array<[string, Answer]> = [
    ['GET /healthz', await call('GET', '/healthz')],
    ['GET /features', await call('GET', '/features')],
    ['GET /nowhere (404)', await call('GET', '/nowhere')],
    ['GET /v2/ (401)', await call('GET', '/v2/')],
    ['GET a manifest', await call('GET', `/v2/${repo}/manifests/v1`, { token })],
    ['HEAD a manifest', await call('HEAD', `/v2/${repo}/manifests/v1`, { token })],
    ['GET a blob', await call('GET', `/v2/${repo}/blobs/${layer.digest}`, { token })],
    ['GET a bad escape (400)', await call('GET', '/v2/alice/app/blobs/%ff', { token })],
    ['GET tags/list', await call('GET', `/v2/${repo}/tags/list`, { token })],
    ['GET /container_gateway/admin/users', await call('GET', '/container_gateway/admin/users')],
  ];
  for (const [what, res] of answers) t.equal(res.headers['x-content-type-options'], 'nosniff', `${what} (${res.status})`);
  // Answers Node itself gives, before any route: a request it cannot parse.
  for (const garbage of ['NOT HTTP AT ALL\r\n\r\n', 'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n']) {
    const raw = await rawExchange(garbage);
    t.match(raw, /^HTTP\/1\.1 400 /, `${JSON.stringify(garbage)} → 400`);
    t.match(raw, /\r\nX-Content-Type-Options: nosniff\r\n/i, 'with nosniff');
  }
});

/** Bytes in, everything the server sends until it closes. */
function rawExchange(bytes: string): Promise<string> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    let received = '';
    const socket = net.connect(Number(url.port), url.hostname, () => socket.write(bytes));
    socket.on('data', (d) => (received += d.toString()));
    socket.on('error', reject);
    socket.on('close', () => resolve(received));
  });
}

t.test('a final upload PUT whose Content-Range does not continue the upload → 416; the upload is unchanged', async (t) => {
  const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
  const chunks = [randomBytes(10), randomBytes(10)];
  const patch = await call('PATCH', start.headers.location!, { token, body: chunks[0]!, headers: { 'Content-Range': '0-9', 'Content-Type': 'application/octet-stream' } });
  t.equal(patch.status, 202);
  const location = new URL(patch.headers.location!, base);
  location.searchParams.set('digest', sha256(Buffer.concat(chunks)));
  const target = location.pathname + location.search;
  await refusedTwice(t, async () => {
    for (const range of ['0-9', '5-14', '11-20', '20-29']) {
      const res = await call('PUT', target, { token, body: chunks[1]!, headers: { 'Content-Range': range, 'Content-Type': 'application/octet-stream' } });
      ociError(t, res, 416, 'RANGE_INVALID', `final PUT with Content-Range ${range} of an upload holding 10 bytes`);
      t.equal(res.headers.range, '0-9', 'the answer says what the upload holds');
    }
    for (const range of ['bytes 10-19/20', '10-', '19-10']) {
      const res = await call('PUT', target, { token, body: chunks[1]!, headers: { 'Content-Range': range, 'Content-Type': 'application/octet-stream' } });
      ociError(t, res, 416, 'BLOB_UPLOAD_INVALID', `final PUT with a malformed Content-Range ${range}`);
    }
  });
  const status = await call('GET', location.pathname, { token });
  t.equal(status.status, 204, 'the session is still open');
  t.equal(status.headers.range, '0-9', 'and holds the first 10 bytes only');
  const done = await call('PUT', target, { token, body: chunks[1]!, headers: { 'Content-Range': '10-19', 'Content-Type': 'application/octet-stream' } });
  t.equal(done.status, 201, `the final PUT that continues the upload → 201 ${done.text}`);
  const blob = await call('GET', `/v2/${repo}/blobs/${sha256(Buffer.concat(chunks))}`, { token });
  t.ok(blob.body.equals(Buffer.concat(chunks)), 'the blob is the two chunks');
});
