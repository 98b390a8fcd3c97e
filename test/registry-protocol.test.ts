// The OCI Distribution Spec v1.1 protocol of the embedded content store
// (content_backend: local, standalone mode), request by request: every
// endpoint and error code of registry-clients.md §1–§3 and what the
// conformance suite checks (environment.md §8), against a real proxyd, with
// users made through the admin API and Bearer tokens from /v2/token, as real
// clients talk to it. Every response under /v2/ is recorded; the last test
// checks that each carried Docker-Distribution-API-Version and that each 4xx
// body had the OCI error shape.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startProxyd } from './helpers/proxyd.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
const DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
const MiB = 1024 * 1024;
/** The codes of registry-clients.md §2, plus two more of distribution/distribution (416 RANGE_INVALID, 400 PAGINATION_NUMBER_INVALID). */
const OCI_CODES = new Set([
  'BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS',
  'RANGE_INVALID', 'PAGINATION_NUMBER_INVALID',
]);

const work = mkdtempSync(join(tmpdir(), 'gw-protocol-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const proxyd = await startProxyd({
  fixtures: false,
  settings: { log_level: 'INFO' },
  plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'gw.db'), storage_path: join(work, 'storage') } },
});
t.teardown(() => proxyd.stop());
const base = proxyd.httpUrl;
const host = new URL(base).host;

// ---------------------------------------------------------------------------
// HTTP: raw bytes in and out, chunked bodies, every /v2/ answer recorded.
// ---------------------------------------------------------------------------

interface Res {
  method: string;
  url: string;
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json<T = any>(): T;
}

interface CallOptions {
  headers?: Record<string, string>;
  /** A body sent with Content-Length. */
  body?: Buffer | string;
  /** A body sent in these pieces with Transfer-Encoding: chunked (no Content-Length). */
  chunks?: Buffer[];
  /** Bearer token. */
  token?: string;
}

const recorded: Res[] = [];

function call(method: string, target: string, opts: CallOptions = {}): Promise<Res> {
  const url = new URL(target, base);
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
  if (body) headers['Content-Length'] = String(body.length);
  if (opts.chunks) headers['Transfer-Encoding'] = 'chunked';
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const buf = Buffer.concat(parts);
        const r: Res = {
          method,
          url: url.pathname + url.search,
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: buf,
          text: buf.toString('utf8'),
          json: () => JSON.parse(buf.toString('utf8')),
        };
        if (url.pathname.startsWith('/v2/') || url.pathname.startsWith('/container_gateway/v2/')) recorded.push(r);
        resolve(r);
      });
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`timeout: ${method} ${url}`)));
    // A server may answer (413, 416, 401) before it has read the body: the
    // answer counts, an EPIPE/ECONNRESET on our side afterwards does not.
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    if (opts.chunks) {
      for (const c of opts.chunks) req.write(c);
      req.end();
    } else {
      req.end(body);
    }
  });
}

function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** A digest nobody pushed. */
function unknownDigest(): string {
  return sha256(randomBytes(32));
}

function ociError(t: Tap, res: Res, status: number | number[], code?: string | string[]): void {
  const statuses = Array.isArray(status) ? status : [status];
  if (!statuses.includes(res.status)) {
    t.fail(`${res.method} ${res.url} → ${res.status}, expected ${statuses.join(' or ')}${code ? ` ${[code].flat().join('/')}` : ''} (body: ${res.text.slice(0, 200)})`);
    return;
  }
  t.pass(`${res.method} ${res.url.slice(0, 80)} → ${res.status}`);
  if (res.method === 'HEAD') return;
  let body: { errors?: Array<{ code?: unknown; message?: unknown }> };
  try {
    body = res.json();
  } catch {
    t.fail(`the ${res.status} body is JSON: ${res.text.slice(0, 200)}`);
    return;
  }
  t.ok(Array.isArray(body.errors) && body.errors.length > 0, 'an OCI error body {"errors":[...]}');
  const first = body.errors?.[0];
  if (code !== undefined) {
    const codes = Array.isArray(code) ? code : [code];
    t.ok(codes.includes(String(first?.code)), `code ${String(first?.code)} is ${codes.join(' or ')}`);
  } else {
    t.ok(OCI_CODES.has(String(first?.code)), `code ${String(first?.code)} is an OCI code`);
  }
}

// ---------------------------------------------------------------------------
// Users, tokens, content
// ---------------------------------------------------------------------------

async function addUser(name: string, password: string): Promise<void> {
  const res = await call('POST', '/container_gateway/admin/users', { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name, password }) });
  if (res.status !== 201) throw new Error(`admin: add user ${name}: ${res.status} ${res.text}`);
}

/** A token of `user` (Basic auth) for these repositories, asking pull,push,delete on each. */
async function tokenFor(user: string, password: string, ...repos: string[]): Promise<string> {
  return tokenWith(user, password, 'pull,push,delete', ...repos);
}

async function tokenWith(user: string, password: string, actions: string, ...repos: string[]): Promise<string> {
  const q = new URLSearchParams({ service: host });
  for (const r of repos) q.append('scope', `repository:${r}:${actions}`);
  const auth = Buffer.from(`${user}:${password}`).toString('base64');
  const res = await call('GET', `/v2/token?${q}`, { headers: { Authorization: `Basic ${auth}` } });
  if (res.status !== 200) throw new Error(`token for ${user}: ${res.status} ${res.text}`);
  const token = res.json<{ token?: string }>().token;
  if (!token) throw new Error(`token for ${user}: no token in ${res.text}`);
  return token;
}

async function setPublic(name: string, isPublic: boolean): Promise<Res> {
  return call('PUT', `/container_gateway/admin/repositories/${name}/visibility`, { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ public: isPublic }) });
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  [k: string]: unknown;
}

/** Push a blob the way containerd does (POST, then one PUT with the body); throws unless 202 then 201. */
async function pushBlob(repo: string, token: string, bytes: Buffer, mediaType = OCI_LAYER): Promise<Descriptor> {
  const digest = sha256(bytes);
  const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
  if (start.status !== 202 || !start.headers.location) throw new Error(`POST uploads to ${repo}: ${start.status} ${start.text}`);
  const loc = new URL(start.headers.location, base);
  loc.searchParams.set('digest', digest);
  const put = await call('PUT', loc.toString(), { token, body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
  if (put.status !== 201) throw new Error(`PUT upload to ${repo}: ${put.status} ${put.text}`);
  return { mediaType, digest, size: bytes.length };
}

/** JSON with an unusual layout, so that "byte-exact" means something. */
function manifestBytes(doc: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(doc, null, 3)}\n`);
}

function imageManifest(config: Descriptor, layers: Descriptor[], extra: Record<string, unknown> = {}): Buffer {
  return manifestBytes({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers, ...extra });
}

async function putManifest(repo: string, reference: string, token: string, bytes: Buffer, contentType = OCI_MANIFEST): Promise<Res> {
  return call('PUT', `/v2/${repo}/manifests/${reference}`, { token, body: bytes, headers: { 'Content-Type': contentType } });
}

interface Image {
  config: Descriptor;
  layers: Descriptor[];
  blobs: Map<string, Buffer>;
  manifest: Buffer;
  digest: string;
}

/** A small image: a config and `layerCount` random layers, pushed, and its manifest put under `tag`. */
async function pushImage(repo: string, token: string, tag: string | undefined, layerCount = 2, extra: Record<string, unknown> = {}): Promise<Image> {
  const blobs = new Map<string, Buffer>();
  const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, nonce: randomBytes(8).toString('hex') }));
  const config = await pushBlob(repo, token, configBytes, OCI_CONFIG);
  blobs.set(config.digest, configBytes);
  const layers: Descriptor[] = [];
  for (let i = 0; i < layerCount; i++) {
    const bytes = randomBytes(1000 + i * 517);
    layers.push(await pushBlob(repo, token, bytes));
    blobs.set(sha256(bytes), bytes);
  }
  const manifest = imageManifest(config, layers, extra);
  const digest = sha256(manifest);
  const res = await putManifest(repo, tag ?? digest, token, manifest);
  if (res.status !== 201) throw new Error(`PUT manifest ${repo}:${tag}: ${res.status} ${res.text}`);
  return { config, layers, blobs, manifest, digest };
}

function rangeOf(res: Res): string | undefined {
  const r = res.headers.range;
  return Array.isArray(r) ? r[0] : r;
}

/** GET the upload's status: its Range, or undefined when it is not 204. */
async function uploadRange(t: Tap, location: string, token: string): Promise<string | undefined> {
  const res = await call('GET', location, { token });
  t.equal(res.status, 204, `upload status GET → 204 (${res.text})`);
  return res.status === 204 ? rangeOf(res) : undefined;
}

await addUser('alice', 'alice-pw');
await addUser('bob', 'bob-pw');

// ---------------------------------------------------------------------------
// Base
// ---------------------------------------------------------------------------

t.test('end-1: GET /v2/ answers 200 with a token, 401 with a Bearer challenge without', async (t) => {
  const anon = await call('GET', '/v2/');
  t.equal(anon.status, 401);
  t.equal(anon.headers['www-authenticate'], `Bearer realm="${base}/v2/token",service="${host}"`);
  ociError(t, anon, 401, 'UNAUTHORIZED');
  const token = await tokenFor('alice', 'alice-pw');
  const ok = await call('GET', '/v2/', { token });
  t.equal(ok.status, 200);
  t.equal(ok.headers['docker-distribution-api-version'], 'registry/2.0');
  const bad = await call('GET', '/v2/', { token: 'not-a-token-we-issued' });
  ociError(t, bad, 401, 'UNAUTHORIZED');
  ociError(t, await call('POST', '/v2/alice/app/manifests/v1', { token }), 405, 'UNSUPPORTED');
  const wrongPassword = await call('GET', `/v2/token?service=${host}&scope=repository:alice/app:pull`, { headers: { Authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` } });
  ociError(t, wrongPassword, 401, 'UNAUTHORIZED');
});

