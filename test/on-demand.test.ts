// On-demand pull-through with real components (issue #12): the main server is
// docker-registry with token auth behind the Katello double, proxyd runs in
// smart-proxy mode with the embedded store, an EMPTY store and the default
// download_policy (on_demand there). skopeo and podman pull a multi-layer
// image and a two-platform index on the first try, byte for byte as the main
// server has them, and the main server's access log shows each manifest and
// blob asked for once; a second pull asks the main server for nothing; a
// client that may not read a repository is refused and costs no upstream
// request; the streamed policy serves the same bytes and keeps nothing.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { contentPath, countRequests, describe, markAccessLog, ofRepository } from './helpers/access-log.ts';
import { request } from './helpers/http.ts';
import { buildImage, layoutBlobPath, layoutBlobs, layoutManifest, podman, pullImage, pushImage, sha256, type BuiltImage } from './helpers/images.ts';
import type { MainServer } from './helpers/main-server.ts';
import { buildTwoPlatformIndex, OCI_INDEX, type BuiltIndex } from './helpers/oci-index.ts';
import { ACCEPT, ALICE, BOB, capsuleTokenRequests, listRepositories, mainToken, missingFromStore, PUSHER, proxyToken, startProxy, startScene, storedBlobs } from './helpers/on-demand.ts';
import type { RunningProxyd } from './helpers/proxyd.ts';
import type { AccessLogEntry } from './helpers/registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const APP = 'acme/web/app';
const POD = 'acme/web/pod';
const MULTI = 'acme/web/multi';
const SECRET = 'acme/web/secret';
const UNLISTED = 'acme/web/unlisted';
const STREAM = 'acme/web/stream';
const PUBLIC = [APP, POD, MULTI, STREAM];

