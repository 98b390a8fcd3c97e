// Real clients against the embedded content store (content_backend: local,
// standalone mode), byte for byte: skopeo copies OCI layouts (a multi-layer
// image, a two-platform image index) and a Docker v2s2 image to the gateway
// and back; podman logs in, pushes and pulls; anonymous pulls of a private
// repository are refused.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { buildImage, layoutBlobPath, layoutBlobs, layoutManifest, podman, pullImage, pushImage, sha256, skopeo } from './helpers/images.ts';
import { startProxyd } from './helpers/proxyd.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const ALL_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, 'application/vnd.docker.distribution.manifest.list.v2+json'].join(', ');
const ALICE = 'alice:alice-pw';

const work = mkdtempSync(join(tmpdir(), 'gw-roundtrip-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const proxyd = await startProxyd({
  fixtures: false,
  settings: { log_level: 'INFO' },
  plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'gw.db'), storage_path: join(work, 'storage') } },
});
t.teardown(() => proxyd.stop());
const base = proxyd.httpUrl;
const gw = new URL(base).host;

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function call(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`timeout: ${method} ${path}`)));
    req.on('error', reject);
    req.end(body);
  });
}

async function addUser(name: string, password: string): Promise<void> {
  const res = await call('POST', '/container_gateway/admin/users', { 'Content-Type': 'application/json' }, JSON.stringify({ name, password }));
  if (res.status !== 201) throw new Error(`admin: add user ${name}: ${res.status} ${res.body}`);
}

async function tokenFor(creds: string, repo: string): Promise<string> {
  const res = await call('GET', `/v2/token?service=${gw}&scope=repository:${repo}:pull`, { Authorization: `Basic ${Buffer.from(creds).toString('base64')}` });
  if (res.status !== 200) throw new Error(`token: ${res.status} ${res.body}`);
  return (JSON.parse(res.body.toString()) as { token: string }).token;
}

/** The manifest as the gateway serves it (by tag or digest). */
async function served(repo: string, ref: string, token: string): Promise<Res> {
  return call('GET', `/v2/${repo}/manifests/${ref}`, { Authorization: `Bearer ${token}`, Accept: ALL_TYPES });
}

function blobBytes(layout: string, digest: string): Buffer {
  return readFileSync(layoutBlobPath(layout, digest));
}

/** Every blob of `source` is in `out` with the same bytes, and `out` has no others. */
function sameBlobs(t: Tap, out: string, source: string, expected = layoutBlobs(source)): void {
  t.same(layoutBlobs(out), expected, 'the same blobs, by digest');
  for (const digest of expected) {
    const copy = blobBytes(out, digest);
    t.equal(sha256(copy), digest, `${digest.slice(0, 19)}: the content matches its digest`);
    t.ok(copy.equals(blobBytes(source, digest)), `${digest.slice(0, 19)}: byte-identical`);
  }
}

await addUser('alice', 'alice-pw');
await addUser('bob', 'bob-pw');

t.test('skopeo: a 3-layer OCI image, layout → gateway → layout, byte for byte', async (t) => {
  const app = await buildImage(join(work, 'src'), { name: 'app', files: { '/etc/app.txt': 'roundtrip app\n' }, layers: 3, randomBytes: 1024 * 1024 });
  const source = layoutManifest(app.layout);
  t.equal(source.manifest.layers.length, 3, 'the source has 3 layers');
  await pushImage(app.ref, `${gw}/alice/app:v1`, { creds: ALICE });

  const token = await tokenFor(ALICE, 'alice/app');
  const res = await served('alice/app', 'v1', token);
  t.equal(res.status, 200);
  t.equal(res.headers['content-type'], OCI_MANIFEST);
  t.equal(res.headers['docker-content-digest'], source.digest, 'the gateway serves the manifest under its digest');
  t.ok(res.body.equals(source.raw), 'the manifest bytes are the layout\'s');

  const out = join(work, 'out-app');
  await pullImage(`${gw}/alice/app:v1`, `oci:${out}:copy`, { creds: ALICE });
  sameBlobs(t, out, app.layout);
  t.equal(layoutManifest(out, 'copy').digest, source.digest, 'the same manifest digest');

  // Registry to registry within the gateway: skopeo, remembering where it
  // uploaded the layers (its blob-info cache), mounts them from there.
  const cacheDir = join(work, 'skopeo-cache-app');
  mkdirSync(cacheDir);
  await pushImage(app.ref, `${gw}/alice/app-source:v1`, { creds: ALICE, cacheDir });
  const before = proxyd.lines.length;
  const copy = await skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--src-creds', ALICE, '--dest-creds', ALICE, `docker://${gw}/alice/app-source:v1`, `docker://${gw}/alice/app-mounted:v1`], { cacheDir });
  t.equal(copy.code, 0, copy.stderr);
  // The access log: "Started POST <path> <query>" and "Finished POST <path> with <status>", one request id.
  const records = proxyd.lines.slice(before).flatMap((l) => {
    try {
      return [JSON.parse(l) as { msg?: string; request?: string }];
    } catch {
      return [];
    }
  });
  const statusOf = (started: { request?: string }) => /with (\d{3})/.exec(records.find((r) => r.request === started.request && r.msg?.startsWith('Finished'))?.msg ?? '')?.[1];
  for (const layer of source.manifest.layers) {
    const started = records.find((r) => r.msg === `Started POST /v2/alice/app-mounted/blobs/uploads/ from=alice%2Fapp-source&mount=${encodeURIComponent(layer.digest)}`);
    t.ok(started, `skopeo asked to mount layer ${layer.digest.slice(0, 19)} from alice/app-source`);
    if (started) t.equal(statusOf(started), '201', 'mounted: 201');
  }
  const mounted = await served('alice/app-mounted', 'v1', await tokenFor(ALICE, 'alice/app-mounted'));
  t.equal(mounted.headers['docker-content-digest'], source.digest, 'the same manifest in the new repository');
  const out2 = join(work, 'out-app-mounted');
  await pullImage(`${gw}/alice/app-mounted:v1`, `oci:${out2}:copy`, { creds: ALICE });
  sameBlobs(t, out2, app.layout);
});

