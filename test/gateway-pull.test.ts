// The gateway's pull path with real components: Debian's docker-registry as
// the content backend, images built by umoci and copied by skopeo, real
// skopeo and podman as clients, and a Katello test double (katello-api.md)
// as the main server. Content must come through byte for byte.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, inspectImage, layoutBlobs, layoutManifest, podman, pullImage, pushImage, sha256, skopeo } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { makePki } from './helpers/pki.ts';
import { startProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';

const HOST_UUID = '5d2b3c4e-1111-4a5b-9c8d-0123456789ab';
const work = mkdtempSync(join(tmpdir(), 'gw-pull-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const registry = await startRegistry();
t.teardown(() => registry.stop());
const app = await buildImage(work, { name: 'app', files: { '/etc/app.txt': 'public app\n' }, layers: 3, randomBytes: 3 * 1024 * 1024 });
const priv = await buildImage(work, { name: 'priv', files: { '/etc/secret.txt': 'private\n' }, layers: 2 });
await pushImage(app.ref, `${registry.host}/org/prod/app:v1`);
await pushImage(app.ref, `${registry.host}/org/prod/app:v2`);
await pushImage(app.ref, `${registry.host}/org/prod/app:v3`);
await pushImage(app.ref, `${registry.host}/org/prod/legacy:v1`, { format: 'v2s2' });
await pushImage(priv.ref, `${registry.host}/org/prod/priv:v1`);

const katello = new KatelloDouble({
  users: { admin: { password: 'changeme', repositories: ['org/prod/priv'] }, bob: { password: 'bobpw', repositories: [] } },
  publicRepositories: ['org/prod/app', 'org/prod/legacy'],
  hosts: { [HOST_UUID]: ['org/prod/priv'] },
});
const foremanUrl = await katello.start();
t.teardown(() => katello.stop());

const pki = makePki();
const proxyd = await startProxyd({
  fixtures: false,
  https: true,
  settings: { foreman_url: foremanUrl, ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca, log_level: 'INFO' },
  plugins: { container_gateway: { enabled: true, pulp_endpoint: registry.url, pulp_registry_path: '/v2/', sqlite_db_path: join(work, 'gw.db') } },
});
t.teardown(() => proxyd.stop());
const gw = new URL(proxyd.httpUrl).host;
const gwTls = new URL(proxyd.httpsUrl).host;

// Katello's sync: one public, one private repository (plain HTTP from loopback: trusted without trusted_hosts).
const listed = await request(`${proxyd.httpUrl}/container_gateway/repository_list/`, {
  method: 'PUT',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ repositories: [
    { repository: 'org/prod/app', auth_required: false },
    { repository: 'org/prod/legacy', auth_required: false },
    { repository: 'org/prod/priv', auth_required: true },
  ] }),
});
if (listed.status !== 200) throw new Error(`repository_list: ${listed.status} ${listed.body}`);

/** Copy through the gateway into a new OCI layout and compare every blob with the source layout. */
async function assertByteIdentical(tt: Tap, source: string, ref: string, creds?: string) {
  const out = join(work, `out-${Math.random().toString(36).slice(2)}`);
  const copied = await pullImage(`${gw}/${ref}`, `oci:${out}:copy`, creds ? { creds } : {});
  tt.equal(copied.code, 0, `skopeo copy from the gateway: ${copied.stderr}`);
  tt.same(layoutBlobs(out), layoutBlobs(source), 'the same blobs, by digest');
  for (const digest of layoutBlobs(source)) {
    tt.ok(readFileSync(join(out, 'blobs', ...digest.split(':'))).equals(readFileSync(join(source, 'blobs', ...digest.split(':')))), `blob ${digest.slice(0, 19)} byte-identical`);
  }
  tt.equal(layoutManifest(out, 'copy').digest, layoutManifest(source).digest, 'the same manifest digest');
}
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

t.test('public repository: skopeo inspect and copy, anonymously, byte for byte', async (t) => {
  const info = await inspectImage(`${gw}/org/prod/app:v1`);
  t.equal(info.Layers.length, 3);
  t.equal(info.Digest, layoutManifest(app.layout).digest);
  await assertByteIdentical(t, app.layout, 'org/prod/app:v1');
});

t.test('public repository: podman pull', async (t) => {
  const store = join(work, 'podman-public');
  const pull = await podman(store, ['pull', '--tls-verify=false', `${gw}/org/prod/app:v1`]);
  t.equal(pull.code, 0, pull.stderr);
  const digest = await podman(store, ['image', 'inspect', '--format', '{{.Digest}}', `${gw}/org/prod/app:v1`]);
  t.equal(digest.stdout.trim(), layoutManifest(app.layout).digest, 'podman has the image with the published digest');
});

t.test('a Docker v2s2 image comes through unchanged', async (t) => {
  const raw = await request(`${proxyd.httpUrl}/v2/org/prod/legacy/manifests/v1`, { headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json', Authorization: 'Bearer unauthenticated' } });
  t.equal(raw.status, 200);
  t.equal(raw.headers['content-type'], 'application/vnd.docker.distribution.manifest.v2+json');
  t.equal(raw.headers['docker-content-digest'], sha256(Buffer.from(raw.body)), 'Docker-Content-Digest matches the body');
  t.equal(raw.headers['content-length'], String(Buffer.byteLength(raw.body)));
  const direct = await request(`${registry.url}/v2/org/prod/legacy/manifests/v1`, { headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
  t.equal(raw.body, direct.body, 'the same bytes as the backend');
  const store = join(work, 'podman-v2s2');
  const pull = await podman(store, ['pull', '--tls-verify=false', `${gw}/org/prod/legacy:v1`]);
  t.equal(pull.code, 0, pull.stderr);
});

t.test('private repository: anonymous clients get 401 with a challenge naming it, as for an unknown one', async (t) => {
  const denied = await skopeo(['inspect', '--tls-verify=false', `docker://${gw}/org/prod/priv:v1`]);
  t.not(denied.code, 0, 'skopeo cannot read it');
  for (const headers of [{}, { Authorization: 'Bearer unauthenticated' }] as Array<Record<string, string>>) {
    for (const name of ['org/prod/priv', 'org/prod/absent']) {
      const res = await request(`${proxyd.httpUrl}/v2/${name}/manifests/v1`, { headers });
      t.equal(res.status, 401, `${name}, ${JSON.stringify(headers)}`);
      t.same(res.json(), { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: { name } }] });
      t.equal(res.headers['www-authenticate'], `Bearer realm="http://${gw}/v2/token",service="${gw}",scope="repository:${name}:pull"`);
      t.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
    }
  }
});

t.test('private repository after podman login: pull works; the token is stored only as a checksum', async (t) => {
  const store = join(work, 'podman-admin');
  const login = await podman(store, ['login', '--tls-verify=false', '-u', 'admin', '-p', 'changeme', gw]);
  t.equal(login.code, 0, login.stderr);
  const pull = await podman(store, ['pull', '--tls-verify=false', `${gw}/org/prod/priv:v1`]);
  t.equal(pull.code, 0, pull.stderr);
  await assertByteIdentical(t, priv.layout, 'org/prod/priv:v1', 'admin:changeme');

  const tokenCall = katello.requests.find((r) => r.path === '/v2/token' && r.headers.authorization?.startsWith('Basic'));
  t.ok(tokenCall, 'the login reached Katello with the client\'s Basic credentials');
  t.notOk(tokenCall && 'service' in tokenCall.query, 'service is not forwarded');
  t.equal(tokenCall?.query.account, 'admin');

  const db = new Database(join(work, 'gw.db'), { readonly: true });
  t.teardown(() => db.close());
  const token = katello.tokenOf('admin')!;
  const rows = db.prepare('SELECT token_checksum FROM authentication_tokens t JOIN users u ON u.id = t.user_id WHERE u.name = ?').pluck().all('admin') as string[];
  t.ok(rows.includes(sha256(token).slice('sha256:'.length)), 'sha256 of the token is stored (hex)');
  const dump = JSON.stringify(db.prepare('SELECT * FROM authentication_tokens').all());
  t.notMatch(dump, token, 'the token itself is not');
});

t.test('a logged-in user without access gets 404 NAME_UNKNOWN', async (t) => {
  const login = await request(`${proxyd.httpUrl}/v2/token?account=bob&scope=repository:org/prod/priv:pull`, { headers: { Authorization: `Basic ${Buffer.from('bob:bobpw').toString('base64')}` } });
  t.equal(login.status, 200);
  const token = login.json().token as string;
  for (const name of ['org/prod/priv', 'org/prod/absent']) {
    const res = await request(`${proxyd.httpUrl}/v2/${name}/manifests/v1`, { headers: { Authorization: `Bearer ${token}` } });
    t.equal(res.status, 404, `${name}: private and unknown alike`);
    t.equal(res.json().errors[0].code, 'NAME_UNKNOWN');
  }
  const ok = await request(`${proxyd.httpUrl}/v2/org/prod/app/manifests/v1`, { headers: { Authorization: `Bearer ${token}`, Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  t.equal(ok.status, 200, 'public repositories stay readable');
  const wrong = await request(`${proxyd.httpUrl}/v2/token?account=bob`, { headers: { Authorization: `Basic ${Buffer.from('bob:nope').toString('base64')}` } });
  t.equal(wrong.status, 401, "Katello's refusal is passed on");
  const forged = await request(`${proxyd.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: { Authorization: 'Bearer not-a-token-we-issued' } });
  t.equal(forged.status, 401, 'an unknown token must log in again');
  t.equal(forged.json().errors[0].code, 'UNAUTHORIZED');
});

t.test('a host certificate whose UUID is mapped gets the private repository (skopeo over TLS)', async (t) => {
  const host = pki.client(HOST_UUID);
  const certDir = join(work, 'host-certs');
  mkdirSync(certDir, { recursive: true });
  cpSync(host.cert, join(certDir, 'client.cert'));
  cpSync(host.key, join(certDir, 'client.key'));
  cpSync(pki.ca, join(certDir, 'ca.crt'));
  const info = await skopeo(['inspect', '--cert-dir', certDir, `docker://${gwTls}/org/prod/priv:v1`]);
  t.equal(info.code, 0, info.stderr);
  t.equal(JSON.parse(info.stdout).Digest, layoutManifest(priv.layout).digest);
  t.ok(katello.requests.some((r) => r.path === '/v2/_catalog' && r.headers.hostuuid === HOST_UUID && !r.headers.authorization), "the host's catalog came from Katello by HostUUID, without credentials");
  const other = pki.client('aaaaaaaa-0000-4000-8000-000000000000');
  const denied = await request(`${proxyd.httpsUrl}/v2/org/prod/priv/manifests/v1`, { ca: pki.ca, client: other });
  t.equal(denied.status, 404, 'an unmapped host does not');
  const rogue = pki.rogue(HOST_UUID);
  const forged = await request(`${proxyd.httpsUrl}/v2/org/prod/priv/manifests/v1`, { ca: pki.ca, client: rogue });
  t.equal(forged.status, 401, 'a self-signed certificate with the mapped UUID identifies nobody: log in');
  const header = await request(`${proxyd.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: { 'X-RHSM-SSL-CLIENT-CERT': readFileSync(host.cert, 'utf8').replace(/\n/g, '') } });
  t.equal(header.status, 401, 'a forwarded certificate header from a client that is not a trusted proxy is ignored');
});

t.test('podman search lists what the user may see', async (t) => {
  const anon = await podman(join(work, 'podman-search-anon'), ['search', '--tls-verify=false', '--format', '{{.Name}}', `${gw}/`]);
  t.equal(anon.code, 0, anon.stderr);
  t.same(anon.stdout.trim().split('\n').sort(), [`${gw}/org/prod/app`, `${gw}/org/prod/legacy`]);
  const store = join(work, 'podman-search-admin');
  t.equal((await podman(store, ['login', '--tls-verify=false', '-u', 'admin', '-p', 'changeme', gw])).code, 0);
  const admin = await podman(store, ['search', '--tls-verify=false', '--format', '{{.Name}}', `${gw}/`]);
  t.equal(admin.code, 0, admin.stderr);
  t.same(admin.stdout.trim().split('\n').sort(), [`${gw}/org/prod/app`, `${gw}/org/prod/legacy`, `${gw}/org/prod/priv`]);
});

t.test('tags/list pages with n/last and a Link to the gateway itself', async (t) => {
  const headers = { Authorization: 'Bearer unauthenticated' };
  const first = await request(`${proxyd.httpUrl}/v2/org/prod/app/tags/list?n=2`, { headers });
  t.same(first.json(), { name: 'org/prod/app', tags: ['v1', 'v2'] });
  t.equal(first.headers.link, `<http://${gw}/v2/org/prod/app/tags/list?n=2&last=v2>; rel="next"`);
  const second = await request(`http://${gw}/v2/org/prod/app/tags/list?n=2&last=v2`, { headers });
  t.same(second.json(), { name: 'org/prod/app', tags: ['v3'] });
  t.equal(second.headers.link, undefined, 'no Link on the last page');
  const prefixed = await request(`${proxyd.httpUrl}/container_gateway/v2/org/prod/app/tags/list?n=1`, { headers });
  t.equal(prefixed.headers.link, `<http://${gw}/container_gateway/v2/org/prod/app/tags/list?n=1&last=v1>; rel="next"`, 'the /container_gateway/ mount pages under itself');
  const none = await request(`${proxyd.httpUrl}/v2/org/prod/app/tags/list?n=0`, { headers });
  t.same(none.json(), { name: 'org/prod/app', tags: [] });
  const bad = await request(`${proxyd.httpUrl}/v2/org/prod/app/tags/list?n=-1`, { headers });
  t.equal(bad.status, 400);
  t.equal(bad.json().errors[0].code, 'PAGINATION_NUMBER_INVALID');
});

t.test('blob HEAD and Range answer as clients need', async (t) => {
  const manifest = layoutManifest(app.layout).manifest as { layers: Array<{ digest: string; size: number }> };
  const layer = manifest.layers[0]!;
  const headers = { Authorization: 'Bearer unauthenticated' };
  const head = await request(`${proxyd.httpUrl}/v2/org/prod/app/blobs/${layer.digest}`, { method: 'HEAD', headers });
  t.equal(head.status, 200);
  t.equal(head.headers['content-length'], String(layer.size));
  t.equal(head.headers['docker-content-digest'], layer.digest);
  const bytes = readFileSync(join(app.layout, 'blobs', ...layer.digest.split(':')));
  const part = await request(`${proxyd.httpUrl}/v2/org/prod/app/blobs/${layer.digest}`, { headers: { ...headers, Range: 'bytes=100-199' } });
  t.equal(part.status, 206);
  t.equal(part.headers['content-range'], `bytes 100-199/${layer.size}`);
  t.equal(part.headers['content-length'], '100');
  const manifestHead = await request(`${proxyd.httpUrl}/v2/org/prod/app/manifests/v1`, { method: 'HEAD', headers: { ...headers, Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  t.equal(manifestHead.status, 200);
  t.equal(manifestHead.headers['docker-content-digest'], layoutManifest(app.layout).digest);
  t.equal(manifestHead.headers['content-length'], String(layoutManifest(app.layout).raw.length));
  t.ok(bytes.length === layer.size);
});

t.test('the special tokens and the ping', async (t) => {
  const none = await request(`${proxyd.httpUrl}/v2/`);
  t.equal(none.status, 401);
  t.match(none.headers['www-authenticate'], /^Bearer realm="http:\/\/[^"]+\/v2\/token",service="[^"]+"$/);
  t.equal((await request(`${proxyd.httpUrl}/v2/`, { headers: { Authorization: 'Bearer unauthenticated' } })).status, 401);
  t.equal((await request(`${proxyd.httpUrl}/v2/`, { headers: { Authorization: 'Bearer unauthorized' } })).status, 200);
  t.equal((await request(`${proxyd.httpUrl}/container_gateway/v2/`, { headers: { Authorization: 'Bearer unauthorized' } })).status, 200, 'also under /container_gateway/');
  t.equal(none.headers['x-registry-supports-signatures'], undefined, 'no signature extension is advertised');
  const catalog = await request(`${proxyd.httpUrl}/v2/_catalog`, { headers: { Authorization: 'Bearer unauthenticated' } });
  t.same(catalog.json(), { repositories: ['org/prod/app', 'org/prod/legacy'] });
  const push = await request(`${proxyd.httpUrl}/v2/org/prod/app/blobs/uploads/`, { method: 'POST', headers: { Authorization: 'Bearer unauthenticated' } });
  // With a main server, a push goes there (issue #5) and its answer comes back unchanged.
  t.equal(push.status, 401, "the main server's answer: Katello refuses a push without a user");
  t.match(push.headers['www-authenticate'], new RegExp(`^Bearer realm="${proxyd.httpUrl}/v2/token"`), 'its challenge, with the realm at the proxy');
  const forwarded = katello.requestsTo('/v2/org/prod/app/blobs/uploads/');
  t.equal(forwarded.length, 1, 'the upload start went to the main server');
  t.equal(forwarded[0]?.headers.authorization, 'Bearer unauthenticated', "with the client's Authorization");
});

t.test('/v1/search: 404 for v2 clients, substring search over what the caller may see', async (t) => {
  const v2client = await request(`${proxyd.httpUrl}/v1/search?q=prod`, { headers: { 'Docker-Distribution-API-Version': 'registry/2.0' } });
  t.same([v2client.status, v2client.json()], [404, {}], 'containers/image falls back to _catalog');
  const anon = await request(`${proxyd.httpUrl}/v1/search?q=prod`);
  t.same(anon.json(), { num_results: 2, query: 'prod', results: [{ description: '', name: 'org/prod/app' }, { description: '', name: 'org/prod/legacy' }] });
  const basic = { Authorization: `Basic ${Buffer.from('admin:changeme').toString('base64')}` };
  const admin = await request(`${proxyd.httpUrl}/v1/search?q=pri`, { headers: basic });
  t.same(admin.json().results, [{ description: '', name: 'org/prod/priv' }], 'a user sees their private repositories');
  t.equal((await request(`${proxyd.httpUrl}/v1/search?q=prod&n=1`, { headers: basic })).json().num_results, 1, 'n limits');
  t.equal((await request(`${proxyd.httpUrl}/v1/search?n=0`, { headers: basic })).json().num_results, 0, 'n <= 0 gives nothing');
  const wrong = await request(`${proxyd.httpUrl}/v1/search?q=prod`, { headers: { Authorization: `Basic ${Buffer.from('admin:wrong').toString('base64')}` } });
  t.equal(wrong.status, 401);
});
