// The flatpak index (GET /index/static, also under /container_gateway) and
// flatpak logins, through the real daemon. Embedded store: images with
// flatpak labels pushed with skopeo through the proxy (content copied into
// the store), the main server a real docker-registry behind the Katello
// double; the real `flatpak` client lists the index. Pulp: a scripted Pulp
// (it cannot run here) answering /pulpcore_registry/index/static as measured
// (400 without the label filter; Registry = its content origin; one result
// per repository, unfiltered). Each viewer kind: a host certificate
// (forwarded by a trusted front), a user's token, anonymous.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, pushImage } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { startMainServer, type MainServer } from './helpers/main-server.ts';
import { makePki } from './helpers/pki.ts';
import { manifestOf, OCI_INDEX, OCI_MANIFEST, sha256 as digestOf, StandaloneGateway } from './helpers/standalone-gateway.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';

const HOST = '0a0b0c0d-1111-4222-8333-444455556666';
const FLATPAK_UA = 'flatpak/1.14.4';
const QUERY = 'label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest';
const work = mkdtempSync(join(tmpdir(), 'gw-flatpak-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();
t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));
const hostCert = readFileSync(pki.client(HOST).cert, 'utf8').replace(/\n/g, '');
const basic = (creds: string) => `Basic ${Buffer.from(creds).toString('base64')}`;
const names = (body: { Results: Array<{ Name: string }> }) => body.Results.map((r) => r.Name).sort();

function flatpakLabels(id: string): Record<string, string> {
  return {
    'org.flatpak.ref': `app/${id}/x86_64/stable`,
    'org.flatpak.metadata': `[Application]\nname=${id}\nruntime=org.example.Platform/x86_64/1\n`,
    'org.flatpak.installed-size': '1024',
    'org.flatpak.download-size': '512',
  };
}

const REPOSITORY_LIST = [
  { repository: 'acme/flat/editor', auth_required: true },
  { repository: 'acme/flat/secret', auth_required: true },
  { repository: 'acme/flat/viewer', auth_required: false },
  { repository: 'acme/flat/plain', auth_required: false },
];

async function putRepositoryList(p: RunningProxyd): Promise<number> {
  const res = await request(`${p.httpUrl}/container_gateway/repository_list`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ repositories: REPOSITORY_LIST }) });
  return res.status;
}

/** A token from the proxy's /v2/token, as flatpak asks for it (its User-Agent, Basic credentials). */
async function flatpakToken(p: RunningProxyd, creds: string, account?: string): Promise<string> {
  const q = account ? `?account=${account}&scope=repository:acme/flat/editor:pull` : '?scope=repository:flat/editor:pull';
  const res = await request(`${p.httpUrl}/v2/token${q}`, { headers: { Authorization: basic(creds), 'User-Agent': FLATPAK_UA } });
  if (res.status !== 200) throw new Error(`token: ${res.status} ${res.body}`);
  return res.json().token as string;
}