// ---------------------------------------------------------------------------
// Pull
// ---------------------------------------------------------------------------

t.test('pull (end-2, end-3)', async (t) => {
  const repo = 'alice/pull';
  const token = await tokenFor('alice', 'alice-pw', repo, 'alice/other');
  const img = await pushImage(repo, token, 'v1', 2);

  t.test('manifest GET and HEAD by tag and by digest', async (t) => {
    for (const ref of ['v1', img.digest]) {
      const get = await call('GET', `/v2/${repo}/manifests/${ref}`, { token, headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } });
      t.equal(get.status, 200, `GET ${ref}`);
      t.equal(get.headers['content-type'], OCI_MANIFEST, 'Content-Type is the manifest media type');
      t.equal(get.headers['content-length'], String(img.manifest.length), 'Content-Length');
      t.equal(get.headers['docker-content-digest'], sha256(get.body), 'Docker-Content-Digest is the digest of the body');
      t.equal(get.headers['docker-content-digest'], img.digest);
      t.ok(get.body.equals(img.manifest), 'the body is byte-exact');
      const head = await call('HEAD', `/v2/${repo}/manifests/${ref}`, { token, headers: { Accept: OCI_MANIFEST } });
      t.equal(head.status, 200, `HEAD ${ref}`);
      t.equal(head.headers['content-type'], OCI_MANIFEST);
      t.equal(head.headers['content-length'], String(img.manifest.length), 'HEAD Content-Length = manifest size');
      t.equal(head.headers['docker-content-digest'], img.digest, 'HEAD Docker-Content-Digest');
      t.equal(head.body.length, 0, 'HEAD has no body');
    }
    const wildcard = await call('GET', `/v2/${repo}/manifests/v1`, { token, headers: { Accept: '*/*' } });
    t.equal(wildcard.status, 200, 'Accept */* admits it');
    const noAccept = await call('GET', `/v2/${repo}/manifests/v1`, { token });
    t.equal(noAccept.status, 200, 'no Accept admits it');
    const withQ = await call('GET', `/v2/${repo}/manifests/v1`, { token, headers: { Accept: `${DOCKER_MANIFEST}; q=0.9, ${OCI_MANIFEST}; q=0.5` } });
    t.equal(withQ.status, 200, 'Accept parameters are ignored');
    t.equal(withQ.headers['content-type'], OCI_MANIFEST);
  });

  t.test('manifest errors: malformed digest, unknown tag, unknown digest, Accept that excludes the type', async (t) => {
    const wrong = await call('GET', `/v2/${repo}/manifests/sha256:totallywrong`, { token });
    ociError(t, wrong, [400, 404]);
    const unknownTag = await call('GET', `/v2/${repo}/manifests/nosuchtag`, { token });
    ociError(t, unknownTag, 404, 'MANIFEST_UNKNOWN');
    const unknownHead = await call('HEAD', `/v2/${repo}/manifests/nosuchtag`, { token });
    t.equal(unknownHead.status, 404, 'HEAD of an unknown tag → 404');
    const unknown = await call('GET', `/v2/${repo}/manifests/${unknownDigest()}`, { token });
    ociError(t, unknown, 404, 'MANIFEST_UNKNOWN');
    const excluded = await call('GET', `/v2/${repo}/manifests/v1`, { token, headers: { Accept: DOCKER_MANIFEST } });
    ociError(t, excluded, 404, 'MANIFEST_UNKNOWN');
    const excludedHead = await call('HEAD', `/v2/${repo}/manifests/${img.digest}`, { token, headers: { Accept: DOCKER_MANIFEST } });
    t.equal(excludedHead.status, 404, 'HEAD with an Accept that excludes the type → 404');
    const noRepo = await call('GET', '/v2/alice/nosuchrepo/manifests/v1', { token });
    ociError(t, noRepo, 404, 'NAME_UNKNOWN');
  });

  t.test('a Docker v2s2 manifest keeps its media type', async (t) => {
    const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    const config = await pushBlob(repo, token, configBytes, DOCKER_CONFIG);
    const layer = await pushBlob(repo, token, randomBytes(700), DOCKER_LAYER);
    const bytes = manifestBytes({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config, layers: [layer] });
    const put = await putManifest(repo, 'docker', token, bytes, DOCKER_MANIFEST);
    t.equal(put.status, 201, put.text);
    const get = await call('GET', `/v2/${repo}/manifests/docker`, { token, headers: { Accept: `${DOCKER_MANIFEST}, ${OCI_MANIFEST}` } });
    t.equal(get.status, 200);
    t.equal(get.headers['content-type'], DOCKER_MANIFEST);
    t.ok(get.body.equals(bytes), 'byte-exact');
    const ociOnly = await call('GET', `/v2/${repo}/manifests/docker`, { token, headers: { Accept: OCI_MANIFEST } });
    ociError(t, ociOnly, 404, 'MANIFEST_UNKNOWN');
  });

  t.test('blob GET and HEAD', async (t) => {
    for (const [digest, bytes] of img.blobs) {
      const get = await call('GET', `/v2/${repo}/blobs/${digest}`, { token });
      t.equal(get.status, 200, `GET ${digest.slice(0, 19)}`);
      t.equal(get.headers['docker-content-digest'], digest, 'Docker-Content-Digest');
      t.equal(get.headers['content-length'], String(bytes.length), 'Content-Length');
      t.ok(get.body.equals(bytes), 'byte-exact');
      const head = await call('HEAD', `/v2/${repo}/blobs/${digest}`, { token });
      t.equal(head.status, 200);
      t.equal(head.headers['docker-content-digest'], digest, 'HEAD Docker-Content-Digest');
      t.equal(head.headers['content-length'], String(bytes.length), 'HEAD Content-Length = blob size');
      t.equal(head.body.length, 0);
    }
  });

  t.test('blob Range requests → 206 with Content-Range; unsatisfiable → 416', async (t) => {
    const layer = img.layers[1]!;
    const bytes = img.blobs.get(layer.digest)!;
    const n = bytes.length;
    const cases: Array<[string, number, number]> = [
      ['bytes=10-19', 10, 19],
      ['bytes=0-0', 0, 0],
      [`bytes=100-`, 100, n - 1],
      ['bytes=-50', n - 50, n - 1],
      [`bytes=${n - 5}-${n + 1000}`, n - 5, n - 1],
      [`bytes=-${n + 10}`, 0, n - 1],
    ];
    for (const [range, first, last] of cases) {
      const res = await call('GET', `/v2/${repo}/blobs/${layer.digest}`, { token, headers: { Range: range } });
      t.equal(res.status, 206, `${range} → 206`);
      t.equal(res.headers['content-range'], `bytes ${first}-${last}/${n}`, `${range}: Content-Range`);
      t.equal(res.headers['content-length'], String(last - first + 1), `${range}: Content-Length`);
      t.ok(res.body.equals(bytes.subarray(first, last + 1)), `${range}: the right bytes`);
      t.equal(res.headers['docker-content-digest'], layer.digest);
    }
    // How containers/image resumes an interrupted blob.
    const resume = await call('GET', `/v2/${repo}/blobs/${layer.digest}`, { token, headers: { Range: `bytes=${n - 1}-` } });
    t.equal(resume.status, 206);
    t.equal(resume.headers['content-range'], `bytes ${n - 1}-${n - 1}/${n}`);
    for (const range of [`bytes=${n}-`, `bytes=${n + 100}-${n + 200}`, 'bytes=-0']) {
      const res = await call('GET', `/v2/${repo}/blobs/${layer.digest}`, { token, headers: { Range: range } });
      t.equal(res.status, 416, `${range} → 416`);
      t.equal(res.headers['content-range'], `bytes */${n}`, `${range}: Content-Range bytes */size`);
    }
  });

  t.test('blob errors: unknown, in another repository only, malformed digest', async (t) => {
    const unknown = await call('GET', `/v2/${repo}/blobs/${unknownDigest()}`, { token });
    ociError(t, unknown, 404, 'BLOB_UNKNOWN');
    const unknownHead = await call('HEAD', `/v2/${repo}/blobs/${unknownDigest()}`, { token });
    t.equal(unknownHead.status, 404, 'HEAD of an unknown blob → 404 (clients upload it then)');
    // A blob of another repository is not visible here.
    const other = await pushBlob('alice/other', token, randomBytes(300));
    const elsewhere = await call('GET', `/v2/${repo}/blobs/${other.digest}`, { token });
    ociError(t, elsewhere, 404, 'BLOB_UNKNOWN');
    const malformed = await call('GET', `/v2/${repo}/blobs/sha256:nothex`, { token });
    ociError(t, malformed, [400, 404]);
    const noRepoHead = await call('HEAD', `/v2/alice/notyet/blobs/${unknownDigest()}`, { token: await tokenFor('alice', 'alice-pw', 'alice/notyet') });
    t.equal(noRepoHead.status, 404, 'HEAD of a blob of a repository about to be created → 404, not 401');
  });
});

