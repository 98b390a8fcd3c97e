// The gateway in front of Pulp as measured (test/helpers/pulp-double.ts): signed
// content-app redirects passed or followed with path and query intact, direct
// manifests (pulp_container >= 2.28), no media-type conversion, absolute Link
// paging, and an identity header Pulp's web server lets through. Real skopeo
// and podman pull through the real daemon; content sits in docker-registry.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, layoutBlobs, layoutManifest, podman, pullImage, pushImage } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { PulpDouble, type PulpDoubleOptions } from './helpers/pulp-double.ts';
import { startProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];
const OCI = 'application/vnd.oci.image.manifest.v1+json';
const V2S2 = 'application/vnd.docker.distribution.manifest.v2+json';
const anon = { Authorization: 'Bearer unauthenticated' };

const work = mkdtempSync(join(tmpdir(), 'gw-pulp-real-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const registry = await startRegistry();
t.teardown(() => registry.stop());
const app = await buildImage(work, { name: 'app', files: { '/etc/app.txt': 'public app\n' }, layers: 2, randomBytes: 256 * 1024 });
const priv = await buildImage(work, { name: 'priv', files: { '/etc/secret.txt': 'private\n' }, layers: 1 });
const TAGS = ['v1', 'v2', 'v3', 'v4', 'v5'];
for (const tag of TAGS) await pushImage(app.ref, `${registry.host}/org/prod/app:${tag}`);
await pushImage(app.ref, `${registry.host}/org/prod/legacy:v1`, { format: 'v2s2' });
await pushImage(priv.ref, `${registry.host}/org/prod/priv:v1`);

const katello = new KatelloDouble({
  users: { admin: { password: 'changeme', repositories: ['org/prod/priv'] } },
  publicRepositories: ['org/prod/app', 'org/prod/legacy'],
  hosts: {},
});
const foremanUrl = await katello.start();
t.teardown(() => katello.stop());

async function pulp(t: Tap, extra: Partial<PulpDoubleOptions> = {}): Promise<PulpDouble> {
  const double = new PulpDouble({ storage: registry.url, publicRepositories: ['org/prod/app', 'org/prod/legacy'], users: { admin: ['org/prod/priv'] }, pageSize: 2, ...extra });
  await double.start();
  t.teardown(() => double.stop());
  return double;
}

async function gateway(t: Tap, double: PulpDouble, settings: Record<string, unknown>): Promise<{ url: string; host: string }> {
  const proxyd = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl, log_level: 'INFO' },
    plugins: { container_gateway: { enabled: true, pulp_endpoint: double.apiUrl, pulp_registry_path: '/v2/', sqlite_db_path: join(mkdtempSync(join(work, 'db-')), 'gw.db'), ...settings } },
  });
  t.teardown(() => proxyd.stop());
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
  return { url: proxyd.httpUrl, host: new URL(proxyd.httpUrl).host };
}

async function copiedIdentical(t: Tap, host: string, ref: string, source: string, creds?: string): Promise<void> {
  const out = join(work, `out-${Math.random().toString(36).slice(2)}`);
  const copied = await pullImage(`${host}/${ref}`, `oci:${out}:copy`, creds ? { creds } : {});
  t.equal(copied.code, 0, `skopeo copy: ${copied.stderr}`);
  t.same(layoutBlobs(out), layoutBlobs(source), 'the same blobs');
  for (const d of layoutBlobs(source)) t.ok(readFileSync(join(out, 'blobs', ...d.split(':'))).equals(readFileSync(join(source, 'blobs', ...d.split(':')))), `blob ${d.slice(0, 19)} byte-identical`);
  t.equal(layoutManifest(out, 'copy').digest, layoutManifest(source).digest, 'the same manifest digest');
}