t.test('embedded store: the index built from stored images, filtered per viewer; flatpak logins; flatpak remote-ls', async (t) => {
  const main: MainServer = await startMainServer({
    users: {
      alice: { password: 'alice-pw', repositories: ['acme/flat/editor', 'acme/flat/secret', 'acme/flat/viewer', 'acme/flat/plain'], push: true },
      bob: { password: 'bob-pw', repositories: [] },
    },
    hosts: { [HOST]: ['acme/flat/editor'] },
  });
  t.teardown(() => main.stop());
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: main.foremanUrl },
    plugins: {
      container_gateway: { enabled: true, content_backend: 'local', main_registry_url: main.mainRegistryUrl, sqlite_db_path: join(work, 'emb.db'), storage_path: join(work, 'storage'), trusted_proxies: ['127.0.0.1'] },
    },
  });
  t.teardown(() => p.stop());
  const gw = new URL(p.httpUrl).host;
  for (const [repo, labels] of [
    ['acme/flat/editor', flatpakLabels('org.example.Editor')],
    ['acme/flat/secret', flatpakLabels('org.example.Secret')],
    ['acme/flat/viewer', flatpakLabels('org.example.Viewer')],
    ['acme/flat/plain', { 'org.example.kind': 'not a flatpak' }],
  ] as const) {
    const image = await buildImage(work, { name: repo, files: { [`/${repo}.txt`]: `${repo}\n` }, labels });
    await pushImage(image.ref, `${gw}/${repo}:latest`, { creds: 'alice:alice-pw' });
  }
  t.equal(await putRepositoryList(p), 200);

  const anon = await request(`${p.httpUrl}/index/static?${QUERY}`);
  t.equal(anon.status, 200);
  const body = anon.json();
  t.same(names(body), ['acme/flat/viewer'], 'anonymous: public flatpak repositories only (acme/flat/plain has no org.flatpak.ref)');
  t.equal(body.Registry, `${p.httpUrl}/`, 'Registry: the proxy, where flatpak pulls from');
  const image = body.Results[0].Images[0];
  t.same(image.Tags, ['latest']);
  t.equal(image.Labels['org.flatpak.ref'], 'app/org.example.Viewer/x86_64/stable');
  t.equal(image.OS, 'linux');
  t.match(image.Digest, /^sha256:[0-9a-f]{64}$/);
  const byDigest = await request(`${p.httpUrl}/v2/acme/flat/viewer/manifests/${image.Digest}`, { headers: { Authorization: 'Bearer unauthenticated' } });
  t.equal(byDigest.status, 200, 'the listed digest is pullable from the proxy');

  const under = await request(`${p.httpUrl}/container_gateway/index/static?${QUERY}`);
  t.same(under.json(), body, 'the same index under /container_gateway');

  const asHost = await request(`${p.httpUrl}/index/static?${QUERY}`, { headers: { 'X-RHSM-SSL-CLIENT-CERT': hostCert } });
  t.same(names(asHost.json()), ['acme/flat/editor', 'acme/flat/viewer'], "host certificate: the host's repositories (learnt from Katello) and public ones");
  t.ok(main.katello.requests.some((r) => r.headers.hostuuid === HOST), 'the unknown host was asked about at Katello');

  t.equal((await request(`${p.httpUrl}/v2/token`, { headers: { 'User-Agent': FLATPAK_UA } })).status, 401, 'a flatpak client without a user: 401');
  const noUser = await request(`${p.httpUrl}/v2/token`, { headers: { 'User-Agent': FLATPAK_UA } });
  t.match(noUser.headers['www-authenticate'], /^Bearer realm=/, 'with the challenge, so that it logs in');
  const alice = await flatpakToken(p, 'alice:alice-pw', 'bob');
  const asAlice = await request(`${p.httpUrl}/index/static?${QUERY}`, { headers: { Authorization: `Bearer ${alice}` } });
  t.same(names(asAlice.json()), ['acme/flat/editor', 'acme/flat/secret', 'acme/flat/viewer'], "a flatpak login is the Basic user's (account=bob ignored): alice's catalog");
  const bob = await flatpakToken(p, 'bob:bob-pw');
  t.same(names((await request(`${p.httpUrl}/index/static?${QUERY}`, { headers: { Authorization: `Bearer ${bob}` } })).json()), ['acme/flat/viewer'], "bob's catalog: public only");
  const invalid = await request(`${p.httpUrl}/index/static?${QUERY}`, { headers: { Authorization: 'Bearer not-a-token' } });
  t.equal(invalid.status, 401, 'an unknown token: 401');
  t.ok(invalid.json().error, '{"error"} form');

  const noLabel = await request(`${p.httpUrl}/index/static`);
  t.equal(noLabel.status, 400, 'as Pulp: the label filter is required');
  t.match(noLabel.json().error, /Missing label:org\.flatpak\.ref:exists=1/);
  t.same((await request(`${p.httpUrl}/index/static?label%3Aorg.flatpak.ref%3Aexists=1&tag=other`)).json().Results, [], 'a tag filter no image matches: no results');
  const byLabel = await request(`${p.httpUrl}/index/static?label%3Aorg.flatpak.ref%3Aexists=1&label%3Aorg.flatpak.ref=${encodeURIComponent('app/org.example.Viewer/x86_64/stable')}`);
  t.same(names(byLabel.json()), ['acme/flat/viewer'], 'label:K=V filters on the value');

  // The real client: flatpak reads the index of an oci+ remote and lists its refs.
  const home = mkdtempSync(join(work, 'flatpak-home-'));
  const env = { ...process.env, HOME: home, XDG_DATA_HOME: join(home, 'data'), XDG_CACHE_HOME: join(home, 'cache'), XDG_CONFIG_HOME: join(home, 'config') };
  const run = (args: string[]) =>
    new Promise<{ code: number; out: string }>((resolve) =>
      execFile('flatpak', args, { env, timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` })),
    );
  const added = await run(['remote-add', '--user', '--no-gpg-verify', 'proxy', `oci+${p.httpUrl}`]);
  t.equal(added.code, 0, `flatpak remote-add: ${added.out}`);
  const listed = await run(['remote-ls', '--user', '--columns=ref', 'proxy']);
  t.equal(listed.code, 0, `flatpak remote-ls: ${listed.out}`);
  t.match(listed.out, /app\/org\.example\.Viewer\/x86_64\/stable/, 'flatpak lists the public flatpak');
  t.notMatch(listed.out, /org\.example\.(Editor|Secret)/, 'and nothing private');
});

t.test('pulp: Pulp index proxied, query re-encoded, Registry the proxy, Results filtered per viewer', async (t) => {
  const seen: Array<{ url: string; headers: http.IncomingHttpHeaders }> = [];
  const contentOrigin = 'https://pulp.example.com';
  const pulp = http.createServer((req, res) => {
    seen.push({ url: req.url ?? '', headers: req.headers });
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/pulpcore_registry/index/static') return void res.writeHead(404).end();
    if (url.searchParams.get('label:org.flatpak.ref:exists') !== '1') return void res.writeHead(400, { 'Content-Type': 'application/json' }).end(JSON.stringify(['Missing label:org.flatpak.ref:exists=1']));
    const result = (name: string) => ({ Name: name, Images: [{ Tags: ['latest'], Digest: `sha256:${'a'.repeat(64)}`, MediaType: 'application/vnd.oci.image.manifest.v1+json', OS: 'linux', Architecture: 'amd64', Labels: flatpakLabels(`org.example.${name.split('/')[2]}`) }] });
    // Pulp lists every distribution it has, including ones Katello never told this proxy about.
    const body = JSON.stringify({ Registry: contentOrigin, Results: ['acme/flat/editor', 'acme/flat/secret', 'acme/flat/viewer', 'other/unlisted'].map(result) });
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(body);
  });
  await new Promise<void>((r) => pulp.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => pulp.close(r)));
  const katello = new KatelloDouble({ users: { alice: { password: 'alice-pw', repositories: ['acme/flat/editor', 'acme/flat/secret'] } }, publicRepositories: ['acme/flat/viewer'], hosts: { [HOST]: ['acme/flat/editor'] } });
  const foremanUrl = await katello.start();
  t.teardown(() => katello.stop());
  const p = await startProxyd({
    fixtures: false,
    https: true,
    settings: { foreman_url: foremanUrl, ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca },
    plugins: { container_gateway: { enabled: true, pulp_endpoint: `http://127.0.0.1:${(pulp.address() as AddressInfo).port}`, sqlite_db_path: join(work, 'pulp.db'), trusted_proxies: ['127.0.0.1'], remote_user_header: 'Remote-User' } },
  });
  t.teardown(() => p.stop());
  t.equal(await putRepositoryList(p), 200);

  const raw = await request(`${p.httpUrl}/index/static?${QUERY}`);
  t.equal(raw.status, 200);
  t.same(names(raw.json()), ['acme/flat/viewer'], 'anonymous: public only (the Ruby gateway returned it unfiltered)');
  t.equal(raw.json().Registry, `${p.httpUrl}/`, "Registry: the proxy, not Pulp's content origin");
  const upstream = seen.at(-1)!;
  t.equal(upstream.url, '/pulpcore_registry/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest', 'the query re-encoded');
  t.notOk(upstream.headers['remote-user'], 'no identity upstream for an anonymous caller');
  await request(`${p.httpUrl}/index/static?label%3Aorg.flatpak.ref%3Aexists=1&label%3Aorg.flatpak.ref=app%2Forg.x%2Fx86_64%2Fstable&tag=a+b`);
  t.equal(seen.at(-1)!.url, '/pulpcore_registry/index/static?label%3Aorg.flatpak.ref%3Aexists=1&label%3Aorg.flatpak.ref=app%2Forg.x%2Fx86_64%2Fstable&tag=a%20b', 'escaped keys and values reach Pulp decoded once, encoded once');

  const asHost = await request(`${p.httpUrl}/container_gateway/index/static?${QUERY}`, { headers: { 'X-RHSM-SSL-CLIENT-CERT': hostCert } });
  t.same(names(asHost.json()), ['acme/flat/editor', 'acme/flat/viewer'], 'host certificate: its repositories (learnt from Katello) and public ones');
  t.equal(seen.at(-1)!.headers['remote-user'], HOST, 'the host goes upstream as the remote user');

  const verified = await request(`${p.httpsUrl}/index/static?${QUERY}`, { ca: pki.ca, client: pki.client(HOST) });
  t.same(names(verified.json()), ['acme/flat/editor', 'acme/flat/viewer'], 'a host certificate verified by our TLS: the same');
  t.equal(verified.json().Registry, `${p.httpsUrl}/`, 'Registry: the proxy as the client reached it');
  const rogue = await request(`${p.httpsUrl}/index/static?${QUERY}`, { ca: pki.ca, client: pki.rogue(HOST) });
  t.same(names(rogue.json()), ['acme/flat/viewer'], 'a self-signed certificate naming the host: anonymous, public only');

  const OTHER = '0a0b0c0d-9999-4222-8333-444455556666';
  katello.override((req, res) => {
    if (req.headers.hostuuid !== OTHER) return false;
    res.writeHead(500, { 'Content-Type': 'application/json' }).end('{"error":"boom"}');
    return true;
  });
  const failed = await request(`${p.httpUrl}/index/static?${QUERY}`, { headers: { 'X-RHSM-SSL-CLIENT-CERT': readFileSync(pki.client(OTHER).cert, 'utf8').replace(/\n/g, '') } });
  katello.override(null);
  t.equal(failed.status, 503, "a host Katello could not tell about: 503, never a silently partial index");
  t.equal(failed.headers['retry-after'], '30');
  t.match(failed.json().error, /could not be learnt/);

  const token = await flatpakToken(p, 'alice:alice-pw');
  const asAlice = await request(`${p.httpUrl}/index/static?${QUERY}`, { headers: { Authorization: `Bearer ${token}` } });
  t.same(names(asAlice.json()), ['acme/flat/editor', 'acme/flat/secret', 'acme/flat/viewer'], "user token: the user's catalog; never a repository this proxy does not list");
  t.equal(seen.at(-1)!.headers['remote-user'], 'alice');
  t.equal(katello.requests.filter((r) => r.path.endsWith('/v2/token')).at(-1)?.query.account, 'alice', 'a flatpak login names the Basic user as account at Katello');

  const missing = await request(`${p.httpUrl}/index/static`);
  t.equal(missing.status, 400, "Pulp's refusal of a query without the label filter is passed on");
  t.match(missing.body, /Missing label:org\.flatpak\.ref:exists=1/);
});

