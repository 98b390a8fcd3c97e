// How a standalone gateway (content_backend: local, no foreman_url) answers
// who may do what, through the real daemon over HTTP and HTTPS:
// - without credentials, a private and an unknown repository both answer 401
//   with a challenge naming the repository and the action; to a user without
//   access both answer 404 NAME_UNKNOWN (registry-clients.md §4);
// - the referrers API answers exactly application/vnd.oci.image.index.v1+json;
// - a login wins over a verified client certificate (podman sends its certs.d
//   certificate with every request); a certificate alone is a content host;
// - repositories belong to users, not names: created only under the user's
//   own name or a granted namespace, unlisted until their first manifest, and
//   not handed to a new user who takes a removed user's name.
// Every refused attack is checked to change nothing in the database or store.
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { buildImage, layoutManifest, skopeo } from './helpers/images.ts';
import { MIGRATIONS } from '../plugins/container_gateway/db/migrations.ts';
import { hashPassword } from '../plugins/container_gateway/auth/passwords.ts';
import { makePki } from './helpers/pki.ts';
import { PROXYCTL, run, startProxyd } from './helpers/proxyd.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const HOST_UUID = '0b6f7c1e-2222-4c3d-8e9f-00112233aabb';

const work = mkdtempSync(join(tmpdir(), 'gw-answers-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();
const dbPath = join(work, 'gw.db');
const storage = join(work, 'storage');

const proxyd = await startProxyd({
  fixtures: false,
  https: true,
  settings: { log_level: 'INFO', ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca },
  plugins: { container_gateway: { enabled: true, sqlite_db_path: dbPath, storage_path: storage } },
});
t.teardown(() => proxyd.stop());
const base = proxyd.httpUrl;
const host = new URL(base).host;

// --- HTTP --------------------------------------------------------------------

interface CallOptions {
  token?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Over HTTPS with this client certificate. */
  tls?: { cert: string; key: string };
}

function call(method: string, path: string, o: CallOptions = {}): Promise<Reply> {
  const headers = { ...o.headers, ...(o.token ? { Authorization: `Bearer ${o.token}` } : {}) };
  const url = o.tls ? `${proxyd.httpsUrl}${path}` : `${base}${path}`;
  return request(url, { method, headers, ...(o.body === undefined ? {} : { body: o.body }), ...(o.tls ? { ca: pki.ca, client: o.tls } : {}) });
}

const admin = (method: string, path: string, body?: unknown) =>
  call(method, `/container_gateway/admin${path}`, body === undefined ? {} : { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

async function addUser(name: string): Promise<void> {
  const res = await admin('POST', '/users', { name, password: `${name}-pw` });
  if (res.status !== 201) throw new Error(`add user ${name}: ${res.status} ${res.body}`);
}

/** A token of `user`, asking `actions` on each repository. */
async function tokenOf(user: string, actions: string, ...repos: string[]): Promise<string> {
  const q = new URLSearchParams({ service: host });
  for (const r of repos) q.append('scope', `repository:${r}:${actions}`);
  const res = await call('GET', `/v2/token?${q}`, { headers: { Authorization: `Basic ${Buffer.from(`${user}:${user}-pw`).toString('base64')}` } });
  if (res.status !== 200) throw new Error(`token of ${user}: ${res.status} ${res.body}`);
  return res.json<{ token: string }>().token;
}

const sha256 = (data: string | Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

interface Blob {
  digest: string;
  size: number;
  bytes: string;
}

/** POST then PUT ?digest with the body, as containerd pushes; returns the PUT's answer. */
async function pushBlob(repo: string, token: string, bytes = randomBytes(300).toString('hex'), tls?: CallOptions['tls']): Promise<{ res: Reply; blob: Blob }> {
  const blob = { digest: sha256(bytes), size: Buffer.byteLength(bytes), bytes };
  const start = await call('POST', `/v2/${repo}/blobs/uploads/`, { token, tls });
  if (start.status !== 202) return { res: start, blob };
  const loc = new URL(start.headers.location!, base);
  loc.searchParams.set('digest', blob.digest);
  const res = await call('PUT', loc.pathname + loc.search, { token, tls, body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
  return { res, blob };
}

function manifestOf(config: Blob, layers: Blob[], extra: Record<string, unknown> = {}): string {
  const d = (b: Blob, mediaType: string) => ({ mediaType, digest: b.digest, size: b.size });
  return JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d(config, OCI_CONFIG), layers: layers.map((l) => d(l, 'application/vnd.oci.image.layer.v1.tar+gzip')), ...extra });
}

/** A config and a layer pushed, and a manifest under `tag`; throws unless each step succeeded. */
async function pushImage(repo: string, token: string, tag: string, tls?: CallOptions['tls']): Promise<{ digest: string; manifest: string; layer: Blob }> {
  const config = await pushBlob(repo, token, JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(4).toString('hex') }), tls);
  const layer = await pushBlob(repo, token, undefined, tls);
  for (const r of [config.res, layer.res]) if (r.status !== 201) throw new Error(`blob push to ${repo}: ${r.status} ${r.body}`);
  const manifest = manifestOf(config.blob, [layer.blob]);
  const put = await call('PUT', `/v2/${repo}/manifests/${tag}`, { token, tls, body: manifest, headers: { 'Content-Type': OCI_MANIFEST } });
  if (put.status !== 201) throw new Error(`manifest PUT to ${repo}: ${put.status} ${put.body}`);
  return { digest: sha256(manifest), manifest, layer: layer.blob };
}

// --- what the gateway holds ----------------------------------------------------

function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(`${p.slice(storage.length)} ${statSync(p).size}`);
    }
  };
  walk(dir);
  return out.sort();
}