t.test('redirect_mode pass: the client reaches the content app at client_endpoint with the signed path and query intact', async (t) => {
  const double = await pulp(t);
  const port = new URL(double.contentOrigin).port;
  const gw = await gateway(t, double, { redirect_mode: 'pass', client_endpoint: `http://localhost:${port}` });
  const manifest = await request(`${gw.url}/v2/org/prod/app/manifests/v1`, { headers: { ...anon, Accept: OCI } });
  t.equal(manifest.status, 302);
  const issued = double.log.filter((e) => e.app === 'api' && e.status === 302).at(-1);
  t.ok(issued, 'Pulp answered 302');
  const location = String(manifest.headers.location);
  t.match(location, new RegExp(`^http://localhost:${port}/pulp/container/org/prod/app/manifests/v1\\?expires=\\d+&validate_token=[0-9a-f]{64}:[0-9a-f]{64}$`), 'host from client_endpoint, Pulp\'s path and query');
  await copiedIdentical(t, gw.host, 'org/prod/app:v1', app.layout);
  const content = double.log.filter((e) => e.app === 'content');
  t.ok(content.length >= 3, 'skopeo fetched manifest and blobs from the content app itself');
  t.same(content.filter((e) => e.status === 403), [], 'the content app refused nothing: every token still matched');
  const tampered = await request(`http://localhost:${port}${new URL(location).pathname}${new URL(location).search.replace('expires=', 'expires=1')}`);
  t.equal(tampered.status, 403, 'the double does refuse a changed query');
  const store = join(work, 'podman-pass');
  const pulled = await podman(store, ['pull', '--tls-verify=false', `${gw.host}/org/prod/app:v2`]);
  t.equal(pulled.code, 0, pulled.stderr);
  const digest = await podman(store, ['image', 'inspect', '--format', '{{.Digest}}', `${gw.host}/org/prod/app:v2`]);
  t.equal(digest.stdout.trim(), layoutManifest(app.layout).digest, 'podman has the published digest');
});

t.test('redirect_mode follow: the gateway follows the signed redirect itself, path and query intact', async (t) => {
  const double = await pulp(t);
  const gw = await gateway(t, double, { redirect_mode: 'follow' });
  await copiedIdentical(t, gw.host, 'org/prod/app:v1', app.layout);
  const content = double.log.filter((e) => e.app === 'content');
  t.ok(content.length >= 3, 'manifest and blobs came from the content app');
  t.same(content.filter((e) => e.status >= 400), [], 'every followed target was accepted');
  const head = await request(`${gw.url}/v2/org/prod/app/blobs/${layoutManifest(app.layout).manifest.layers[0]!.digest}`, { method: 'HEAD', headers: anon });
  t.equal(head.status, 200, 'HEAD of a blob is answered by the gateway');
});

t.test('pulp_container >= 2.28: manifests 200 from the API, blobs still redirected; both modes pull', async (t) => {
  const double = await pulp(t, { manifestsDirect: true });
  for (const mode of ['pass', 'follow']) {
    const gw = await gateway(t, double, { redirect_mode: mode });
    const manifest = await request(`${gw.url}/v2/org/prod/app/manifests/v1`, { headers: { ...anon, Accept: OCI } });
    t.equal(manifest.status, 200, `${mode}: the manifest itself`);
    t.equal(manifest.headers['docker-content-digest'], layoutManifest(app.layout).digest);
    await copiedIdentical(t, gw.host, 'org/prod/app:v1', app.layout);
  }
});

t.test('Accept: what the client asked is what Pulp is asked; a refusal is not cached as an answer', async (t) => {
  const double = await pulp(t);
  const gw = await gateway(t, double, { redirect_mode: 'follow' });
  const wrong = await request(`${gw.url}/v2/org/prod/app/manifests/v1`, { headers: { ...anon, Accept: V2S2 } });
  t.equal(wrong.status, 404, 'an OCI image asked for as Docker v2s2 only');
  t.equal(wrong.json().errors[0].code, 'MANIFEST_UNKNOWN');
  const right = await request(`${gw.url}/v2/org/prod/app/manifests/v1`, { headers: { ...anon, Accept: `${OCI}, ${V2S2}` } });
  t.equal(right.status, 200);
  t.equal(right.headers['content-type'], OCI);
  const again = await request(`${gw.url}/v2/org/prod/app/manifests/v1`, { headers: { ...anon, Accept: V2S2 } });
  t.equal(again.status, 404, 'the OCI manifest cached for the other Accept is not served to this one');
  const legacy = await request(`${gw.url}/v2/org/prod/legacy/manifests/v1`, { headers: { ...anon, Accept: OCI } });
  t.equal(legacy.status, 404, 'a v2s2 image asked for as OCI only');
  const accepts = double.log.filter((e) => e.app === 'api' && e.url.includes('/manifests/')).map((e) => e.headers.accept);
  t.same(accepts, [V2S2, `${OCI}, ${V2S2}`, V2S2, OCI], 'Pulp saw each client\'s Accept');
  const store = join(work, 'podman-legacy');
  const pulled = await podman(store, ['pull', '--tls-verify=false', `${gw.host}/org/prod/legacy:v1`]);
  t.equal(pulled.code, 0, `podman gets the v2s2 image: ${pulled.stderr}`);
});