t.test('skopeo --all: a two-platform OCI image index, layout → gateway → layout', async (t) => {
  const dir = join(work, 'src-multi');
  const amd = await buildImage(dir, { name: 'multi', tag: 'amd64', files: { '/etc/arch.txt': 'amd64\n', '/bin/hello-amd64': '#!/bin/sh\necho amd64\n' }, layers: 2 });
  await buildImage(dir, { name: 'multi', tag: 'arm64', files: { '/etc/arch.txt': 'arm64\n', '/bin/hello-arm64': '#!/bin/sh\necho arm64\n' } });
  const layout = amd.layout;
  const amdImage = layoutManifest(layout, 'amd64');
  const armImage = layoutManifest(layout, 'arm64');
  t.not(amdImage.digest, armImage.digest, 'two different images');

  // The index, written by hand: a blob and an index.json entry.
  const indexBytes = Buffer.from(`${JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      { mediaType: OCI_MANIFEST, digest: amdImage.digest, size: amdImage.raw.length, platform: { architecture: 'amd64', os: 'linux' } },
      { mediaType: OCI_MANIFEST, digest: armImage.digest, size: armImage.raw.length, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
    ],
    annotations: { 'org.example.note': 'two platforms' },
  }, null, 2)}\n`);
  const indexDigest = sha256(indexBytes);
  writeFileSync(layoutBlobPath(layout, indexDigest), indexBytes);
  const layoutIndex = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: unknown[] };
  layoutIndex.manifests.push({ mediaType: OCI_INDEX, digest: indexDigest, size: indexBytes.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } });
  writeFileSync(join(layout, 'index.json'), JSON.stringify(layoutIndex));

  await pushImage(`oci:${layout}:multi`, `${gw}/alice/multi:v1`, { creds: ALICE, args: ['--all'] });

  const token = await tokenFor(ALICE, 'alice/multi');
  const res = await served('alice/multi', 'v1', token);
  t.equal(res.status, 200);
  t.equal(res.headers['content-type'], OCI_INDEX, 'served as an OCI image index');
  t.equal(res.headers['docker-content-digest'], indexDigest, 'under the index digest');
  t.ok(res.body.equals(indexBytes), 'the index bytes are ours');
  for (const child of [amdImage, armImage]) {
    const c = await served('alice/multi', child.digest, token);
    t.equal(c.status, 200, `child ${child.digest.slice(0, 19)} is there`);
    t.ok(c.body.equals(child.raw), 'byte-identical');
  }

  const out = join(work, 'out-multi');
  await pullImage(`${gw}/alice/multi:v1`, `oci:${out}:copy`, { creds: ALICE, args: ['--all'] });
  const copied = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; mediaType: string; annotations?: Record<string, string> }> };
  const entry = copied.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'copy');
  t.equal(entry?.digest, indexDigest, 'the same index digest');
  t.equal(entry?.mediaType, OCI_INDEX);
  // Everything the index reaches: itself, both manifests, their configs and layers.
  const reachable = new Set<string>([indexDigest]);
  for (const child of [amdImage, armImage]) {
    reachable.add(child.digest);
    reachable.add(child.manifest.config.digest);
    for (const l of child.manifest.layers) reachable.add(l.digest);
  }
  sameBlobs(t, out, layout, [...reachable].sort());
});

