// How a standalone gateway (content_backend: local, no foreman_url) answers
// who may do what, through the real daemon over HTTP and HTTPS:
// - without credentials, a private and an unknown repository both answer 401
//   with a challenge naming the repository and the action; to a user without
//   access both answer 404 NAME_UNKNOWN (registry-clients.md §4);
// - the referrers API answers exactly application/vnd.oci.image.index.v1+json;
// - a login wins over a verified client certificate (podman and skopeo send
//   their certs.d certificate with every request); a certificate alone is a
//   content host.
// Every refused attack is checked to change nothing in the database or store.
// Other modes and backends: test/access-answers-modes.test.ts; owners:
// test/repository-owners.test.ts.
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { buildImage, layoutManifest, skopeo } from './helpers/images.ts';
import { makePki } from './helpers/pki.ts';
import { answer, challengeAt, manifestOf, OCI_INDEX, OCI_MANIFEST, ociCode, sha256, StandaloneGateway, type CallOptions } from './helpers/standalone-gateway.ts';

const HOST_UUID = '0b6f7c1e-2222-4c3d-8e9f-00112233aabb';
const work = mkdtempSync(join(tmpdir(), 'gw-answers-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();
const gw = await StandaloneGateway.start(work, { pki });
t.teardown(() => gw.stop());

await gw.addUser('alice');
await gw.addUser('bob');
const aliceToken = await gw.tokenOf('alice', 'pull,push,delete', 'alice/private', 'alice/referred');
const secret = await gw.pushImage('alice/private', aliceToken, 'v1');

// --- point 5: the answers ----------------------------------------------------

/** Every request a client makes on a repository, reads and writes, with the scope its challenge must name. */
function attempts(name: string, digest: string, manifest: string): Array<[string, string, string, CallOptions?]> {
  return [
    ['GET', `/v2/${name}/manifests/v1`, 'pull'],
    ['HEAD', `/v2/${name}/manifests/${digest}`, 'pull'],
    ['HEAD', `/v2/${name}/blobs/${digest}`, 'pull'],
    ['GET', `/v2/${name}/tags/list`, 'pull'],
    ['GET', `/v2/${name}/referrers/${digest}`, 'pull'],
    ['POST', `/v2/${name}/blobs/uploads/`, 'pull,push'],
    ['PUT', `/v2/${name}/manifests/hijacked`, 'pull,push', { body: manifest, headers: { 'Content-Type': OCI_MANIFEST } }],
    ['DELETE', `/v2/${name}/manifests/${digest}`, 'delete'],
    ['DELETE', `/v2/${name}/blobs/${digest}`, 'delete'],
  ];
}

t.test('no credentials: a private and an unknown repository both answer 401 with a challenge naming the repository and the action', async (t) => {
  const before = await gw.snapshot();
  for (const token of [undefined, 'unauthenticated']) {
    const who = token ? 'the unauthenticated token' : 'no Authorization';
    const privateOnes = attempts('alice/private', secret.layer.digest, secret.manifest);
    const unknownOnes = attempts('alice/absent', secret.layer.digest, secret.manifest);
    for (let i = 0; i < privateOnes.length; i++) {
      const [method, path, action, o] = privateOnes[i]!;
      const priv = answer(await gw.call(method, path, { ...o, token }));
      const unknown = answer(await gw.call(method, unknownOnes[i]![1], { ...o, token }));
      t.same(priv, { status: 401, code: method === 'HEAD' ? undefined : 'UNAUTHORIZED', challenge: gw.challenge(`repository:alice/private:${action}`) }, `${who}: ${method} ${path}`);
      t.same(unknown, { ...priv, challenge: gw.challenge(`repository:alice/absent:${action}`) }, `${who}: the same answer for an unknown repository`);
    }
  }
  // The client follows the challenge: a token for that scope, then its retry works.
  const res = await gw.call('GET', '/v2/alice/private/manifests/v1', { headers: { Accept: OCI_MANIFEST } });
  const scope = /scope="([^"]+)"/.exec(String(res.headers['www-authenticate']))![1]!;
  const token = await gw.tokenOf('alice', 'pull', scope.split(':')[1]!);
  const retry = await gw.call('GET', '/v2/alice/private/manifests/v1', { token, headers: { Accept: OCI_MANIFEST } });
  t.equal(retry.status, 200, 'the login the challenge asked for reads the manifest');
  t.equal(retry.body, secret.manifest);
  t.same(await gw.snapshot(), before, 'nothing was stored or changed by the refused requests');
});

t.test('a logged-in user without access: 404 NAME_UNKNOWN for a private and an unknown repository alike, reads and writes', async (t) => {
  // bob asks for everything on both names: the token grants him nothing there.
  const bobToken = await gw.tokenOf('bob', 'pull,push,delete', 'alice/private', 'alice/absent');
  const before = await gw.snapshot();
  const privateOnes = attempts('alice/private', secret.layer.digest, secret.manifest);
  const unknownOnes = attempts('alice/absent', secret.layer.digest, secret.manifest);
  for (let i = 0; i < privateOnes.length; i++) {
    const [method, path, action, o] = privateOnes[i]!;
    const priv = await gw.call(method, path, { ...o, token: bobToken });
    const unknown = await gw.call(method, unknownOnes[i]![1], { ...o, token: bobToken });
    t.same(answer(priv), { status: 404, code: method === 'HEAD' ? undefined : 'NAME_UNKNOWN', challenge: gw.challenge(`repository:alice/private:${action}`) }, `bob: ${method} ${path}`);
    t.same(answer(unknown), { ...answer(priv), challenge: gw.challenge(`repository:alice/absent:${action}`) }, 'the same answer for an unknown repository');
    if (method !== 'HEAD') t.same(priv.json(), { errors: [{ code: 'NAME_UNKNOWN', message: 'Repository name unknown', detail: { name: 'alice/private' } }] });
  }
  t.same(await gw.snapshot(), before, 'nothing was stored or changed by bob');
  const mine = await gw.call('GET', '/v2/alice/private/manifests/v1', { token: aliceToken, headers: { Accept: OCI_MANIFEST } });
  t.equal(mine.body, secret.manifest, "alice's manifest is what it was");
});