/** Every row that says what exists and who owns it, and every file of the store. */
function snapshot(): unknown {
  const db = new Database(dbPath, { readonly: true });
  try {
    const all = (sql: string) => db.prepare(sql).all();
    return {
      repositories: all('SELECT id, name, auth_required, owner_id, pending FROM repositories ORDER BY id'),
      users: all('SELECT id, name FROM users ORDER BY id'),
      namespaces: all('SELECT user_id, namespace FROM user_namespaces ORDER BY user_id, namespace'),
      blobs: all('SELECT digest, size FROM blobs ORDER BY digest'),
      links: all('SELECT repository_id, digest FROM repository_blobs ORDER BY repository_id, digest'),
      manifests: all('SELECT repository_id, digest FROM manifests ORDER BY repository_id, digest'),
      tags: all('SELECT repository_id, name, digest FROM tags ORDER BY repository_id, name'),
      uploads: all('SELECT uuid, repository_id FROM uploads ORDER BY uuid'),
      store: files(storage),
    };
  } finally {
    db.close();
  }
}

function repositoryRow(name: string): { owner_id: number | null; pending: number; owner: string | null } | undefined {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.prepare('SELECT r.owner_id, r.pending, u.name AS owner FROM repositories r LEFT JOIN users u ON u.id = r.owner_id WHERE r.name = ?').get(name) as never;
  } finally {
    db.close();
  }
}

function ociCode(res: Reply): string | undefined {
  try {
    return res.json<{ errors: Array<{ code: string }> }>().errors[0]?.code;
  } catch {
    return undefined;
  }
}

/** The answer: status, OCI code (none for HEAD) and the challenge. */
function answer(res: Reply): { status: number; code: string | undefined; challenge: string | undefined } {
  return { status: res.status, code: ociCode(res), challenge: res.headers['www-authenticate'] as string | undefined };
}

const challengeAt = (origin: string, scope: string) => `Bearer realm="${origin}/v2/token",service="${new URL(origin).host}",scope="${scope}"`;
const challenge = (scope: string) => challengeAt(base, scope);

await addUser('alice');
await addUser('bob');
const aliceToken = await tokenOf('alice', 'pull,push,delete', 'alice/private', 'alice/referred');
const secret = await pushImage('alice/private', aliceToken, 'v1');

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
  const before = snapshot();
  for (const token of [undefined, 'unauthenticated']) {
    const who = token ? 'the unauthenticated token' : 'no Authorization';
    const privateOnes = attempts('alice/private', secret.layer.digest, secret.manifest);
    const unknownOnes = attempts('alice/absent', secret.layer.digest, secret.manifest);
    for (let i = 0; i < privateOnes.length; i++) {
      const [method, path, action, o] = privateOnes[i]!;
      const priv = answer(await call(method, path, { ...o, token }));
      const unknown = answer(await call(method, unknownOnes[i]![1], { ...o, token }));
      t.same(priv, { status: 401, code: method === 'HEAD' ? undefined : 'UNAUTHORIZED', challenge: challenge(`repository:alice/private:${action}`) }, `${who}: ${method} ${path}`);
      t.same(unknown, { ...priv, challenge: challenge(`repository:alice/absent:${action}`) }, `${who}: the same answer for an unknown repository`);
    }
  }
  // The client follows the challenge: a token for that scope, then its retry works.
  const res = await call('GET', '/v2/alice/private/manifests/v1', { headers: { Accept: OCI_MANIFEST } });
  const scope = /scope="([^"]+)"/.exec(String(res.headers['www-authenticate']))![1]!;
  const token = await tokenOf('alice', 'pull', scope.split(':')[1]!);
  const retry = await call('GET', '/v2/alice/private/manifests/v1', { token, headers: { Accept: OCI_MANIFEST } });
  t.equal(retry.status, 200, 'the login the challenge asked for reads the manifest');
  t.equal(retry.body, secret.manifest);
  t.same(snapshot(), before, 'nothing was stored or changed by the refused requests');
});