t.test('standalone embedded store: flatpak logins against our own users, the index of what the user may read', async (t) => {
  const gw = await StandaloneGateway.start(mkdtempSync(join(work, 'standalone-')));
  t.teardown(() => gw.stop());
  await gw.addUser('alice');
  await gw.addUser('bob');
  const host = new URL(gw.base).host;
  for (const [repo, id] of [['alice/editor', 'org.example.Editor'], ['alice/viewer', 'org.example.Viewer']] as const) {
    const image = await buildImage(work, { name: `sa-${repo}`, files: { '/x.txt': `${repo}\n` }, labels: flatpakLabels(id) });
    await pushImage(image.ref, `${host}/${repo}:latest`, { creds: 'alice:alice-pw' });
  }
  t.equal((await gw.admin('PUT', '/repositories/alice/viewer/visibility', { public: true })).status, 200);

  const anonymousToken = await gw.call('GET', '/v2/token', { headers: { 'User-Agent': FLATPAK_UA } });
  t.equal(anonymousToken.status, 401, 'a flatpak client without a user: 401, not the anonymous token');
  t.match(anonymousToken.headers['www-authenticate'], /^Bearer realm=/);
  const login = await gw.call('GET', '/v2/token?account=bob&scope=repository:alice/editor:pull', { headers: { ...gw.basic('alice'), 'User-Agent': FLATPAK_UA } });
  t.equal(login.status, 200, "alice's password with account=bob: a flatpak login is the Basic user's");
  const token = login.json<{ token: string }>().token;
  t.same(names((await gw.call('GET', `/index/static?${QUERY}`, { token })).json()), ['alice/editor', 'alice/viewer'], "alice's token: her repositories");
  t.same(names((await gw.call('GET', `/index/static?${QUERY}`)).json()), ['alice/viewer'], 'anonymous: the public one');

  // An image index (two platforms) tagged `latest` and `stable`: each platform an image, with the index's tags.
  const push = await gw.tokenOf('alice', 'push,pull', 'alice/multi');
  const platforms: Array<{ digest: string; size: number; arch: string }> = [];
  for (const arch of ['amd64', 'arm64']) {
    const config = await gw.pushBlob('alice/multi', push, JSON.stringify({ architecture: arch, os: 'linux', config: { Labels: flatpakLabels(`org.example.Multi.${arch}`) } }));
    const layer = await gw.pushBlob('alice/multi', push);
    const manifest = manifestOf(config.blob, [layer.blob]);
    t.equal((await gw.call('PUT', `/v2/alice/multi/manifests/${digestOf(manifest)}`, { token: push, body: manifest, headers: { 'Content-Type': OCI_MANIFEST } })).status, 201);
    platforms.push({ digest: digestOf(manifest), size: Buffer.byteLength(manifest), arch });
  }
  const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: platforms.map((m) => ({ mediaType: OCI_MANIFEST, digest: m.digest, size: m.size, platform: { architecture: m.arch, os: 'linux' } })) });
  for (const tag of ['latest', 'stable']) t.equal((await gw.call('PUT', `/v2/alice/multi/manifests/${tag}`, { token: push, body: index, headers: { 'Content-Type': OCI_INDEX } })).status, 201);
  const all = (await gw.call('GET', '/index/static?label:org.flatpak.ref:exists=1', { token })).json<{ Results: Array<{ Name: string; Images: Array<{ Tags: string[]; Digest: string; Architecture: string }> }> }>();
  const multi = all.Results.find((r) => r.Name === 'alice/multi');
  t.same(
    multi?.Images.map((i) => [i.Digest, i.Architecture, i.Tags]),
    platforms.map((m) => [m.digest, m.arch, ['latest', 'stable']]),
    "an image index: one image per platform manifest, under the index's tags",
  );
  const arm = (await gw.call('GET', '/index/static?label:org.flatpak.ref:exists=1&architecture=arm64&tag=stable', { token })).json<{ Results: Array<{ Name: string; Images: Array<{ Digest: string; Tags: string[] }> }> }>();
  t.same(arm.Results.map((r) => [r.Name, r.Images.map((i) => [i.Digest, i.Tags])]), [['alice/multi', [[platforms[1]!.digest, ['stable']]]]], 'architecture and tag filters');

  const bob = await gw.tokenOf('bob', 'pull', 'alice/editor');
  t.same(names((await gw.call('GET', `/index/static?${QUERY}`, { token: bob })).json()), ['alice/viewer'], "bob: not alice's private repository");
});