t.test('referrers: Content-Type is exactly application/vnd.oci.image.index.v1+json', async (t) => {
  const subject = await gw.pushImage('alice/referred', aliceToken, 'v1');
  const empty = await gw.call('GET', `/v2/alice/referred/referrers/${subject.digest}`, { token: aliceToken });
  t.equal(empty.status, 200);
  t.equal(empty.headers['content-type'], OCI_INDEX, 'no charset parameter');
  t.same(empty.json(), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
  t.equal(empty.headers['content-length'], String(Buffer.byteLength(empty.body)));
  const config = await gw.pushBlob('alice/referred', aliceToken, '{}');
  const referrer = manifestOf(config.blob, [], { artifactType: 'application/vnd.example.sbom.v1', subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: Buffer.byteLength(subject.manifest) } });
  t.equal((await gw.call('PUT', `/v2/alice/referred/manifests/${sha256(referrer)}`, { token: aliceToken, body: referrer, headers: { 'Content-Type': OCI_MANIFEST } })).status, 201);
  const filtered = await gw.call('GET', `/v2/alice/referred/referrers/${subject.digest}?artifactType=application/vnd.example.sbom.v1`, { token: aliceToken });
  t.equal(filtered.headers['content-type'], OCI_INDEX);
  t.same(filtered.json().manifests.map((m: { digest: string }) => m.digest), [sha256(referrer)]);
});

// --- point 6: identity precedence --------------------------------------------

t.test('a verified client certificate with a login: the login pushes; the certificate alone is a content host', async (t) => {
  const cert = pki.client(HOST_UUID);
  const token = await gw.tokenOf('alice', 'pull,push', 'alice/with-cert');
  const pushed = await gw.pushImage('alice/with-cert', token, 'v1', cert);
  const back = await gw.call('GET', '/v2/alice/with-cert/manifests/v1', { token, tls: cert, headers: { Accept: OCI_MANIFEST } });
  t.equal(back.status, 200, 'read back over the same certificate and token');
  t.equal(back.body, pushed.manifest);
  t.equal((await gw.repositoryRow('alice/with-cert'))?.owner, 'alice', 'owned by the user who logged in, not by the host');

  // The certificate alone: a content host, which neither reads private repositories nor pushes here.
  const before = await gw.snapshot();
  const read = await gw.call('GET', '/v2/alice/with-cert/manifests/v1', { tls: cert });
  t.same(answer(read), { status: 404, code: 'NAME_UNKNOWN', challenge: challengeAt(gw.proxyd.httpsUrl, 'repository:alice/with-cert:pull') }, 'a host without access: 404');
  const push = await gw.call('POST', '/v2/alice/with-cert/blobs/uploads/', { tls: cert });
  t.same(answer(push), { status: 404, code: 'NAME_UNKNOWN', challenge: challengeAt(gw.proxyd.httpsUrl, 'repository:alice/with-cert:pull,push') }, 'a host does not push');
  // Basic credentials are no registry credential: judged as none, pointed at the token service.
  const basic = await gw.call('GET', '/v2/alice/with-cert/manifests/v1', { tls: cert, headers: { Authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` } });
  t.same(answer(basic), { status: 401, code: 'UNAUTHORIZED', challenge: challengeAt(gw.proxyd.httpsUrl, 'repository:alice/with-cert:pull') }, 'certificate + Basic: a login was meant, log in for a token');
  // A token the gateway never issued does not fall back to the certificate.
  const forged = await gw.call('GET', '/v2/alice/with-cert/manifests/v1', { tls: cert, token: 'not-a-token-we-issued' });
  t.equal(forged.status, 401);
  t.equal(ociCode(forged), 'UNAUTHORIZED');
  t.same(await gw.snapshot(), before, 'nothing changed');
});

t.test('skopeo with a CA-signed certificate in its cert dir pushes with its login (HTTPS)', async (t) => {
  const certDir = join(work, 'certs.d');
  mkdirSync(certDir, { recursive: true });
  const cert = pki.client(HOST_UUID);
  cpSync(cert.cert, join(certDir, 'client.cert'));
  cpSync(cert.key, join(certDir, 'client.key'));
  cpSync(pki.ca, join(certDir, 'ca.crt'));
  const img = await buildImage(work, { name: 'certs', files: { '/etc/certs.txt': 'pushed with a certificate\n' } });
  const gwTls = new URL(gw.proxyd.httpsUrl).host;
  const push = await skopeo(['copy', '--dest-cert-dir', certDir, '--dest-creds', 'alice:alice-pw', img.ref, `docker://${gwTls}/alice/skopeo-cert:v1`]);
  t.equal(push.code, 0, `skopeo copy to the gateway: ${push.stderr}`);
  const inspect = await skopeo(['inspect', '--cert-dir', certDir, '--creds', 'alice:alice-pw', `docker://${gwTls}/alice/skopeo-cert:v1`]);
  t.equal(inspect.code, 0, inspect.stderr);
  t.equal(JSON.parse(inspect.stdout || '{}').Digest, layoutManifest(img.layout).digest, 'the pushed manifest is served');
  t.equal((await gw.repositoryRow('alice/skopeo-cert'))?.owner, 'alice');
});