t.test('a logged-in user without access: 404 NAME_UNKNOWN for a private and an unknown repository alike, reads and writes', async (t) => {
  // bob asks for everything on both names: the token grants him nothing there.
  const bobToken = await tokenOf('bob', 'pull,push,delete', 'alice/private', 'alice/absent');
  const before = snapshot();
  const privateOnes = attempts('alice/private', secret.layer.digest, secret.manifest);
  const unknownOnes = attempts('alice/absent', secret.layer.digest, secret.manifest);
  for (let i = 0; i < privateOnes.length; i++) {
    const [method, path, action, o] = privateOnes[i]!;
    const priv = await call(method, path, { ...o, token: bobToken });
    const unknown = await call(method, unknownOnes[i]![1], { ...o, token: bobToken });
    t.same(answer(priv), { status: 404, code: method === 'HEAD' ? undefined : 'NAME_UNKNOWN', challenge: challenge(`repository:alice/private:${action}`) }, `bob: ${method} ${path}`);
    t.same(answer(unknown), { ...answer(priv), challenge: challenge(`repository:alice/absent:${action}`) }, 'the same answer for an unknown repository');
    if (method !== 'HEAD') t.same(priv.json(), { errors: [{ code: 'NAME_UNKNOWN', message: 'Repository name unknown', detail: { name: 'alice/private' } }] });
  }
  t.same(snapshot(), before, 'nothing was stored or changed by bob');
  const mine = await call('GET', '/v2/alice/private/manifests/v1', { token: aliceToken, headers: { Accept: OCI_MANIFEST } });
  t.equal(mine.body, secret.manifest, "alice's manifest is what it was");
});

t.test('referrers: Content-Type is exactly application/vnd.oci.image.index.v1+json', async (t) => {
  const subject = await pushImage('alice/referred', aliceToken, 'v1');
  const empty = await call('GET', `/v2/alice/referred/referrers/${subject.digest}`, { token: aliceToken });
  t.equal(empty.status, 200);
  t.equal(empty.headers['content-type'], OCI_INDEX, 'no charset parameter');
  t.same(empty.json(), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
  t.equal(empty.headers['content-length'], String(Buffer.byteLength(empty.body)));
  const config = await pushBlob('alice/referred', aliceToken, '{}');
  const referrer = manifestOf(config.blob, [], { artifactType: 'application/vnd.example.sbom.v1', subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: Buffer.byteLength(subject.manifest) } });
  t.equal((await call('PUT', `/v2/alice/referred/manifests/${sha256(referrer)}`, { token: aliceToken, body: referrer, headers: { 'Content-Type': OCI_MANIFEST } })).status, 201);
  const filtered = await call('GET', `/v2/alice/referred/referrers/${subject.digest}?artifactType=application/vnd.example.sbom.v1`, { token: aliceToken });
  t.equal(filtered.headers['content-type'], OCI_INDEX);
  t.same(filtered.json().manifests.map((m: { digest: string }) => m.digest), [sha256(referrer)]);
});

// --- point 6: identity precedence --------------------------------------------