const work = mkdtempSync(join(tmpdir(), 'gw-on-demand-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

let main: MainServer;
let proxy: RunningProxyd;
let gw: string;
let app: BuiltImage;
let pod: BuiltImage;
let secret: BuiltImage;
let stream: BuiltImage;
let multi: BuiltIndex;

t.before(async () => {
  main = await startScene([...PUBLIC, SECRET, UNLISTED], [SECRET, UNLISTED]);
  const src = join(work, 'src');
  app = await buildImage(src, { name: 'app', files: { '/etc/app.txt': 'on demand\n' }, layers: 3, randomBytes: 2 * 1024 * 1024 });
  pod = await buildImage(src, { name: 'pod', files: { '/etc/pod.txt': 'pulled by podman\n' }, layers: 2, randomBytes: 1024 * 1024 });
  secret = await buildImage(src, { name: 'secret', files: { '/etc/secret.txt': 'private\n' }, layers: 2 });
  stream = await buildImage(src, { name: 'stream', files: { '/etc/stream.txt': 'streamed\n' }, layers: 2, randomBytes: 1024 * 1024 });
  multi = await buildTwoPlatformIndex(src, 'multi', { randomBytes: 256 * 1024 });
  const into = (name: string) => `${main.registry.host}/${name}:v1`;
  await pushImage(app.ref, into(APP), { creds: PUSHER });
  await pushImage(pod.ref, into(POD), { creds: PUSHER });
  await pushImage(secret.ref, into(SECRET), { creds: PUSHER });
  await pushImage(secret.ref, into(UNLISTED), { creds: PUSHER });
  await pushImage(stream.ref, into(STREAM), { creds: PUSHER });
  await pushImage(multi.ref, into(MULTI), { creds: PUSHER, args: ['--all'] });

  proxy = await startProxy(main, join(work, 'proxy'));
  gw = new URL(proxy.httpUrl).host;
  await listRepositories(proxy, [...PUBLIC.map((repository) => ({ repository, auth_required: false })), { repository: SECRET, auth_required: true }]);
});
t.teardown(async () => {
  await proxy?.stop();
  await main?.stop();
});

/** The manifest as the main server serves it, read directly with the pusher's token. */
async function upstreamManifest(name: string, ref: string): Promise<{ digest: string; body: string; type: string }> {
  const r = await request(`${main.registry.url}/v2/${name}/manifests/${ref}`, { headers: { Accept: ACCEPT, Authorization: `Bearer ${await mainToken(main, PUSHER, name)}` } });
  if (r.status !== 200) throw new Error(`main server: ${name}:${ref} ${r.status}`);
  return { digest: String(r.headers['docker-content-digest']), body: r.body, type: String(r.headers['content-type']) };
}

/** The out layout holds exactly `digests`, each byte-identical to the source layout's copy. */
function sameBlobs(tt: Tap, out: string, source: string, digests: string[]): void {
  tt.same(layoutBlobs(out), [...digests].sort(), 'the same blobs, by digest');
  for (const d of digests) tt.ok(readFileSync(layoutBlobPath(out, d)).equals(readFileSync(layoutBlobPath(source, d))), `${d.slice(0, 19)} byte-identical`);
}

/** Every digest a single-platform image consists of: manifest, config, layers. */
function imageDigests(img: BuiltImage): string[] {
  const m = layoutManifest(img.layout, img.tag);
  return [m.digest, m.manifest.config.digest, ...m.manifest.layers.map((l) => l.digest)];
}

/**
 * The repository's requests at the main server were exactly one GET of each
 * of `refs` (tags and digests, manifests and blobs), and nothing else.
 */
function fetchedOnce(tt: Tap, entries: AccessLogEntry[], name: string, manifests: string[], blobs: string[]): void {
  const mine = ofRepository(entries, name);
  const counts = countRequests(mine);
  const want = new Map<string, number>([...manifests.map((r) => `GET /v2/${name}/manifests/${r}`), ...blobs.map((d) => `GET /v2/${name}/blobs/${d}`)].map((k) => [k, 1]));
  tt.same(Object.fromEntries(counts), Object.fromEntries(want), `each manifest and blob asked for once, nothing else:\n${describe(mine)}`);
  tt.ok(mine.every((e) => e.status === 200), 'every upstream request answered 200 (no 401 round trip)');
}

t.test('skopeo copy of a multi-layer image from an empty store: first try, byte for byte, each blob fetched once; a second pull asks for nothing', async (t) => {
  const built = layoutManifest(app.layout, app.tag);
  const want = await upstreamManifest(APP, 'v1');
  t.equal(want.digest, built.digest, 'the main server holds the pushed image');
  t.same(storedBlobs(join(work, 'proxy', 'storage')), [], 'the store starts empty');

  const mark = await markAccessLog(main);
  const tokensBefore = capsuleTokenRequests(main).length;
  const out = join(work, 'out-app');
  await pullImage(`${gw}/${APP}:v1`, `oci:${out}:v1`);
  t.equal(layoutManifest(out, 'v1').digest, want.digest, 'the same manifest digest as the main server');
  sameBlobs(t, out, app.layout, imageDigests(app));
  const served = await request(`${proxy.httpUrl}/v2/${APP}/manifests/v1`, { headers: { Accept: ACCEPT } });
  t.equal(served.body, want.body, "the manifest's exact bytes");
  t.equal(served.headers['content-type'], want.type);
  fetchedOnce(t, await mark.since(), APP, ['v1'], [built.manifest.config.digest, ...built.manifest.layers.map((l) => l.digest)]);
  t.ok(capsuleTokenRequests(main).length > tokensBefore, "upstream was read as the proxy's own account");
  t.same(await missingFromStore(join(work, 'proxy', 'storage'), imageDigests(app).slice(1)), [], 'config and layers kept in the store');

  // Within manifest_check_interval (default 300 s): nothing upstream, not even a HEAD or a token.
  const again = await markAccessLog(main);
  const tokens = capsuleTokenRequests(main).length;
  const out2 = join(work, 'out-app-2');
  await pullImage(`${gw}/${APP}:v1`, `oci:${out2}:v1`);
  sameBlobs(t, out2, app.layout, imageDigests(app));
  const second = await again.since();
  t.same(second, [], `the second pull asked the main server for nothing:\n${describe(second)}`);
  t.equal(capsuleTokenRequests(main).length, tokens, 'and asked Katello for no token');
});

t.test('podman pull from an empty store: the published digest, each blob fetched once', async (t) => {
  const built = layoutManifest(pod.layout, pod.tag);
  const mark = await markAccessLog(main);
  const store = join(work, 'podman-pod');
  const pulled = await podman(store, ['pull', '--tls-verify=false', `${gw}/${POD}:v1`]);
  t.equal(pulled.code, 0, `podman pull: ${pulled.stderr}`);
  const digest = await podman(store, ['image', 'inspect', '--format', '{{.Digest}}', `${gw}/${POD}:v1`]);
  t.equal(digest.stdout.trim(), built.digest, 'podman has the image under the digest the main server publishes');
  fetchedOnce(t, await mark.since(), POD, ['v1'], [built.manifest.config.digest, ...built.manifest.layers.map((l) => l.digest)]);
});

t.test('a two-platform index: podman pulls its platform, skopeo --all the rest; children fetched as asked for, each once', async (t) => {
  t.equal((await upstreamManifest(MULTI, 'v1')).digest, multi.digest, 'the main server holds the index');
  const amdBlobs = [multi.amd64.manifest.config.digest, ...multi.amd64.manifest.layers.map((l) => l.digest)];
  const armBlobs = [multi.arm64.manifest.config.digest, ...multi.arm64.manifest.layers.map((l) => l.digest)];
  const mark = await markAccessLog(main);

  const store = join(work, 'podman-multi');
  const pulled = await podman(store, ['pull', '--tls-verify=false', '--arch', 'amd64', `${gw}/${MULTI}:v1`]);
  t.equal(pulled.code, 0, `podman pull: ${pulled.stderr}`);
  const digest = await podman(store, ['image', 'inspect', '--format', '{{.Digest}}', `${gw}/${MULTI}:v1`]);
  t.equal(digest.stdout.trim(), multi.digest, 'podman has the image under the index digest');
  const afterPodman = await mark.since();
  fetchedOnce(t, afterPodman, MULTI, ['v1', multi.amd64.digest], amdBlobs);
  t.notOk(afterPodman.some((e) => e.path.endsWith(multi.arm64.digest)), 'the arm64 manifest is not fetched before someone asks for it');

  const out = join(work, 'out-multi');
  await pullImage(`${gw}/${MULTI}:v1`, `oci:${out}:v1`, { args: ['--all'] });
  const copied = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; mediaType: string }> };
  t.equal(copied.manifests[0]?.digest, multi.digest, 'skopeo --all copies the same index digest');
  t.equal(copied.manifests[0]?.mediaType, OCI_INDEX);
  sameBlobs(t, out, multi.layout, multi.reachable);
  fetchedOnce(t, await mark.since(), MULTI, ['v1', multi.amd64.digest, multi.arm64.digest], [...amdBlobs, ...armBlobs]);
});