t.test('skopeo --format v2s2: a Docker image keeps its media type, there and back', async (t) => {
  const legacy = await buildImage(join(work, 'src-legacy'), { name: 'legacy', files: { '/etc/legacy.txt': 'docker v2s2\n' }, layers: 2 });
  const source = layoutManifest(legacy.layout);
  await pushImage(legacy.ref, `${gw}/alice/legacy:v1`, { creds: ALICE, format: 'v2s2' });

  const token = await tokenFor(ALICE, 'alice/legacy');
  const res = await served('alice/legacy', 'v1', token);
  t.equal(res.status, 200);
  t.equal(res.headers['content-type'], DOCKER_MANIFEST, 'Content-Type: Docker v2s2');
  t.equal(res.headers['docker-content-digest'], sha256(res.body), 'Docker-Content-Digest = sha256 of the body');
  const manifest = JSON.parse(res.body.toString()) as { mediaType: string; config: { digest: string }; layers: Array<{ digest: string; mediaType: string }> };
  t.equal(manifest.mediaType, DOCKER_MANIFEST);
  t.same(manifest.layers.map((l) => l.digest), source.manifest.layers.map((l) => l.digest), 'the layers are the source\'s (no recompression)');

  const raw = await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', ALICE, `docker://${gw}/alice/legacy:v1`]);
  t.equal(raw.code, 0, raw.stderr);
  t.equal(raw.stdout, res.body.toString(), 'skopeo inspect --raw sees the same bytes');

  // dir: keeps the manifest exactly as served (an OCI layout would convert it).
  const out = join(work, 'out-legacy');
  const back = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', ALICE, `docker://${gw}/alice/legacy:v1`, `dir:${out}`]);
  t.equal(back.code, 0, back.stderr);
  const copied = readFileSync(join(out, 'manifest.json'));
  t.ok(copied.equals(res.body), 'the manifest came back byte for byte');
  t.equal(JSON.parse(copied.toString()).mediaType, DOCKER_MANIFEST, 'still Docker v2s2');
  for (const l of source.manifest.layers) {
    const hex = l.digest.split(':')[1]!;
    t.ok(readFileSync(join(out, hex)).equals(blobBytes(legacy.layout, l.digest)), `layer ${l.digest.slice(0, 19)} byte-identical`);
  }
  const config = readFileSync(join(out, manifest.config.digest.split(':')[1]!));
  t.equal(sha256(config), manifest.config.digest, 'the config matches its digest');

  // And once more to the gateway from dir:, unchanged.
  await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', ALICE, `dir:${out}`, `docker://${gw}/alice/legacy:again`]).then((r) => t.equal(r.code, 0, r.stderr));
  const again = await served('alice/legacy', 'again', token);
  t.equal(again.headers['docker-content-digest'], res.headers['docker-content-digest'], 'the same manifest digest after a second trip');
});