t.test('a verified client certificate with a login: the login pushes; the certificate alone is a content host', async (t) => {
  const cert = pki.client(HOST_UUID);
  const token = await tokenOf('alice', 'pull,push', 'alice/with-cert');
  const pushed = await pushImage('alice/with-cert', token, 'v1', cert);
  const back = await call('GET', '/v2/alice/with-cert/manifests/v1', { token, tls: cert, headers: { Accept: OCI_MANIFEST } });
  t.equal(back.status, 200, 'read back over the same certificate and token');
  t.equal(back.body, pushed.manifest);
  t.equal(repositoryRow('alice/with-cert')?.owner, 'alice', 'owned by the user who logged in, not by the host');

  // The certificate alone: a content host, which neither reads private repositories nor pushes here.
  const before = snapshot();
  const read = await call('GET', '/v2/alice/with-cert/manifests/v1', { tls: cert });
  t.same(answer(read), { status: 404, code: 'NAME_UNKNOWN', challenge: challengeAt(proxyd.httpsUrl, 'repository:alice/with-cert:pull') }, 'a host without access: 404');
  const push = await call('POST', '/v2/alice/with-cert/blobs/uploads/', { tls: cert });
  t.same(answer(push), { status: 404, code: 'NAME_UNKNOWN', challenge: challengeAt(proxyd.httpsUrl, 'repository:alice/with-cert:pull,push') }, 'a host does not push');
  // Basic credentials are no registry credential: judged as none, pointed at the token service.
  const basic = await call('GET', '/v2/alice/with-cert/manifests/v1', { tls: cert, headers: { Authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` } });
  t.same(answer(basic), { status: 401, code: 'UNAUTHORIZED', challenge: challengeAt(proxyd.httpsUrl, 'repository:alice/with-cert:pull') }, 'certificate + Basic: a login was meant, log in for a token');
  // A token the gateway never issued does not fall back to the certificate.
  const forged = await call('GET', '/v2/alice/with-cert/manifests/v1', { tls: cert, token: 'not-a-token-we-issued' });
  t.equal(forged.status, 401);
  t.equal(ociCode(forged), 'UNAUTHORIZED');
  t.same(snapshot(), before, 'nothing changed');
});

t.test('skopeo with a CA-signed certificate in its cert dir pushes with its login (HTTPS)', async (t) => {
  const certDir = join(work, 'certs.d');
  mkdirSync(certDir, { recursive: true });
  const cert = pki.client(HOST_UUID);
  cpSync(cert.cert, join(certDir, 'client.cert'));
  cpSync(cert.key, join(certDir, 'client.key'));
  cpSync(pki.ca, join(certDir, 'ca.crt'));
  const img = await buildImage(work, { name: 'certs', files: { '/etc/certs.txt': 'pushed with a certificate\n' } });
  const gwTls = new URL(proxyd.httpsUrl).host;
  const push = await skopeo(['copy', '--dest-cert-dir', certDir, '--dest-creds', 'alice:alice-pw', img.ref, `docker://${gwTls}/alice/skopeo-cert:v1`]);
  t.equal(push.code, 0, `skopeo copy to the gateway: ${push.stderr}`);
  const inspect = await skopeo(['inspect', '--cert-dir', certDir, '--creds', 'alice:alice-pw', `docker://${gwTls}/alice/skopeo-cert:v1`]);
  t.equal(inspect.code, 0, inspect.stderr);
  t.equal(JSON.parse(inspect.stdout || '{}').Digest, layoutManifest(img.layout).digest, 'the pushed manifest is served');
  t.equal(repositoryRow('alice/skopeo-cert')?.owner, 'alice');
});

// --- point 8: owners ----------------------------------------------------------

t.test("a bare upload claims no name under another user's namespace or at the top level", async (t) => {
  const bobToken = await tokenOf('bob', 'pull,push', 'alice/claimed', 'claimed', 'bob/own');
  const before = snapshot();
  for (const name of ['alice/claimed', 'claimed']) {
    for (let i = 0; i < 2; i++) {
      const post = await call('POST', `/v2/${name}/blobs/uploads/`, { token: bobToken });
      t.same(answer(post), { status: 404, code: 'NAME_UNKNOWN', challenge: challenge(`repository:${name}:pull,push`) }, `bob's bare POST to ${name} (attempt ${i + 1})`);
      const mono = await pushBlob(name, bobToken);
      t.equal(mono.res.status, 404, 'nor with content');
    }
  }
  t.same(snapshot(), before, 'no repository, upload, blob or file was made');
  const admin1 = await admin('GET', '/repositories');
  t.notOk(admin1.json().repositories.some((r: { name: string }) => ['alice/claimed', 'claimed'].includes(r.name)));
  // The name stays alice's to take.
  const aliceClaims = await tokenOf('alice', 'pull,push', 'alice/claimed');
  await pushImage('alice/claimed', aliceClaims, 'v1');
  t.equal(repositoryRow('alice/claimed')?.owner, 'alice');
  // And bob's own namespace is his.
  const own = await pushBlob('bob/own', bobToken);
  t.equal(own.res.status, 201, 'bob pushes under bob/');
});

t.test('an upload alone lists nothing; its blobs are readable by their pusher; the first manifest lists it', async (t) => {
  const bobToken = await tokenOf('bob', 'pull,push', 'bob/pending');
  const aliceLook = await tokenOf('alice', 'pull', 'bob/pending');
  const { res, blob } = await pushBlob('bob/pending', bobToken);
  t.equal(res.status, 201);
  t.same(repositoryRow('bob/pending'), { owner_id: repositoryRow('bob/pending')!.owner_id, pending: 1, owner: 'bob' }, 'stored as pending, owned by bob');

  const catalogToken = (await call('GET', `/v2/token?service=${host}&scope=registry:catalog:*`, { headers: { Authorization: `Basic ${Buffer.from('bob:bob-pw').toString('base64')}` } })).json().token as string;
  const listed = async () => ({
    catalog: (await call('GET', '/v2/_catalog?n=1000', { token: catalogToken })).json().repositories.includes('bob/pending'),
    search: (await call('GET', '/v1/search?q=pending', { headers: { Authorization: `Basic ${Buffer.from('bob:bob-pw').toString('base64')}` } })).json().results.some((r: { name: string }) => r.name === 'bob/pending'),
    admin: (await admin('GET', '/repositories')).json().repositories.some((r: { name: string }) => r.name === 'bob/pending'),
    proxyctl: (await run([PROXYCTL, '--url', base, 'repos', 'list'])).stdout.includes('bob/pending'),
  });
  t.same(await listed(), { catalog: false, search: false, admin: false, proxyctl: false }, 'not in the catalog, search, the admin API or proxyctl repos list');
  const visibility = await admin('PUT', '/repositories/bob/pending/visibility', { public: true });
  t.equal(visibility.status, 404, 'nor can an administrator publish it yet');

  const own = await call('GET', `/v2/bob/pending/blobs/${blob.digest}`, { token: bobToken });
  t.equal(own.status, 200, 'bob reads his blob back');
  t.equal(own.body, blob.bytes);
  t.equal((await call('HEAD', `/v2/bob/pending/blobs/${blob.digest}`, { token: bobToken })).headers['content-length'], String(blob.size));
  const other = await call('GET', `/v2/bob/pending/blobs/${blob.digest}`, { token: aliceLook });
  t.same(answer(other), { status: 404, code: 'NAME_UNKNOWN', challenge: challenge('repository:bob/pending:pull') }, 'to alice it does not exist');

  const config = await pushBlob('bob/pending', bobToken, '{"os":"linux"}');
  const manifest = manifestOf(config.blob, [blob]);
  t.equal((await call('PUT', '/v2/bob/pending/manifests/v1', { token: bobToken, body: manifest, headers: { 'Content-Type': OCI_MANIFEST } })).status, 201);
  t.equal(repositoryRow('bob/pending')?.pending, 0);
  t.same(await listed(), { catalog: true, search: true, admin: true, proxyctl: true }, 'listed everywhere once its first manifest is stored');
});

t.test('a granted namespace: bob creates team/... only once an administrator grants it, and no more once taken back', async (t) => {
  const before = snapshot();
  const early = await tokenOf('bob', 'pull,push', 'team/app');
  t.equal((await pushBlob('team/app', early)).res.status, 404, 'not before the grant');
  t.same(snapshot(), before);

  t.same((await admin('PUT', '/users/bob/namespaces/team')).json(), { user: 'bob', namespace: 'team', granted: true });
  t.same((await admin('GET', '/users/bob/namespaces')).json(), { user: 'bob', namespaces: ['team'] });
  const stale = (await pushBlob('team/app', early)).res;
  t.equal(stale.status, 401, 'a token issued before the grant granted nothing: it must be widened');
  t.equal(stale.headers['www-authenticate'], `${challenge('repository:team/app:pull,push')},error="insufficient_scope"`);
  const token = await tokenOf('bob', 'pull,push', 'team/app', 'team/sub/tool', 'teams/app');
  await pushImage('team/app', token, 'v1');
  await pushImage('team/sub/tool', token, 'v1');
  t.equal(repositoryRow('team/app')?.owner, 'bob');
  t.equal((await pushBlob('teams/app', token)).res.status, 404, 'a namespace is a path prefix, not a string prefix');

  for (const [path, status] of [['/users/nobody/namespaces/team', 404], ['/users/bob/namespaces/Bad_NS', 400], ['/users/bad%20name/namespaces/team', 400]] as const) {
    const res = await admin('PUT', path);
    t.equal(res.status, status, `PUT ${path}`);
    t.type(res.json().error, 'string', 'a JSON error');
  }
  t.same((await admin('DELETE', '/users/bob/namespaces/team')).json(), { user: 'bob', namespace: 'team', granted: false });
  t.equal((await admin('DELETE', '/users/bob/namespaces/team')).status, 404, 'taken back once');
  const after = await tokenOf('bob', 'pull,push', 'team/app', 'team/new');
  t.equal((await pushBlob('team/new', after)).res.status, 404, 'no new repository under team/');
  t.equal((await pushBlob('team/app', after)).res.status, 201, 'what bob made there stays his');
});

t.test('owners are users, not names: a new user who takes a removed user\'s name gets none of its repositories', async (t) => {
  await addUser('carol');
  const carolToken = await tokenOf('carol', 'pull,push,delete', 'carol/app', 'carol/public');
  const app = await pushImage('carol/app', carolToken, 'v1');
  await pushImage('carol/public', carolToken, 'v1');
  t.equal((await admin('PUT', '/repositories/carol/public/visibility', { public: true })).status, 200);

  const removed = await run([PROXYCTL, '--url', base, 'users', 'remove', 'carol']);
  t.equal(removed.code, 0, removed.stderr);
  t.match(removed.stdout, /^user 'carol' removed; the repositories it owned now have no owner: carol\/app, carol\/public\n/, 'proxyctl says which repositories lost their owner');
  t.match(removed.stdout, /A user added later as 'carol' does not get them/);
  t.equal(repositoryRow('carol/app')?.owner_id, null, 'ownerless in the database');
  t.equal((await call('GET', '/v2/carol/app/manifests/v1', { token: carolToken })).status, 401, "the old carol's token died with her");

  await addUser('carol');
  const newCarol = await tokenOf('carol', 'pull,push,delete', 'carol/app', 'carol/public', 'carol/fresh');
  const before = snapshot();
  t.same(answer(await call('GET', '/v2/carol/app/manifests/v1', { token: newCarol })), { status: 404, code: 'NAME_UNKNOWN', challenge: challenge('repository:carol/app:pull') }, 'the new carol cannot read the old private one');
  t.same(answer(await call('POST', '/v2/carol/app/blobs/uploads/', { token: newCarol })), { status: 404, code: 'NAME_UNKNOWN', challenge: challenge('repository:carol/app:pull,push') }, 'nor push to it');
  t.equal((await call('DELETE', `/v2/carol/app/manifests/${app.digest}`, { token: newCarol })).status, 404, 'nor delete from it');
  const pub = await call('POST', '/v2/carol/public/blobs/uploads/', { token: newCarol });
  t.equal(pub.status, 401, 'the public one: readable, not writable');
  t.match(pub.headers['www-authenticate'], /error="insufficient_scope"/);
  t.same(snapshot(), before, 'nothing changed');
  t.equal((await call('GET', '/v2/carol/public/manifests/v1')).status, 200, 'public stays public');
  t.equal((await pushBlob('carol/fresh', newCarol)).res.status, 201, 'her own namespace is open for new repositories');
  const listing = (await admin('GET', '/repositories')).json().repositories as Array<{ name: string; owner?: string }>;
  t.same(listing.filter((r) => r.name.startsWith('carol/')).map((r) => [r.name, r.owner ?? '-']), [['carol/app', '-'], ['carol/public', '-']], 'proxyctl repos list shows them without owner (carol/fresh is pending)');
});

t.test('open_top_level_names: true lets any user create a one-component name, first come, first owned', async (t) => {
  const dir = mkdtempSync(join(work, 'open-'));
  const open = await startProxyd({
    fixtures: false,
    settings: { log_level: 'WARN' },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: join(dir, 'gw.db'), storage_path: join(dir, 'storage'), open_top_level_names: true } },
  });
  t.teardown(() => open.stop());
  const at = (method: string, path: string, o: { token?: string; body?: string; headers?: Record<string, string> } = {}) =>
    request(`${open.httpUrl}${path}`, { method, headers: { ...o.headers, ...(o.token ? { Authorization: `Bearer ${o.token}` } : {}) }, ...(o.body === undefined ? {} : { body: o.body }) });
  for (const user of ['dave', 'erin']) {
    const r = await at('POST', '/container_gateway/admin/users', { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: user, password: 'pw' }) });
    t.equal(r.status, 201);
  }
  const tokenAt = async (user: string) =>
    (await at('GET', '/v2/token?scope=repository:tool:pull,push&scope=repository:dave/x:pull,push', { headers: { Authorization: `Basic ${Buffer.from(`${user}:pw`).toString('base64')}` } })).json().token as string;
  const dave = await tokenAt('dave');
  const erin = await tokenAt('erin');
  t.equal((await at('POST', '/v2/tool/blobs/uploads/', { token: dave })).status, 202, 'dave creates tool');
  t.equal((await at('POST', '/v2/tool/blobs/uploads/', { token: erin })).status, 404, 'then it is not erin\'s');
  t.equal((await at('POST', '/v2/dave/x/blobs/uploads/', { token: erin })).status, 404, "user namespaces stay closed to others");
});