t.test('tags/list: the gateway follows Pulp\'s absolute Link pages', async (t) => {
  const double = await pulp(t);
  const gw = await gateway(t, double, {});
  const tags = await request(`${gw.url}/v2/org/prod/app/tags/list`, { headers: anon });
  t.equal(tags.status, 200);
  t.same(tags.json().tags, TAGS, 'every tag, over several Pulp pages');
  const pages = double.log.filter((e) => e.app === 'api' && e.url.includes('/tags/list'));
  t.ok(pages.length >= 3, `${pages.length} pages asked for`);
  t.ok(pages.slice(1).every((e) => e.url.includes('last=')), 'each next page as Pulp\'s Link named it');
  const paged = await request(`${gw.url}/v2/org/prod/app/tags/list?n=2&last=v2`, { headers: anon });
  t.same(paged.json().tags, ['v3', 'v4'], 'the client\'s own page');
});

t.test('tags/list through Katello\'s /pulpcore_registry/v2/: Pulp\'s Link names /v2/, the gateway maps it back', async (t) => {
  const double = await pulp(t, { behindKatello: true });
  const gw = await gateway(t, double, { pulp_registry_path: '/pulpcore_registry/v2/' });
  const tags = await request(`${gw.url}/v2/org/prod/app/tags/list`, { headers: anon });
  t.equal(tags.status, 200, tags.body);
  t.same(tags.json().tags, TAGS, 'every tag, over several pages');
  const pages = double.log.filter((e) => e.app === 'api' && e.url.includes('/tags/list'));
  t.ok(pages.length >= 3 && pages.every((e) => e.url.startsWith('/pulpcore_registry/v2/') && e.status === 200), 'every page asked under the mapped path');
});

t.test('identity: Remote-User by default reaches Pulp; REMOTE_USER would be dropped by its web server', async (t) => {
  const double = await pulp(t);
  const gw = await gateway(t, double, { redirect_mode: 'follow' });
  await copiedIdentical(t, gw.host, 'org/prod/priv:v1', priv.layout, 'admin:changeme');
  const seen = double.log.filter((e) => e.app === 'api' && e.url.includes('org/prod/priv'));
  t.ok(seen.length > 0 && seen.every((e) => e.headers['remote-user'] === 'admin'), 'Pulp saw the user');
  const forged = await request(`${gw.url}/v2/org/prod/app/manifests/v1`, { headers: { ...anon, Accept: OCI, 'Remote-User': 'admin', REMOTE_USER: 'admin' } });
  t.equal(forged.status, 200);
  t.equal(double.log.filter((e) => e.app === 'api').at(-1)?.headers['remote-user'], undefined, 'a client-sent identity never reaches Pulp');

  const old = await gateway(t, double, { redirect_mode: 'follow', remote_user_header: 'REMOTE_USER' });
  const out = join(work, 'out-old');
  const copied = await pullImage(`${old.host}/org/prod/priv:v1`, `oci:${out}:copy`, { creds: 'admin:changeme' }).catch((e: Error) => ({ code: 1, stderr: e.message }));
  t.not(copied.code, 0, 'with REMOTE_USER the private pull fails: Pulp never learns who asks');
});