t.test('podman: login, push, pull back; anonymous pulls refused while private', async (t) => {
  // podman names an image pulled from a layout after its path, which must be lowercase.
  const lower = join(tmpdir(), `gw-roundtrip-${randomBytes(6).toString('hex')}`);
  mkdirSync(lower);
  t.teardown(() => rmSync(lower, { recursive: true, force: true }));
  const img = await buildImage(lower, { name: 'pod', files: { '/etc/pod.txt': 'pushed by podman\n' }, layers: 2 });
  const pusher = join(work, 'podman-push');
  const ref = `${gw}/alice/podman:v1`;

  const login = await podman(pusher, ['login', '--tls-verify=false', '-u', 'alice', '-p', 'alice-pw', gw]);
  t.equal(login.code, 0, `podman login: ${login.stderr}`);
  const badLogin = await podman(join(work, 'podman-bad'), ['login', '--tls-verify=false', '-u', 'alice', '-p', 'wrong', gw]);
  t.not(badLogin.code, 0, 'a wrong password is refused');

  const local = await podman(pusher, ['pull', `oci:${img.layout}:${img.tag}`]);
  t.equal(local.code, 0, `podman pull from the layout: ${local.stderr}`);
  const imageId = local.stdout.trim().split('\n').pop()!; // podman pull prints the image id last
  const tagged = await podman(pusher, ['tag', imageId, ref]);
  t.equal(tagged.code, 0, tagged.stderr);
  const push = await podman(pusher, ['push', '--tls-verify=false', ref]);
  t.equal(push.code, 0, `podman push: ${push.stderr}`);

  // What the gateway now holds.
  const token = await tokenFor(ALICE, 'alice/podman');
  const head = await call('HEAD', '/v2/alice/podman/manifests/v1', { Authorization: `Bearer ${token}`, Accept: ALL_TYPES });
  t.equal(head.status, 200);
  const digest = head.headers['docker-content-digest'] as string;
  t.match(digest, /^sha256:[0-9a-f]{64}$/);

  // A fresh store pulls it back.
  const puller = join(work, 'podman-pull');
  t.equal((await podman(puller, ['login', '--tls-verify=false', '-u', 'alice', '-p', 'alice-pw', gw])).code, 0);
  const pull = await podman(puller, ['pull', '--tls-verify=false', ref]);
  t.equal(pull.code, 0, `podman pull: ${pull.stderr}`);
  const pulled = await podman(puller, ['image', 'inspect', '--format', '{{.Id}} {{.Digest}} {{json .RootFS.Layers}}', ref]);
  const pushed = await podman(pusher, ['image', 'inspect', '--format', '{{.Id}} {{json .RootFS.Layers}}', ref]);
  const [pulledId, pulledDigest, pulledLayers] = pulled.stdout.trim().split(' ');
  const [pushedId, pushedLayers] = pushed.stdout.trim().split(' ');
  t.equal(pulledId, pushedId, 'the same image id (config digest) on both sides');
  t.equal(pulledLayers, pushedLayers, 'the same layer diff ids');
  t.equal(pulledDigest, digest, 'the pulled image has the manifest digest the gateway serves');

  // The gateway's blobs are what it says they are.
  const manifest = JSON.parse((await served('alice/podman', digest, token)).body.toString()) as { config: { digest: string; size: number }; layers: Array<{ digest: string; size: number }> };
  for (const d of [manifest.config, ...manifest.layers]) {
    const blob = await call('GET', `/v2/alice/podman/blobs/${d.digest}`, { Authorization: `Bearer ${token}` });
    t.equal(blob.status, 200);
    t.equal(blob.body.length, d.size, `${d.digest.slice(0, 19)}: the size in the manifest`);
    t.equal(createHash('sha256').update(blob.body).digest('hex'), d.digest.split(':')[1], `${d.digest.slice(0, 19)}: the digest in the manifest`);
  }

  // Anonymous: refused while private (as if it did not exist).
  const anonStore = join(work, 'podman-anon');
  const anon = await podman(anonStore, ['pull', '--tls-verify=false', ref]);
  t.not(anon.code, 0, 'an anonymous podman pull fails');
  t.match(anon.stderr, /unknown|not found|unauthorized|denied/i, `and says why: ${anon.stderr.trim().split('\n').pop()}`);
  const anonSkopeo = await skopeo(['inspect', '--tls-verify=false', `docker://${ref}`]);
  t.not(anonSkopeo.code, 0, 'an anonymous skopeo inspect fails');
  const bobStore = join(work, 'podman-bob');
  t.equal((await podman(bobStore, ['login', '--tls-verify=false', '-u', 'bob', '-p', 'bob-pw', gw])).code, 0);
  t.not((await podman(bobStore, ['pull', '--tls-verify=false', ref])).code, 0, 'another user cannot pull it either');
  const bobLocal = await podman(bobStore, ['pull', `oci:${img.layout}:${img.tag}`]);
  t.equal(bobLocal.code, 0, bobLocal.stderr);
  t.equal((await podman(bobStore, ['tag', bobLocal.stdout.trim().split('\n').pop()!, ref])).code, 0);
  const bobPush = await podman(bobStore, ['push', '--tls-verify=false', ref]);
  t.not(bobPush.code, 0, 'nor push to it');
  t.match(bobPush.stderr, /name unknown/i, `refused by the registry: ${bobPush.stderr.trim().split('\n').pop()}`);

  // Made public: anonymous pulls work, with the same digest.
  const pub = await call('PUT', '/container_gateway/admin/repositories/alice/podman/visibility', { 'Content-Type': 'application/json' }, '{"public":true}');
  t.equal(pub.status, 200);
  const anonAgain = await podman(anonStore, ['pull', '--tls-verify=false', ref]);
  t.equal(anonAgain.code, 0, `public: anonymous pull works: ${anonAgain.stderr}`);
  const anonDigest = await podman(anonStore, ['image', 'inspect', '--format', '{{.Digest}}', ref]);
  t.equal(anonDigest.stdout.trim(), digest);
  const anonPush = await podman(anonStore, ['push', '--tls-verify=false', ref]);
  t.not(anonPush.code, 0, 'public does not mean anonymous pushes');
  t.match(anonPush.stderr, /unauthorized|denied|authentication required/i, `refused by the registry: ${anonPush.stderr.trim().split('\n').pop()}`);
});