t.test('an existing database: owners by name become owners by id; an owner already removed leaves the repository ownerless', async (t) => {
  const dir = mkdtempSync(join(work, 'migrate-'));
  const file = join(dir, 'gw.db');
  // The schema as it was before owners were user ids, with a repository of alice and one of a user removed since.
  const ownership = MIGRATIONS.findIndex((m) => m.includes('owner_id'));
  t.ok(ownership > 0, 'the ownership migration is found');
  const old = new Database(file);
  for (const m of MIGRATIONS.slice(0, ownership)) old.exec(m);
  old.pragma(`user_version = ${ownership}`);
  old.prepare('INSERT INTO users (name, password_hash) VALUES (?, ?)').run('alice', await hashPassword('alice-pw'));
  old.prepare("INSERT INTO repositories (name, auth_required, owner) VALUES ('alice/old', 1, 'alice'), ('gone/old', 1, 'gone'), ('katello/repo', 0, NULL)").run();
  old.close();

  const upgraded = await startProxyd({
    fixtures: false,
    settings: { log_level: 'WARN' },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: file, storage_path: join(dir, 'storage') } },
  });
  t.teardown(() => upgraded.stop());
  const list = await request(`${upgraded.httpUrl}/container_gateway/admin/repositories`);
  t.same(list.json(), { repositories: [{ name: 'alice/old', public: false, owner: 'alice' }, { name: 'gone/old', public: false }, { name: 'katello/repo', public: true }] });
  const db = new Database(file, { readonly: true });
  t.teardown(() => db.close());
  t.same(db.prepare('SELECT r.name, r.owner_id = u.id AS by_id FROM repositories r JOIN users u ON u.name = ? WHERE r.owner_id IS NOT NULL').all('alice'), [{ name: 'alice/old', by_id: 1 }], "alice's repository refers to her user id");
  t.notOk((db.prepare('PRAGMA table_info(repositories)').all() as Array<{ name: string }>).some((c) => c.name === 'owner'), 'the owner name column is gone');

  // A user named "gone" added now does not get gone/old.
  const added = await request(`${upgraded.httpUrl}/container_gateway/admin/users`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'gone', password: 'pw' }) });
  t.equal(added.status, 201);
  const token = (await request(`${upgraded.httpUrl}/v2/token?scope=repository:gone/old:pull,push`, { headers: { Authorization: `Basic ${Buffer.from('gone:pw').toString('base64')}` } })).json().token as string;
  t.equal((await request(`${upgraded.httpUrl}/v2/gone/old/tags/list`, { headers: { Authorization: `Bearer ${token}` } })).status, 404, 'the new "gone" cannot read it');
  const aliceToken = (await request(`${upgraded.httpUrl}/v2/token?scope=repository:alice/old:pull`, { headers: { Authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` } })).json().token as string;
  t.equal((await request(`${upgraded.httpUrl}/v2/alice/old/tags/list`, { headers: { Authorization: `Bearer ${aliceToken}` } })).status, 200, 'alice still reads hers');
});