// ---------------------------------------------------------------------------
// Push
// ---------------------------------------------------------------------------

t.test('push (end-4a/4b, end-5, end-6, end-13)', async (t) => {
  const repo = 'alice/push';
  const token = await tokenFor('alice', 'alice-pw', repo, 'alice/push-other');

  t.test('POST → exactly 202 with Location, Docker-Upload-UUID, Range 0-0; PUT ?digest → 201', async (t) => {
    const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    t.equal(start.status, 202);
    const location = start.headers.location;
    t.ok(location, 'Location');
    const uuid = start.headers['docker-upload-uuid'];
    t.ok(uuid, 'Docker-Upload-UUID');
    t.equal(new URL(location!, base).pathname.split('/').pop(), uuid, 'the UUID is the last path segment of Location');
    t.equal(rangeOf(start), '0-0', 'Range: 0-0');
    t.equal(await uploadRange(t, location!, token), '0-0', 'a fresh session: GET status 204, Range 0-0');
    const bytes = randomBytes(4096);
    const digest = sha256(bytes);
    const loc = new URL(location!, base);
    loc.searchParams.set('digest', digest);
    const put = await call('PUT', loc.toString(), { token, body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
    t.equal(put.status, 201, put.text);
    t.equal(put.headers['docker-content-digest'], digest, 'Docker-Content-Digest');
    t.ok(put.headers.location, 'Location of the blob');
    const blob = await call('GET', new URL(put.headers.location!, base).toString(), { token });
    t.equal(blob.status, 200, 'the Location of the blob answers');
    t.ok(blob.body.equals(bytes), 'with the bytes');
    const gone = await call('GET', location!, { token });
    ociError(t, gone, 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  t.test('monolithic POST ?digest with the body → 201; a wrong digest → 400 DIGEST_INVALID, no blob', async (t) => {
    const bytes = randomBytes(2048);
    const digest = sha256(bytes);
    const res = await call('POST', `/v2/${repo}/blobs/uploads/?digest=${digest}`, { token, body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
    t.equal(res.status, 201, res.text);
    t.equal(res.headers['docker-content-digest'], digest);
    t.equal(new URL(res.headers.location ?? '', base).pathname, `/v2/${repo}/blobs/${digest}`, 'Location of the blob');
    const get = await call('GET', `/v2/${repo}/blobs/${digest}`, { token });
    t.ok(get.body.equals(bytes), 'stored byte for byte');

    const other = randomBytes(2048);
    const claimed = sha256(randomBytes(16));
    const bad = await call('POST', `/v2/${repo}/blobs/uploads/?digest=${claimed}`, { token, body: other, headers: { 'Content-Type': 'application/octet-stream' } });
    ociError(t, bad, 400, 'DIGEST_INVALID');
    t.equal((await call('HEAD', `/v2/${repo}/blobs/${claimed}`, { token })).status, 404, 'nothing under the claimed digest');
    t.equal((await call('HEAD', `/v2/${repo}/blobs/${sha256(other)}`, { token })).status, 404, 'nothing under the real digest');

    // POST ?digest without a body: the registry may open a session instead (202), then PUT completes it.
    const noBody = randomBytes(100);
    const open = await call('POST', `/v2/${repo}/blobs/uploads/?digest=${sha256(noBody)}`, { token });
    t.ok(open.status === 201 || open.status === 202, `POST ?digest without a body → 201 or 202 (${open.status})`);
    if (open.status === 202) {
      const loc = new URL(open.headers.location!, base);
      loc.searchParams.set('digest', sha256(noBody));
      const put = await call('PUT', loc.toString(), { token, body: noBody });
      t.equal(put.status, 201, put.text);
    }
  });

  t.test('streamed PATCH, chunked transfer, no Content-Range → 202 Range 0-<n-1>; PUT with no body → 201', async (t) => {
    const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    t.equal(start.status, 202);
    const parts = [randomBytes(10_000), randomBytes(70_000), randomBytes(1)];
    const whole = Buffer.concat(parts);
    const patch = await call('PATCH', start.headers.location!, { token, chunks: parts, headers: { 'Content-Type': 'application/octet-stream' } });
    t.equal(patch.status, 202, patch.text);
    t.equal(rangeOf(patch), `0-${whole.length - 1}`, 'Range 0-<n-1>, no bytes= prefix');
    t.ok(patch.headers.location, 'a Location to continue with');
    t.ok(patch.headers['docker-upload-uuid'], 'Docker-Upload-UUID');
    const loc = new URL(patch.headers.location!, base);
    loc.searchParams.set('digest', sha256(whole));
    const put = await call('PUT', loc.toString(), { token });
    t.equal(put.status, 201, put.text);
    t.equal(put.headers['docker-content-digest'], sha256(whole));
    const get = await call('GET', `/v2/${repo}/blobs/${sha256(whole)}`, { token });
    t.ok(get.body.equals(whole), 'the blob is what was streamed');
  });

  t.test('podman-style PATCH with Content-Length and no Content-Range → 202', async (t) => {
    const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    const bytes = randomBytes(5000);
    const patch = await call('PATCH', start.headers.location!, { token, body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
    t.equal(patch.status, 202);
    t.equal(rangeOf(patch), `0-${bytes.length - 1}`);
    const loc = new URL(patch.headers.location!, base);
    loc.searchParams.set('digest', sha256(bytes));
    t.equal((await call('PUT', loc.toString(), { token })).status, 201);
  });

  t.test('chunked upload: exact Range echo, 416 out of order or repeated (size unchanged), status 204, final chunk on PUT', async (t) => {
    const chunks = [randomBytes(1000), randomBytes(2500), randomBytes(1), randomBytes(3333)];
    const whole = Buffer.concat(chunks);
    const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    t.equal(start.status, 202);
    let location = start.headers.location!;
    let offset = 0;
    for (const [i, chunk] of chunks.slice(0, 3).entries()) {
      const range = `${offset}-${offset + chunk.length - 1}`;
      const res = await call('PATCH', location, { token, body: chunk, headers: { 'Content-Range': range, 'Content-Type': 'application/octet-stream' } });
      t.equal(res.status, 202, `chunk ${i} (${range}) → 202 ${res.text}`);
      t.equal(rangeOf(res), `0-${offset + chunk.length - 1}`, `chunk ${i}: Range echo 0-${offset + chunk.length - 1}`);
      t.ok(res.headers.location, `chunk ${i}: Location`);
      location = res.headers.location!;
      offset += chunk.length;
    }
    const size = offset;
    t.equal(await uploadRange(t, location, token), `0-${size - 1}`, 'GET status: 204 with the Range so far');

    const ahead = await call('PATCH', location, { token, body: chunks[3]!, headers: { 'Content-Range': `${size + 10}-${size + 10 + chunks[3]!.length - 1}` } });
    ociError(t, ahead, 416);
    t.equal(await uploadRange(t, location, token), `0-${size - 1}`, 'after a chunk from the future: the upload is unchanged');

    const repeated = await call('PATCH', location, { token, body: chunks[0]!, headers: { 'Content-Range': `0-${chunks[0]!.length - 1}` } });
    ociError(t, repeated, 416);
    t.equal(await uploadRange(t, location, token), `0-${size - 1}`, 'after a repeated chunk: the upload is unchanged');

    const overlap = await call('PATCH', location, { token, body: chunks[2]!, headers: { 'Content-Range': `${size - 1}-${size - 1}` } });
    ociError(t, overlap, 416);
    t.equal(await uploadRange(t, location, token), `0-${size - 1}`, 'after an overlapping chunk: the upload is unchanged');

    const last = chunks[3]!;
    const loc = new URL(location, base);
    loc.searchParams.set('digest', sha256(whole));
    const put = await call('PUT', loc.toString(), { token, body: last, headers: { 'Content-Range': `${size}-${size + last.length - 1}`, 'Content-Type': 'application/octet-stream' } });
    t.equal(put.status, 201, `PUT with the final chunk → 201 ${put.text}`);
    const get = await call('GET', `/v2/${repo}/blobs/${sha256(whole)}`, { token });
    t.equal(get.status, 200);
    t.ok(get.body.equals(whole), 'the chunks make up the blob');
  });

  t.test('PUT with the wrong digest → 400 DIGEST_INVALID and no blob; PUT without digest → 400', async (t) => {
    const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    const bytes = randomBytes(3000);
    const patch = await call('PATCH', start.headers.location!, { token, body: bytes });
    t.equal(patch.status, 202);
    const noDigest = await call('PUT', patch.headers.location!, { token });
    ociError(t, noDigest, 400);
    const claimed = sha256(randomBytes(8));
    const loc = new URL(patch.headers.location!, base);
    loc.searchParams.set('digest', claimed);
    const wrong = await call('PUT', loc.toString(), { token });
    ociError(t, wrong, 400, 'DIGEST_INVALID');
    t.equal((await call('HEAD', `/v2/${repo}/blobs/${claimed}`, { token })).status, 404, 'no blob under the claimed digest');
    t.equal((await call('HEAD', `/v2/${repo}/blobs/${sha256(bytes)}`, { token })).status, 404, 'no blob under the real digest');

    // A digest that is not a digest.
    const start2 = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    const loc2 = new URL(start2.headers.location!, base);
    loc2.searchParams.set('digest', 'sha256:xyz');
    ociError(t, await call('PUT', loc2.toString(), { token, body: Buffer.from('abc') }), 400, 'DIGEST_INVALID');
  });

  t.test('unknown upload ids → 404 BLOB_UPLOAD_UNKNOWN; DELETE → 204 and the session is gone', async (t) => {
    for (const id of ['3f1c2b7e-0000-4000-8000-000000000000', 'not-a-uuid']) {
      const path = `/v2/${repo}/blobs/uploads/${id}`;
      ociError(t, await call('GET', path, { token }), 404, 'BLOB_UPLOAD_UNKNOWN');
      ociError(t, await call('PATCH', path, { token, body: Buffer.from('x') }), 404, 'BLOB_UPLOAD_UNKNOWN');
      ociError(t, await call('PUT', `${path}?digest=${sha256('x')}`, { token, body: Buffer.from('x') }), 404, 'BLOB_UPLOAD_UNKNOWN');
      ociError(t, await call('DELETE', path, { token }), 404, 'BLOB_UPLOAD_UNKNOWN');
    }
    const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    const location = start.headers.location!;
    t.equal((await call('PATCH', location, { token, body: randomBytes(10) })).status, 202);
    const del = await call('DELETE', location, { token });
    t.equal(del.status, 204, 'DELETE upload → 204');
    ociError(t, await call('GET', location, { token }), 404, 'BLOB_UPLOAD_UNKNOWN');
    ociError(t, await call('PATCH', location, { token, body: randomBytes(10) }), 404, 'BLOB_UPLOAD_UNKNOWN');

    // A session belongs to its repository.
    const mine = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    const uuid = mine.headers['docker-upload-uuid'] as string;
    ociError(t, await call('GET', `/v2/alice/push-other/blobs/uploads/${uuid}`, { token }), 404, 'BLOB_UPLOAD_UNKNOWN');
    t.equal((await call('DELETE', mine.headers.location!, { token })).status, 204);
  });

  t.test('an empty blob: POST, PUT ?digest with no body → 201; GET 200 with Content-Length 0', async (t) => {
    const empty = Buffer.alloc(0);
    const digest = sha256(empty);
    const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    const loc = new URL(start.headers.location!, base);
    loc.searchParams.set('digest', digest);
    const put = await call('PUT', loc.toString(), { token });
    t.equal(put.status, 201, put.text);
    const get = await call('GET', `/v2/${repo}/blobs/${digest}`, { token });
    t.equal(get.status, 200);
    t.equal(get.headers['content-length'], '0');
    t.equal(get.headers['docker-content-digest'], digest);
    const head = await call('HEAD', `/v2/${repo}/blobs/${digest}`, { token });
    t.equal(head.status, 200);
    t.equal(head.headers['content-length'], '0');
  });

  // The digest grammar (`<alg>:<hex>`, §1) admits other algorithms; one the
  // registry does not support is the client's error: 400 DIGEST_INVALID (§2).
  t.test('a digest of another algorithm (sha512) is a client error (4xx), never a 500', async (t) => {
    const bytes = Buffer.from('sha512 content');
    const sha512 = `sha512:${createHash('sha512').update(bytes).digest('hex')}`;
    // Monolithic POST ?digest=sha512:...
    const mono = await call('POST', `/v2/${repo}/blobs/uploads/?digest=${sha512}`, { token, body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
    if (mono.status !== 201) ociError(t, mono, 400, ['DIGEST_INVALID', 'UNSUPPORTED']);
    // POST, PATCH, PUT ?digest=sha512:...
    const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token });
    const patch = await call('PATCH', start.headers.location!, { token, body: bytes });
    t.equal(patch.status, 202);
    const loc = new URL(patch.headers.location!, base);
    loc.searchParams.set('digest', sha512);
    const put = await call('PUT', loc.toString(), { token });
    if (put.status !== 201) ociError(t, put, 400, ['DIGEST_INVALID', 'UNSUPPORTED']);
  });

  t.test('the same API under /container_gateway/v2/ answers with Locations there', async (t) => {
    const start = await call('POST', `/container_gateway/v2/${repo}/blobs/uploads/`, { token });
    t.equal(start.status, 202);
    t.match(start.headers.location, new RegExp(`^(${base})?/container_gateway/v2/${repo}/blobs/uploads/`));
    const bytes = randomBytes(64);
    const loc = new URL(start.headers.location!, base);
    loc.searchParams.set('digest', sha256(bytes));
    const put = await call('PUT', loc.toString(), { token, body: bytes });
    t.equal(put.status, 201);
    t.equal(new URL(put.headers.location!, base).pathname, `/container_gateway/v2/${repo}/blobs/${sha256(bytes)}`);
  });
});

t.test('cross-repository mount (end-11)', async (t) => {
  // bob/secret exists before alice asks for her token: it grants her nothing there.
  const bobToken = await tokenFor('bob', 'bob-pw', 'bob/secret');
  const bobs = await pushBlob('bob/secret', bobToken, randomBytes(999));
  const token = await tokenFor('alice', 'alice-pw', 'alice/src', 'alice/dst', 'alice/dst2', 'alice/dst3', 'bob/secret');
  const blob = randomBytes(1234);
  const src = await pushBlob('alice/src', token, blob);

  t.test('with from → 201, and the blob is in the target', async (t) => {
    const res = await call('POST', `/v2/alice/dst/blobs/uploads/?mount=${src.digest}&from=alice/src`, { token });
    t.equal(res.status, 201, res.text);
    t.equal(res.headers['docker-content-digest'], src.digest);
    t.equal(new URL(res.headers.location ?? '', base).pathname, `/v2/alice/dst/blobs/${src.digest}`, 'Location of the blob in the target');
    const get = await call('GET', `/v2/alice/dst/blobs/${src.digest}`, { token });
    t.equal(get.status, 200);
    t.ok(get.body.equals(blob));
  });

  t.test('without from, of a blob the user can read → 201', async (t) => {
    const res = await call('POST', `/v2/alice/dst2/blobs/uploads/?mount=${src.digest}`, { token });
    t.equal(res.status, 201, res.text);
    t.equal((await call('HEAD', `/v2/alice/dst2/blobs/${src.digest}`, { token })).status, 200);
  });

  t.test('of a missing blob → 202 and an upload session', async (t) => {
    const missing = unknownDigest();
    const res = await call('POST', `/v2/alice/dst/blobs/uploads/?mount=${missing}&from=alice/src`, { token });
    t.equal(res.status, 202);
    t.ok(res.headers.location, 'Location of the session');
    t.equal(await uploadRange(t, res.headers.location!, token), '0-0');
    t.equal((await call('DELETE', res.headers.location!, { token })).status, 204, 'clients DELETE that session');
    const noFrom = await call('POST', `/v2/alice/dst/blobs/uploads/?mount=${missing}`, { token });
    t.equal(noFrom.status, 202, 'without from too');
  });

  t.test('from a repository the user cannot read → 202, not 201', async (t) => {
    const res = await call('POST', `/v2/alice/dst3/blobs/uploads/?mount=${bobs.digest}&from=bob/secret`, { token });
    t.equal(res.status, 202, `mount from bob/secret → ${res.status}`);
    const noFrom = await call('POST', `/v2/alice/dst3/blobs/uploads/?mount=${bobs.digest}`, { token });
    t.equal(noFrom.status, 202, `mount without from of a blob only bob/secret has → ${noFrom.status}`);
    const head = await call('HEAD', `/v2/alice/dst3/blobs/${bobs.digest}`, { token });
    t.equal(head.status, 404, "bob's blob did not leak into alice/dst3");
    const fromUnknown = await call('POST', `/v2/alice/dst3/blobs/uploads/?mount=${src.digest}&from=nobody/nothing`, { token });
    t.equal(fromUnknown.status, 202, 'from a repository that does not exist → 202');
  });
});

// ---------------------------------------------------------------------------
// Manifest PUT (end-7)
// ---------------------------------------------------------------------------

t.test('manifest PUT (end-7)', async (t) => {
  const repo = 'alice/manifests';
  const token = await tokenFor('alice', 'alice-pw', repo);
  const configBytes = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const config = await pushBlob(repo, token, configBytes, OCI_CONFIG);
  const layerBytes = randomBytes(512);
  const layer = await pushBlob(repo, token, layerBytes);

  async function created(t: Tap, res: Res, bytes: Buffer, what: string): Promise<void> {
    t.equal(res.status, 201, `${what}: 201 ${res.text}`);
    t.equal(res.headers['docker-content-digest'], sha256(bytes), `${what}: Docker-Content-Digest = sha256 of the body`);
    t.ok(res.headers.location, `${what}: Location`);
    if (res.status !== 201) return;
    const get = await call('GET', new URL(res.headers.location!, base).toString(), { token });
    t.equal(get.status, 200, `${what}: its Location answers`);
    t.ok(get.body.equals(bytes), `${what}: stored byte for byte`);
  }

  t.test('with unknown fields', async (t) => {
    const bytes = imageManifest(config, [layer], { 'x-unknown-field': { nested: [1, 2, 3] }, annotations: { 'org.example.k': 'v' } });
    const res = await putManifest(repo, 'unknown-fields', token, bytes);
    await created(t, res, bytes, 'unknown fields');
  });

  t.test('with data descriptors', async (t) => {
    const withData = { ...layer, data: layerBytes.toString('base64') };
    const cfgWithData = { ...config, data: configBytes.toString('base64') };
    const bytes = imageManifest(cfgWithData, [withData]);
    await created(t, await putManifest(repo, 'data', token, bytes), bytes, 'data descriptors');
  });

  t.test('without mediaType: the Content-Type is used', async (t) => {
    const bytes = manifestBytes({ schemaVersion: 2, config, layers: [layer], annotations: { n: randomBytes(4).toString('hex') } });
    const res = await putManifest(repo, 'no-media-type', token, bytes, OCI_MANIFEST);
    await created(t, res, bytes, 'no mediaType');
    const get = await call('GET', `/v2/${repo}/manifests/no-media-type`, { token, headers: { Accept: OCI_MANIFEST } });
    t.equal(get.headers['content-type'], OCI_MANIFEST, 'served with the Content-Type it was put with');
  });

  t.test('with no layers, and an artifact on the empty config', async (t) => {
    const noLayers = imageManifest(config, [], { annotations: { layers: 'none' } });
    await created(t, await putManifest(repo, 'no-layers', token, noLayers), noLayers, 'no layers');
    const empty = await pushBlob(repo, token, Buffer.from('{}'), OCI_EMPTY);
    const artifact = imageManifest(empty, [empty], { artifactType: 'application/vnd.example.thing.v1' });
    await created(t, await putManifest(repo, 'artifact', token, artifact), artifact, 'artifact with the empty config');
  });

  t.test('Content-Type parameters are ignored', async (t) => {
    const bytes = imageManifest(config, [layer], { annotations: { p: 'charset' } });
    const res = await putManifest(repo, 'ct-params', token, bytes, `${OCI_MANIFEST}; charset=utf-8`);
    await created(t, res, bytes, 'Content-Type with parameters');
  });

  t.test('by digest: equal to the body → 201; different → 400 DIGEST_INVALID', async (t) => {
    const bytes = imageManifest(config, [layer], { annotations: { by: 'digest' } });
    const digest = sha256(bytes);
    const res = await putManifest(repo, digest, token, bytes);
    await created(t, res, bytes, 'by digest');
    t.equal(new URL(res.headers.location ?? '', base).pathname, `/v2/${repo}/manifests/${digest}`);
    const other = imageManifest(config, [layer], { annotations: { by: 'another digest' } });
    const bad = await putManifest(repo, digest.replace(/.$/, (c) => (c === '0' ? '1' : '0')), token, other);
    ociError(t, bad, 400, 'DIGEST_INVALID');
    t.equal((await call('HEAD', `/v2/${repo}/manifests/${sha256(other)}`, { token })).status, 404, 'not stored');
  });

  t.test('a tag can be moved to another manifest', async (t) => {
    const a = imageManifest(config, [layer], { annotations: { which: 'a' } });
    const b = imageManifest(config, [layer], { annotations: { which: 'b' } });
    t.equal((await putManifest(repo, 'moving', token, a)).status, 201);
    t.equal((await putManifest(repo, 'moving', token, b)).status, 201);
    const get = await call('GET', `/v2/${repo}/manifests/moving`, { token });
    t.ok(get.body.equals(b), 'the tag points at the last manifest put');
    t.equal((await call('GET', `/v2/${repo}/manifests/${sha256(a)}`, { token })).status, 200, 'the first is still there by digest');
  });

  t.test('up to 4 MiB accepted; over → 413', async (t) => {
    const skeleton = imageManifest(config, [layer], { annotations: { pad: '' } });
    const exact = imageManifest(config, [layer], { annotations: { pad: 'x'.repeat(4 * MiB - skeleton.length) } });
    t.equal(exact.length, 4 * MiB, 'a manifest of exactly 4 MiB');
    const ok = await putManifest(repo, 'four-mib', token, exact);
    t.equal(ok.status, 201, `4 MiB → 201 ${ok.text.slice(0, 200)}`);
    const get = await call('GET', `/v2/${repo}/manifests/four-mib`, { token });
    t.ok(get.body.equals(exact), 'stored byte for byte');

    const over = imageManifest(config, [layer], { annotations: { pad: 'x'.repeat(4 * MiB - skeleton.length + 1) } });
    const big = await putManifest(repo, 'too-big', token, over);
    ociError(t, big, 413);
    const chunked = await call('PUT', `/v2/${repo}/manifests/too-big-chunked`, {
      token,
      chunks: [over.subarray(0, MiB), over.subarray(MiB, 3 * MiB), over.subarray(3 * MiB)],
      headers: { 'Content-Type': OCI_MANIFEST },
    });
    ociError(t, chunked, 413);
    t.equal((await call('HEAD', `/v2/${repo}/manifests/too-big`, { token })).status, 404, 'not stored');
    t.equal((await call('HEAD', `/v2/${repo}/manifests/too-big-chunked`, { token })).status, 404, 'not stored (chunked)');
    const after = await call('GET', `/v2/${repo}/manifests/four-mib`, { token, headers: { Accept: OCI_MANIFEST } });
    t.equal(after.status, 200, 'the gateway still answers');
  });

  t.test('referencing a blob not in the repository → 400 MANIFEST_BLOB_UNKNOWN', async (t) => {
    const ghost: Descriptor = { mediaType: OCI_LAYER, digest: unknownDigest(), size: 42 };
    const res = await putManifest(repo, 'ghost', token, imageManifest(config, [layer, ghost]));
    ociError(t, res, 400, 'MANIFEST_BLOB_UNKNOWN');
    const elsewhere = await pushBlob('alice/pull', await tokenFor('alice', 'alice-pw', 'alice/pull'), randomBytes(77));
    const res2 = await putManifest(repo, 'ghost2', token, imageManifest(config, [elsewhere]));
    ociError(t, res2, 400, 'MANIFEST_BLOB_UNKNOWN');
    t.equal((await call('HEAD', `/v2/${repo}/manifests/ghost`, { token })).status, 404);
  });

  t.test('invalid manifests → 400 MANIFEST_INVALID', async (t) => {
    ociError(t, await putManifest(repo, 'broken', token, Buffer.from('{"schemaVersion": 2, ')), 400, 'MANIFEST_INVALID');
    ociError(t, await putManifest(repo, 'broken', token, manifestBytes({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: 'nope' }, layers: [] })), 400, 'MANIFEST_INVALID');
  });

  t.test('with a subject that does not exist yet → 201 + OCI-Subject', async (t) => {
    const subject: Descriptor = { mediaType: OCI_MANIFEST, digest: unknownDigest(), size: 1234 };
    const bytes = imageManifest(config, [layer], { subject, artifactType: 'application/vnd.example.early+json' });
    const res = await putManifest(repo, sha256(bytes), token, bytes);
    await created(t, res, bytes, 'subject not yet pushed');
    t.equal(res.headers['oci-subject'], subject.digest, 'OCI-Subject: the subject digest');
    const referrers = await call('GET', `/v2/${repo}/referrers/${subject.digest}`, { token });
    t.equal(referrers.status, 200);
    t.same(referrers.json().manifests.map((m: Descriptor) => m.digest), [sha256(bytes)], 'it is listed as a referrer of that digest');
  });

  t.test('an image index whose manifests exist → 201; one with a missing child → 400 MANIFEST_BLOB_UNKNOWN', async (t) => {
    const amd = imageManifest(config, [layer], { annotations: { arch: 'amd64' } });
    const arm = imageManifest(config, [layer], { annotations: { arch: 'arm64' } });
    t.equal((await putManifest(repo, sha256(amd), token, amd)).status, 201);
    t.equal((await putManifest(repo, sha256(arm), token, arm)).status, 201);
    const index = manifestBytes({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: sha256(amd), size: amd.length, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: OCI_MANIFEST, digest: sha256(arm), size: arm.length, platform: { architecture: 'arm64', os: 'linux' } },
      ],
    });
    const res = await putManifest(repo, 'multi', token, index, OCI_INDEX);
    await created(t, res, index, 'index');
    const get = await call('GET', `/v2/${repo}/manifests/multi`, { token, headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } });
    t.equal(get.headers['content-type'], OCI_INDEX);
    const missing = manifestBytes({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: unknownDigest(), size: 10 }] });
    ociError(t, await putManifest(repo, 'multi-missing', token, missing, OCI_INDEX), 400, 'MANIFEST_BLOB_UNKNOWN');
  });
});

// ---------------------------------------------------------------------------
// Discovery (end-8, end-12)
// ---------------------------------------------------------------------------

t.test('tags/list (end-8a, end-8b)', async (t) => {
  const repo = 'alice/tags';
  const token = await tokenFor('alice', 'alice-pw', repo);
  const img = await pushImage(repo, token, undefined, 1);
  const tags = ['v2', 'latest', 'v10', 'Beta', '1.0', 'alpha', '_x', 'v1.0-rc.1'];
  for (const tag of tags) t.equal((await putManifest(repo, tag, token, img.manifest)).status, 201, `tag ${tag}`);
  const sorted = [...tags].sort();

  const all = await call('GET', `/v2/${repo}/tags/list`, { token });
  t.equal(all.status, 200);
  t.match(all.headers['content-type'], /^application\/json/);
  t.same(all.json(), { name: repo, tags: sorted }, 'every tag, in lexical order');
  t.notOk(all.headers.link, 'no Link when nothing remains');

  // Page through with n and the Link headers.
  const pages: string[][] = [];
  let next: string | undefined = `/v2/${repo}/tags/list?n=3`;
  while (next && pages.length < 10) {
    const res = await call('GET', next, { token });
    t.equal(res.status, 200);
    const body = res.json<{ name: string; tags: string[] }>();
    pages.push(body.tags);
    const link = [res.headers.link].flat()[0];
    if (link) {
      const m = /^<([^>]+)>;\s*rel="next"$/.exec(link);
      t.ok(m, `Link is <url>; rel="next": ${link}`);
      t.equal(body.tags.length, 3, 'a full page when a Link is sent');
      next = m?.[1];
    } else {
      next = undefined;
    }
  }
  t.same(pages, [sorted.slice(0, 3), sorted.slice(3, 6), sorted.slice(6)], 'n=3 pages, following Link');

  const afterAlpha = await call('GET', `/v2/${repo}/tags/list?last=alpha`, { token });
  t.same(afterAlpha.json().tags, sorted.slice(sorted.indexOf('alpha') + 1), 'last is exclusive');
  const nLast = await call('GET', `/v2/${repo}/tags/list?n=2&last=Beta`, { token });
  t.same(nLast.json().tags, sorted.slice(sorted.indexOf('Beta') + 1, sorted.indexOf('Beta') + 3), 'n with last');
  t.ok(nLast.headers.link, 'a Link as more remain');
  const notATag = await call('GET', `/v2/${repo}/tags/list?last=m`, { token });
  t.same(notATag.json().tags, sorted.filter((s) => s > 'm'), 'last need not be an existing tag');

  const zero = await call('GET', `/v2/${repo}/tags/list?n=0`, { token });
  t.equal(zero.status, 200);
  t.same(zero.json(), { name: repo, tags: [] }, 'n=0 → empty list');
  t.notOk(zero.headers.link, 'n=0 → no Link');

  const exact = await call('GET', `/v2/${repo}/tags/list?n=${tags.length}`, { token });
  t.same(exact.json().tags, sorted);
  t.notOk(exact.headers.link, 'n = number of tags → no Link');
  const more = await call('GET', `/v2/${repo}/tags/list?n=1000`, { token });
  t.same(more.json().tags, sorted, 'n larger than the count → all');

  ociError(t, await call('GET', '/v2/alice/no-such-repo/tags/list', { token }), 404, 'NAME_UNKNOWN');
});

t.test('referrers (end-12a, end-12b)', async (t) => {
  const repo = 'alice/referrers';
  const token = await tokenFor('alice', 'alice-pw', repo);
  const subject = await pushImage(repo, token, 'v1', 1);
  const subjectDesc: Descriptor = { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.manifest.length };
  const emptyConfig = await pushBlob(repo, token, Buffer.from('{}'), OCI_EMPTY);
  const sbomBlob = await pushBlob(repo, token, Buffer.from('{"sbom":true}'), 'application/spdx+json');
  const sigConfig = await pushBlob(repo, token, Buffer.from('{"sig":1}'), 'application/vnd.example.signature.config.v1+json');

  // A: artifactType on the manifest (ORAS style, empty config).
  const a = imageManifest(emptyConfig, [sbomBlob], { artifactType: 'application/vnd.example.sbom.v1', subject: subjectDesc, annotations: { 'org.opencontainers.image.created': '2026-01-01T00:00:00Z', kind: 'sbom' } });
  // B: no artifactType: the config's media type stands in.
  const b = imageManifest(sigConfig, [sbomBlob], { subject: subjectDesc, annotations: { kind: 'signature' } });
  // C: an index with an artifactType; D: an index without one and no annotations.
  const c = manifestBytes({ schemaVersion: 2, mediaType: OCI_INDEX, artifactType: 'application/vnd.example.bundle.v1', manifests: [{ mediaType: OCI_MANIFEST, digest: sha256(a), size: a.length }], subject: subjectDesc, annotations: { kind: 'bundle' } });
  const d = manifestBytes({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [], subject: subjectDesc });
  for (const [bytes, type] of [[a, OCI_MANIFEST], [b, OCI_MANIFEST], [c, OCI_INDEX], [d, OCI_INDEX]] as const) {
    const res = await putManifest(repo, sha256(bytes), token, bytes, type);
    t.equal(res.status, 201, res.text);
    t.equal(res.headers['oci-subject'], subject.digest, 'OCI-Subject on a manifest with a subject');
  }
  // Not a referrer: a plain image in the same repository.
  await pushImage(repo, token, 'unrelated', 1);

  const res = await call('GET', `/v2/${repo}/referrers/${subject.digest}`, { token });
  t.equal(res.status, 200);
  t.match(res.headers['content-type'], new RegExp(`^${OCI_INDEX.replace(/[.+]/g, '\\$&')}`), 'Content-Type: OCI image index');
  const body = res.json<{ schemaVersion: number; mediaType: string; manifests: Descriptor[] }>();
  t.equal(body.schemaVersion, 2);
  t.equal(body.mediaType, OCI_INDEX);
  const byDigest = (x: Descriptor, y: Descriptor) => (x.digest < y.digest ? -1 : 1);
  const expected: Descriptor[] = [
    { mediaType: OCI_MANIFEST, digest: sha256(a), size: a.length, artifactType: 'application/vnd.example.sbom.v1', annotations: { 'org.opencontainers.image.created': '2026-01-01T00:00:00Z', kind: 'sbom' } },
    { mediaType: OCI_MANIFEST, digest: sha256(b), size: b.length, artifactType: 'application/vnd.example.signature.config.v1+json', annotations: { kind: 'signature' } },
    { mediaType: OCI_INDEX, digest: sha256(c), size: c.length, artifactType: 'application/vnd.example.bundle.v1', annotations: { kind: 'bundle' } },
    { mediaType: OCI_INDEX, digest: sha256(d), size: d.length },
  ];
  t.same([...body.manifests].sort(byDigest), expected.sort(byDigest), 'one descriptor per referrer, with artifactType and annotations');
  t.notOk(res.headers['oci-filters-applied'], 'no OCI-Filters-Applied without a filter');

  const filtered = await call('GET', `/v2/${repo}/referrers/${subject.digest}?artifactType=${encodeURIComponent('application/vnd.example.sbom.v1')}`, { token });
  t.equal(filtered.status, 200);
  t.equal(filtered.headers['oci-filters-applied'], 'artifactType');
  t.same(filtered.json().manifests.map((m: Descriptor) => m.digest), [sha256(a)], 'only the matching referrer');
  const byConfigType = await call('GET', `/v2/${repo}/referrers/${subject.digest}?artifactType=${encodeURIComponent('application/vnd.example.signature.config.v1+json')}`, { token });
  t.same(byConfigType.json().manifests.map((m: Descriptor) => m.digest), [sha256(b)], 'the filter matches the config media type stand-in');
  const noMatch = await call('GET', `/v2/${repo}/referrers/${subject.digest}?artifactType=application/x-none`, { token });
  t.equal(noMatch.status, 200);
  t.equal(noMatch.headers['oci-filters-applied'], 'artifactType');
  t.same(noMatch.json().manifests, []);

  const none = await call('GET', `/v2/${repo}/referrers/${unknownDigest()}`, { token });
  t.equal(none.status, 200, 'nothing found → 200');
  t.match(none.headers['content-type'], /^application\/vnd\.oci\.image\.index\.v1\+json/);
  t.same(none.json(), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }, 'an empty index');

  ociError(t, await call('GET', `/v2/${repo}/referrers/sha256:totallywrong`, { token }), 400);
  ociError(t, await call('GET', `/v2/${repo}/referrers/notadigest`, { token }), 400);

  // A deleted referrer is no longer listed.
  t.equal((await call('DELETE', `/v2/${repo}/manifests/${sha256(b)}`, { token })).status, 202);
  const afterDelete = await call('GET', `/v2/${repo}/referrers/${subject.digest}`, { token });
  t.same(afterDelete.json().manifests.map((m: Descriptor) => m.digest).sort(), [sha256(a), sha256(c), sha256(d)].sort(), 'the deleted referrer is gone');
});

// ---------------------------------------------------------------------------
// Management (end-9, end-10)
// ---------------------------------------------------------------------------

t.test('deletes (end-9, end-10)', async (t) => {
  const repo = 'alice/delete';
  const token = await tokenFor('alice', 'alice-pw', repo);
  const one = await pushImage(repo, token, 'one', 1);
  t.equal((await putManifest(repo, 'one-again', token, one.manifest)).status, 201);
  const two = await pushImage(repo, token, 'two', 1);

  const del = await call('DELETE', `/v2/${repo}/manifests/${one.digest}`, { token });
  t.equal(del.status, 202, 'DELETE manifest by digest → 202');
  ociError(t, await call('GET', `/v2/${repo}/manifests/${one.digest}`, { token }), 404, 'MANIFEST_UNKNOWN');
  ociError(t, await call('GET', `/v2/${repo}/manifests/one`, { token }), 404, 'MANIFEST_UNKNOWN');
  ociError(t, await call('GET', `/v2/${repo}/manifests/one-again`, { token }), 404, 'MANIFEST_UNKNOWN');
  t.same((await call('GET', `/v2/${repo}/tags/list`, { token })).json().tags, ['two'], 'its tags are gone');
  ociError(t, await call('DELETE', `/v2/${repo}/manifests/${one.digest}`, { token }), 404, 'MANIFEST_UNKNOWN');

  const byTag = await call('DELETE', `/v2/${repo}/manifests/two`, { token });
  t.equal(byTag.status, 202, 'DELETE by tag → 202');
  ociError(t, await call('GET', `/v2/${repo}/manifests/two`, { token }), 404, 'MANIFEST_UNKNOWN');
  t.equal((await call('GET', `/v2/${repo}/manifests/${two.digest}`, { token })).status, 200, 'the manifest itself stays');
  ociError(t, await call('DELETE', `/v2/${repo}/manifests/nosuchtag`, { token }), 404, 'MANIFEST_UNKNOWN');
  ociError(t, await call('DELETE', `/v2/${repo}/manifests/${unknownDigest()}`, { token }), 404, 'MANIFEST_UNKNOWN');

  const layer = two.layers[0]!;
  const delBlob = await call('DELETE', `/v2/${repo}/blobs/${layer.digest}`, { token });
  t.equal(delBlob.status, 202, 'DELETE blob → 202');
  ociError(t, await call('GET', `/v2/${repo}/blobs/${layer.digest}`, { token }), 404, 'BLOB_UNKNOWN');
  t.equal((await call('HEAD', `/v2/${repo}/blobs/${layer.digest}`, { token })).status, 404);
  ociError(t, await call('DELETE', `/v2/${repo}/blobs/${layer.digest}`, { token }), 404, 'BLOB_UNKNOWN');
  ociError(t, await call('DELETE', `/v2/${repo}/blobs/${unknownDigest()}`, { token }), 404, 'BLOB_UNKNOWN');

  // The same blob in two repositories: deleting it from one leaves the other's.
  const token2 = await tokenFor('alice', 'alice-pw', repo, 'alice/delete-2');
  const shared = randomBytes(600);
  const d = await pushBlob(repo, token2, shared);
  await pushBlob('alice/delete-2', token2, shared);
  t.equal((await call('DELETE', `/v2/${repo}/blobs/${d.digest}`, { token: token2 })).status, 202);
  t.equal((await call('HEAD', `/v2/${repo}/blobs/${d.digest}`, { token: token2 })).status, 404, 'gone from the repository it was deleted from');
  const other = await call('GET', `/v2/alice/delete-2/blobs/${d.digest}`, { token: token2 });
  t.equal(other.status, 200, 'still in the other repository');
  t.ok(other.body.equals(shared));
});

// ---------------------------------------------------------------------------
// Authentication and visibility
// ---------------------------------------------------------------------------

t.test('auth: challenges, insufficient scope, private and public repositories', async (t) => {
  const repo = 'alice/private';
  const aliceToken = await tokenFor('alice', 'alice-pw', repo);
  const img = await pushImage(repo, aliceToken, 'v1', 1);

  const anonPush = await call('POST', `/v2/${repo}/blobs/uploads/`);
  ociError(t, anonPush, 401, 'UNAUTHORIZED');
  t.equal(anonPush.headers['www-authenticate'], `Bearer realm="${base}/v2/token",service="${host}",scope="repository:${repo}:pull,push"`, 'the challenge names the token realm, the service and the scope');
  const anonManifestPut = await putManifest(repo, 'v2', '', img.manifest);
  ociError(t, anonManifestPut, 401, 'UNAUTHORIZED');
  t.match(anonManifestPut.headers['www-authenticate'], /^Bearer realm="[^"]+\/v2\/token",service="[^"]+",scope="repository:alice\/private:pull,push"/);

  // Bob asks for push on alice's private repository: the token grants nothing there, and
  // bob may not read it: to him it is as absent as any unknown name (404 NAME_UNKNOWN).
  const bobToken = await tokenFor('bob', 'bob-pw', repo);
  const bobPush = await call('POST', `/v2/${repo}/blobs/uploads/`, { token: bobToken });
  ociError(t, bobPush, 404, 'NAME_UNKNOWN');
  t.notMatch(bobPush.headers['www-authenticate'], /insufficient_scope/, 'no hint that there is something to widen');
  const bobPut = await putManifest(repo, 'v1', bobToken, img.manifest);
  ociError(t, bobPut, 404, 'NAME_UNKNOWN');
  const bobDelete = await call('DELETE', `/v2/${repo}/manifests/${img.digest}`, { token: bobToken });
  ociError(t, bobDelete, 404, 'NAME_UNKNOWN');
  t.equal((await call('GET', `/v2/${repo}/manifests/v1`, { token: aliceToken })).status, 200, 'nothing was changed by bob');

  // alice's own repository, with a token that asked for less.
  const pullOnly = await tokenWith('alice', 'alice-pw', 'pull', repo);
  t.equal((await call('GET', `/v2/${repo}/manifests/v1`, { token: pullOnly })).status, 200, 'a pull token pulls');
  const pullOnlyPush = await call('POST', `/v2/${repo}/blobs/uploads/`, { token: pullOnly });
  ociError(t, pullOnlyPush, 401, 'UNAUTHORIZED');
  t.equal(pullOnlyPush.headers['www-authenticate'], `Bearer realm="${base}/v2/token",service="${host}",scope="repository:${repo}:pull,push",error="insufficient_scope"`);
  const noDelete = await tokenWith('alice', 'alice-pw', 'pull,push', repo);
  const noDeleteDel = await call('DELETE', `/v2/${repo}/manifests/${img.digest}`, { token: noDelete });
  ociError(t, noDeleteDel, 401, 'UNAUTHORIZED');
  t.equal(noDeleteDel.headers['www-authenticate'], `Bearer realm="${base}/v2/token",service="${host}",scope="repository:${repo}:delete",error="insufficient_scope"`);
  t.equal((await call('GET', `/v2/${repo}/manifests/v1`, { token: aliceToken })).status, 200, 'still there');

  // Reading a private repository without rights: as if it did not exist. Without
  // credentials: 401 and a challenge naming it (the client logs in and retries);
  // with a token that may not read it: 404.
  for (const [who, token, status, code] of [['anonymous', undefined, 401, 'UNAUTHORIZED'], ['unauthenticated token', 'unauthenticated', 401, 'UNAUTHORIZED'], ['bob', bobToken, 404, 'NAME_UNKNOWN']] as const) {
    const get = await call('GET', `/v2/${repo}/manifests/v1`, { token });
    ociError(t, get, status, code);
    t.equal(get.headers['www-authenticate'], `Bearer realm="${base}/v2/token",service="${host}",scope="repository:${repo}:pull"`, `${who}: a challenge comes with the ${status}`);
    t.equal((await call('HEAD', `/v2/${repo}/blobs/${img.layers[0]!.digest}`, { token })).status, status, `${who}: blob HEAD → ${status}`);
    ociError(t, await call('GET', `/v2/${repo}/tags/list`, { token }), status, code);
  }

  // The admin API makes it public: anonymous pulls with the `unauthenticated` token.
  const pub = await setPublic(repo, true);
  t.equal(pub.status, 200, pub.text);
  t.same(pub.json(), { name: repo, public: true });
  const anonToken = await call('GET', `/v2/token?service=${host}&scope=repository:${repo}:pull`);
  t.equal(anonToken.status, 200);
  t.equal(anonToken.json().token, 'unauthenticated', 'an anonymous token is `unauthenticated`');
  const get = await call('GET', `/v2/${repo}/manifests/v1`, { token: 'unauthenticated', headers: { Accept: OCI_MANIFEST } });
  t.equal(get.status, 200, 'public: anonymous pull');
  t.ok(get.body.equals(img.manifest));
  const blob = await call('GET', `/v2/${repo}/blobs/${img.layers[0]!.digest}`, { token: 'unauthenticated' });
  t.equal(blob.status, 200);
  t.ok(blob.body.equals(img.blobs.get(img.layers[0]!.digest)!));
  t.equal((await call('GET', `/v2/${repo}/tags/list`, { token: 'unauthenticated' })).status, 200);
  const noAuth = await call('GET', `/v2/${repo}/manifests/${img.digest}`);
  t.equal(noAuth.status, 200, 'public: a pull with no Authorization at all');
  t.ok(noAuth.body.equals(img.manifest));
  ociError(t, await call('POST', `/v2/${repo}/blobs/uploads/`, { token: 'unauthenticated' }), 401, 'UNAUTHORIZED');
  ociError(t, await call('POST', `/v2/${repo}/blobs/uploads/`, { token: bobToken }), 401, 'UNAUTHORIZED');

  const priv = await setPublic(repo, false);
  t.equal(priv.status, 200);
  ociError(t, await call('GET', `/v2/${repo}/manifests/v1`, { token: 'unauthenticated' }), 401, 'UNAUTHORIZED');
  t.equal((await setPublic('alice/does-not-exist', true)).status, 404, 'visibility of an unknown repository → 404');

  ociError(t, await call('GET', `/v2/${repo}/manifests/v1`, { token: 'expired-or-forged' }), 401, 'UNAUTHORIZED');
  ociError(t, await call('GET', '/v2/Bad_Name/manifests/v1', { token: aliceToken }), [400, 404], ['NAME_INVALID', 'NAME_UNKNOWN']);
});

// Standalone tokens grant everything on a name nobody has yet that the user may
// create (the first push creates it): here in the namespace `shared`, granted
// to both alice and bob. Access must follow who owns the repository now (§4:
// grant the intersection of requested and allowed actions), not what was
// allowed when the token was issued: a private repository stays readable and
// writable by its owner (and mapped users) only.
t.test('a grant given for a repository that did not exist yet does not survive someone else creating it', async (t) => {
  for (const user of ['alice', 'bob']) {
    const granted = await call('PUT', `/container_gateway/admin/users/${user}/namespaces/shared`);
    t.equal(granted.status, 200, granted.text);
  }
  // alice asks for shared/later before it exists (the grant is then everything),
  // and both ask for shared/race before either pushed.
  const stale = await tokenFor('alice', 'alice-pw', 'shared/later', 'alice/stolen', 'shared/race');
  const bobToken = await tokenFor('bob', 'bob-pw', 'shared/later', 'shared/race');
  const img = await pushImage('shared/later', bobToken, 'v1', 1);
  const layer = img.layers[0]!;

  const get = await call('GET', '/v2/shared/later/manifests/v1', { token: stale });
  ociError(t, get, 404, 'NAME_UNKNOWN');
  t.equal((await call('HEAD', `/v2/shared/later/blobs/${layer.digest}`, { token: stale })).status, 404, "alice cannot read bob's blob");
  ociError(t, await call('GET', '/v2/shared/later/tags/list', { token: stale }), 404, 'NAME_UNKNOWN');

  const mount = await call('POST', `/v2/alice/stolen/blobs/uploads/?mount=${layer.digest}&from=shared/later`, { token: stale });
  t.equal(mount.status, 202, `mount from bob's private repository → 202, got ${mount.status}`);
  t.equal((await call('HEAD', `/v2/alice/stolen/blobs/${layer.digest}`, { token: stale })).status, 404, "bob's blob was not mounted into alice/stolen");

  // alice may not read bob's repository: every write is answered as for an absent one.
  const push = await call('POST', '/v2/shared/later/blobs/uploads/', { token: stale });
  ociError(t, push, 404, 'NAME_UNKNOWN');
  if (push.status === 202) await call('DELETE', push.headers.location!, { token: stale });
  const put = await putManifest('shared/later', 'hijacked', stale, img.manifest);
  ociError(t, put, 404, 'NAME_UNKNOWN');
  const delManifest = await call('DELETE', `/v2/shared/later/manifests/${img.digest}`, { token: stale });
  ociError(t, delManifest, 404, 'NAME_UNKNOWN');
  const delBlob = await call('DELETE', `/v2/shared/later/blobs/${layer.digest}`, { token: stale });
  ociError(t, delBlob, 404, 'NAME_UNKNOWN');
  t.equal((await call('GET', '/v2/shared/later/manifests/v1', { token: bobToken })).status, 200, "bob's manifest is still there");
  t.equal((await call('HEAD', `/v2/shared/later/blobs/${layer.digest}`, { token: bobToken })).status, 200, "bob's blob is still there");

  // Two users, one new name: the first push creates it (owned by alice), the other may not write to it.
  await pushImage('shared/race', stale, 'v1', 1);
  const second = await call('POST', '/v2/shared/race/blobs/uploads/', { token: bobToken });
  ociError(t, second, 404, 'NAME_UNKNOWN');
  if (second.status === 202) await call('DELETE', second.headers.location!, { token: bobToken });
  ociError(t, await call('GET', '/v2/shared/race/manifests/v1', { token: bobToken }), 404, 'NAME_UNKNOWN');
});

// A repository is created by its first push; a request that fails (404, 400)
// must leave no repository behind (which would then answer tags/list with 200
// and belong to whoever sent the failing request).
t.test('a request that fails does not create the repository', async (t) => {
  const token = await tokenFor('bob', 'bob-pw', 'bob/ghost', 'bob/ghost2');
  const status = await call('GET', '/v2/bob/ghost/blobs/uploads/3f1c2b7e-0000-4000-8000-000000000000', { token });
  ociError(t, status, 404, 'BLOB_UPLOAD_UNKNOWN');
  const invalid = await putManifest('bob/ghost2', 'v1', token, Buffer.from('not json'));
  ociError(t, invalid, 400, 'MANIFEST_INVALID');
  for (const name of ['bob/ghost', 'bob/ghost2']) {
    ociError(t, await call('GET', `/v2/${name}/tags/list`, { token }), 404, 'NAME_UNKNOWN');
  }
  const repos = await call('GET', '/container_gateway/admin/repositories');
  t.equal(repos.status, 200);
  const names = repos.json<{ repositories: Array<{ name: string }> }>().repositories.map((r) => r.name);
  t.notOk(names.includes('bob/ghost'), 'bob/ghost is not a repository after a 404');
  t.notOk(names.includes('bob/ghost2'), 'bob/ghost2 is not a repository after a 400');
});

// ---------------------------------------------------------------------------
// Every answer
// ---------------------------------------------------------------------------

t.test('every /v2/ response carries Docker-Distribution-API-Version; every 4xx body is an OCI error body', async (t) => {
  t.ok(recorded.length > 200, `${recorded.length} responses recorded`);
  const missing = recorded.filter((r) => r.headers['docker-distribution-api-version'] !== 'registry/2.0');
  t.same(missing.map((r) => `${r.method} ${r.url} → ${r.status}`), [], 'Docker-Distribution-API-Version: registry/2.0 everywhere');
  const badErrors = recorded.filter((r) => {
    if (r.status < 400 || r.status >= 500 || r.method === 'HEAD') return false;
    try {
      const body = JSON.parse(r.text) as { errors?: Array<{ code?: unknown }> };
      return !Array.isArray(body.errors) || body.errors.length === 0 || body.errors.some((e) => typeof e.code !== 'string' || !/^[A-Z_]+$/.test(e.code));
    } catch {
      return true;
    }
  });
  t.same(badErrors.map((r) => `${r.method} ${r.url} → ${r.status} ${r.text.slice(0, 100)}`), [], '{"errors":[{"code":...}]} on every 4xx');
  const nonOci = recorded.filter((r) => r.status >= 400 && r.status < 500 && r.method !== 'HEAD').flatMap((r) => {
    try {
      return (JSON.parse(r.text) as { errors: Array<{ code: string }> }).errors.map((e) => e.code).filter((c) => !OCI_CODES.has(c));
    } catch {
      return [];
    }
  });
  t.same([...new Set(nonOci)], [], 'only the codes of the spec');
});