t.test('a client that may not read a repository is refused and causes no upstream request', async (t) => {
  const secretManifest = layoutManifest(secret.layout, secret.tag);
  const layer = secretManifest.manifest.layers[0]!.digest;
  const mark = await markAccessLog(main);
  const tokens = capsuleTokenRequests(main).length;

  for (const name of [SECRET, UNLISTED]) {
    const anonManifest = await request(`${proxy.httpUrl}/v2/${name}/manifests/v1`, { headers: { Accept: ACCEPT } });
    t.equal(anonManifest.status, 401, `${name}: anonymous manifest GET: 401`);
    t.match(anonManifest.headers['www-authenticate'], /^Bearer realm=/, 'with a challenge');
    t.equal(anonManifest.json().errors[0].code, 'UNAUTHORIZED', 'an OCI error');
    const anonBlob = await request(`${proxy.httpUrl}/v2/${name}/blobs/${layer}`);
    t.equal(anonBlob.status, 401, `${name}: anonymous blob GET: 401`);
  }
  const bob = await proxyToken(proxy, BOB, SECRET);
  for (const path of [`/v2/${SECRET}/manifests/v1`, `/v2/${SECRET}/manifests/${secretManifest.digest}`, `/v2/${SECRET}/blobs/${layer}`]) {
    const r = await request(`${proxy.httpUrl}${path}`, { headers: { Accept: ACCEPT, Authorization: `Bearer ${bob}` } });
    t.equal(r.status, 404, `another user: ${path.split('/').slice(-2).join('/')} 404`);
    t.equal(r.json().errors[0].code, 'NAME_UNKNOWN', 'NAME_UNKNOWN, as for an absent repository');
  }
  const alice = await proxyToken(proxy, ALICE, UNLISTED);
  const unlisted = await request(`${proxy.httpUrl}/v2/${UNLISTED}/manifests/v1`, { headers: { Accept: ACCEPT, Authorization: `Bearer ${alice}` } });
  t.equal(unlisted.status, 404, 'a repository Katello did not list here: 404 even for a user the main server lets read it');
  const refused = await mark.since();
  t.same(refused, [], `no upstream request:\n${describe(refused)}`);
  t.equal(capsuleTokenRequests(main).length, tokens, 'no upstream token either');

  // The control: a user who may read it pulls it, on demand.
  const out = join(work, 'out-secret');
  await pullImage(`${gw}/${SECRET}:v1`, `oci:${out}:v1`, { creds: ALICE });
  sameBlobs(t, out, secret.layout, imageDigests(secret));
  fetchedOnce(t, await mark.since(), SECRET, ['v1'], imageDigests(secret).slice(1));
});

t.test('streamed policy: served byte for byte from the main server, nothing kept', async (t) => {
  const dir = join(work, 'streamed');
  const p = await startProxy(main, dir, { download_policy: 'streamed' });
  t.teardown(() => p.stop());
  await listRepositories(p, [{ repository: STREAM, auth_required: false }]);
  const host = new URL(p.httpUrl).host;
  const built = layoutManifest(stream.layout, stream.tag);
  const blobs = [built.manifest.config.digest, ...built.manifest.layers.map((l) => l.digest)];

  for (const round of [1, 2]) {
    const mark = await markAccessLog(main);
    const out = join(work, `out-stream-${round}`);
    await pullImage(`${host}/${STREAM}:v1`, `oci:${out}:v1`);
    t.equal(layoutManifest(out, 'v1').digest, built.digest, `pull ${round}: the same manifest digest`);
    sameBlobs(t, out, stream.layout, imageDigests(stream));
    const fetched = ofRepository(await mark.since(), STREAM).filter((e) => e.method === 'GET' && contentPath(e.path)?.kind === 'blobs');
    t.same(fetched.map((e) => contentPath(e.path)!.ref).sort(), [...blobs].sort(), `pull ${round}: every blob relayed from the main server, once each`);
    t.same(storedBlobs(join(dir, 'storage')), [], `pull ${round}: no blob in the store`);
  }
  const direct = await request(`${p.httpUrl}/v2/${STREAM}/blobs/${built.manifest.config.digest}`);
  t.equal(direct.status, 200);
  t.equal(sha256(direct.body), built.manifest.config.digest, 'a plain GET of a blob, relayed intact');
});
