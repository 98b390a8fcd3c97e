// Backend styles and the identity sent upstream. Pulp answers blobs (and old
// Pulp manifests) with a 302 to its content app; the gateway passes that on
// (host rewritten to client_endpoint) or follows and streams it, by setting.
// The "content app" here is a real docker-registry; the Pulp-style redirector
// in front of it is scripted, as Pulp itself cannot run here.
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, layoutManifest, pushImage } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { makePki } from './helpers/pki.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';

const work = mkdtempSync(join(tmpdir(), 'gw-backend-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const registry = await startRegistry();
t.teardown(() => registry.stop());
const image = await buildImage(work, { name: 'img', files: { '/etc/x.txt': 'x\n' }, randomBytes: 512 * 1024 });
await pushImage(image.ref, `${registry.host}/org/prod/app:v1`);
const { manifest } = layoutManifest(image.layout) as { manifest: { layers: Array<{ digest: string; size: number }> } };
const layer = manifest.layers[0]!;
const layerBytes = readFileSync(join(image.layout, 'blobs', ...layer.digest.split(':')));

/** A Pulp-like registry API: blobs are 302s to the content app, other calls echo what they received. */
interface Seen { url: string; headers: http.IncomingHttpHeaders }
const seen: Seen[] = [];
const pulpLike = http.createServer((req, res) => {
  seen.push({ url: req.url ?? '', headers: req.headers });
  const blob = /^\/pulpcore_registry\/v2\/(.+)\/blobs\/(.+)$/.exec(req.url ?? '');
  if (blob) {
    res.writeHead(302, { Location: `${registry.url}/v2/${blob[1]}/blobs/${blob[2]}?validate_token=abc123` });
    res.end();
    return;
  }
  const body = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', seen: req.headers });
  res.writeHead(200, { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
await new Promise<void>((r) => pulpLike.listen(0, '127.0.0.1', () => r()));
t.teardown(() => new Promise((r) => pulpLike.close(r)));
const pulpUrl = `http://127.0.0.1:${(pulpLike.address() as AddressInfo).port}`;

const HOST_UUID = '0f0e0d0c-2222-4b3a-8c7d-aabbccddeeff';
const katello = new KatelloDouble({ users: { admin: { password: 'changeme', repositories: ['org/prod/app'] } }, publicRepositories: [], hosts: { [HOST_UUID]: ['org/prod/priv'] } });
const foremanUrl = await katello.start();
t.teardown(() => katello.stop());

async function gateway(tt: Tap, extra: Record<string, unknown>): Promise<RunningProxyd> {
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl },
    // The echo backend's answers differ per request: no manifest cache unless a test asks for it.
    plugins: { container_gateway: { enabled: true, pulp_endpoint: pulpUrl, sqlite_db_path: join(work, `gw-${Math.random()}.db`), manifest_cache_ttl: 0, ...extra } },
  });
  tt.teardown(() => p.stop());
  const put = await request(`${p.httpUrl}/container_gateway/repository_list`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ repositories: [{ repository: 'org/prod/app', auth_required: false }, { repository: 'org/prod/priv', auth_required: true }] }),
  });
  tt.equal(put.status, 200);
  return p;
}
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];
const anon = { Authorization: 'Bearer unauthenticated' };

t.test('redirect_mode pass: the 302 goes to the client with its host rewritten to client_endpoint', async (t) => {
  const p = await gateway(t, { redirect_mode: 'pass', client_endpoint: 'https://capsule.example.com' });
  const res = await request(`${p.httpUrl}/v2/org/prod/app/blobs/${layer.digest}`, { headers: anon });
  t.equal(res.status, 302);
  t.equal(res.headers.location, `https://capsule.example.com:${registry.port}/v2/org/prod/app/blobs/${layer.digest}?validate_token=abc123`, 'host replaced; port, path and validate_token kept');
  const head = await request(`${p.httpUrl}/v2/org/prod/app/blobs/${layer.digest}`, { method: 'HEAD', headers: anon });
  t.equal(head.status, 200, 'HEAD is answered here (the redirect followed), not with a 303');
  t.equal(head.headers['content-length'], String(layer.size));
  t.equal(head.headers['docker-content-digest'], layer.digest);
});

t.test('redirect_mode follow: the content app is streamed through, byte for byte, Range included', async (t) => {
  const p = await gateway(t, { redirect_mode: 'follow' });
  const res = await fetch(`${p.httpUrl}/v2/org/prod/app/blobs/${layer.digest}`, { headers: anon });
  t.equal(res.status, 200);
  t.equal(res.headers.get('docker-content-digest'), layer.digest);
  t.ok(Buffer.from(await res.arrayBuffer()).equals(layerBytes), 'the same bytes as the blob');
  const part = await fetch(`${p.httpUrl}/v2/org/prod/app/blobs/${layer.digest}`, { headers: { ...anon, Range: 'bytes=1000-1999' } });
  t.equal(part.status, 206);
  t.equal(part.headers.get('content-range'), `bytes 1000-1999/${layer.size}`);
  t.ok(Buffer.from(await part.arrayBuffer()).equals(layerBytes.subarray(1000, 2000)));
});

t.test('Remote-User upstream is the verified identity only; a client-sent one never gets through', async (t) => {
  const p = await gateway(t, {});
  const forged = await request(`${p.httpUrl}/v2/org/prod/app/manifests/v1`, { headers: { ...anon, REMOTE_USER: 'admin', 'X-Remote-User': 'admin' } });
  t.equal(forged.status, 200);
  t.notOk('remote_user' in forged.json().seen, 'anonymous: no REMOTE_USER upstream');
  t.notOk('remote-user' in forged.json().seen, 'nor Remote-User');
  t.notOk('x-remote-user' in forged.json().seen);
  t.notOk('authorization' in forged.json().seen, "the client's Authorization is not sent to the backend");

  const login = await request(`${p.httpUrl}/v2/token?account=admin&scope=repository:org/prod/app:pull`, { headers: { Authorization: `Basic ${Buffer.from('admin:changeme').toString('base64')}` } });
  t.equal(login.status, 200);
  const asAdmin = await request(`${p.httpUrl}/v2/org/prod/app/manifests/v1`, { headers: { Authorization: `Bearer ${login.json().token}`, REMOTE_USER: 'root' } });
  t.equal(asAdmin.json().seen['remote-user'], 'admin', 'the token owner, not what the client claimed');

  const renamed = await gateway(t, { remote_user_header: 'X-Forwarded-User-Id' });
  const login2 = await request(`${renamed.httpUrl}/v2/token?account=admin&scope=repository:org/prod/app:pull`, { headers: { Authorization: `Basic ${Buffer.from('admin:changeme').toString('base64')}` } });
  const r2 = await request(`${renamed.httpUrl}/v2/org/prod/app/manifests/v1`, { headers: { Authorization: `Bearer ${login2.json().token}` } });
  t.equal(r2.json().seen['x-forwarded-user-id'], 'admin', 'the header name is configurable');
});

t.test("Katello's special and malformed token answers", async (t) => {
  const p = await gateway(t, {});
  t.teardown(() => katello.override(null));
  katello.override((req, res) => {
    if (!req.url?.startsWith('/v2/token')) return false;
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ token: 'unauthorized', expires_in: 60, issued_at: new Date().toISOString() }));
    return true;
  });
  const unauthorized = await request(`${p.httpUrl}/v2/token?account=x`);
  t.equal(unauthorized.status, 401);
  t.equal(unauthorized.json().errors[0].code, 'UNAUTHORIZED');
  katello.override((req, res) => {
    if (!req.url?.startsWith('/v2/token')) return false;
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end('{"no_token_here":true}');
    return true;
  });
  const malformed = await request(`${p.httpUrl}/v2/token?account=x`);
  t.equal(malformed.status, 502);
  t.match(malformed.json().errors[0].message, /malformed token response/);
  katello.override(null);
  const unauthenticated = await request(`${p.httpUrl}/v2/token`);
  t.equal(unauthenticated.status, 200);
  t.equal(unauthenticated.json().token, 'unauthenticated', "Katello's body is returned as is");
  t.equal((await request(`${p.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: anon })).status, 401, 'and it opens nothing private (no credentials: 401)');
});

t.test('a login without account uses the Basic user name (defect 10)', async (t) => {
  const p = await gateway(t, {});
  const before = katello.requestsTo('/v2/token').length;
  const login = await request(`${p.httpUrl}/v2/token?scope=repository:org/prod/priv:pull&service=x`, { headers: { Authorization: `Basic ${Buffer.from('admin:changeme').toString('base64')}` } });
  t.equal(login.status, 200);
  const sent = katello.requestsTo('/v2/token').slice(before)[0];
  t.equal(sent?.query.account, 'admin');
  t.equal(sent?.query.scope, 'repository:org/prod/priv:pull');
  t.notOk(sent && 'service' in sent.query);
});

t.test('forwarded certificate headers count only from trusted_proxies', async (t) => {
  const pki = makePki();
  const pem = readFileSync(pki.client(HOST_UUID).cert, 'utf8');
  const flat = pem.replace(/\n/g, '');
  const untrusted = await gateway(t, {});
  t.equal((await request(`${untrusted.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: { 'X-RHSM-SSL-CLIENT-CERT': flat } })).status, 401, 'ignored from a client that is not a trusted proxy (no credentials: 401)');
  const trusted = await gateway(t, { trusted_proxies: ['127.0.0.1'] });
  const viaFront = await request(`${trusted.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: { 'X-RHSM-SSL-CLIENT-CERT': flat } });
  t.equal(viaFront.status, 200, 'from a trusted front, the forwarded host certificate (newlines stripped) is the identity');
  t.equal(viaFront.json().seen['remote-user'], HOST_UUID, 'and the host UUID goes upstream as Remote-User');
  t.equal((await request(`${trusted.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: { 'SSL-CLIENT-CERT': pem.replace(/\n/g, ' ') } })).status, 200, 'SSL-CLIENT-CERT too');
  t.equal((await request(`${trusted.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: { 'X-RHSM-SSL-CLIENT-CERT': '(null)' } })).status, 401, 'an empty or (null) header is no certificate');
});

t.test('manifest cache: one backend fetch for many pulls, shared by concurrent misses, emptied by repository_list', async (t) => {
  const pki = makePki();
  const hostCert = readFileSync(pki.client(HOST_UUID).cert, 'utf8').replace(/\n/g, '');
  const p = await gateway(t, { manifest_cache_ttl: 60, trusted_proxies: ['127.0.0.1'] });
  const fetches = () => seen.filter((r) => r.url === '/pulpcore_registry/v2/org/prod/app/manifests/v1').length;
  const before = fetches();
  const first = await request(`${p.httpUrl}/v2/org/prod/app/manifests/v1`, { headers: anon });
  const second = await request(`${p.httpUrl}/v2/org/prod/app/manifests/v1`, { headers: anon });
  t.equal(second.body, first.body, 'the second pull is served from the cache');
  t.equal(second.headers['docker-content-digest'], first.headers['docker-content-digest']);
  t.equal(fetches() - before, 1, 'one backend fetch');

  const accept = { ...anon, Accept: 'application/vnd.oci.image.index.v1+json' };
  await Promise.all(Array.from({ length: 10 }, () => request(`${p.httpUrl}/v2/org/prod/app/manifests/v1`, { headers: accept })));
  t.equal(fetches() - before, 2, 'ten concurrent pulls with another Accept: one more fetch (the cache is keyed by Accept)');

  const relist = await request(`${p.httpUrl}/container_gateway/repository_list`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ repositories: [{ repository: 'org/prod/app', auth_required: false }, { repository: 'org/prod/priv', auth_required: true }] }),
  });
  t.equal(relist.status, 200);
  const third = await request(`${p.httpUrl}/v2/org/prod/app/manifests/v1`, { headers: anon });
  t.not(third.body, first.body, 'after a sync (repository_list) the backend is asked again');
  t.equal(fetches() - before, 3);

  const asHost = await request(`${p.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: { 'X-RHSM-SSL-CLIENT-CERT': hostCert } });
  t.equal(asHost.status, 200, 'the mapped host reads the private manifest (now cached)');
  const stranger = await request(`${p.httpUrl}/v2/org/prod/priv/manifests/v1`, { headers: anon });
  t.equal(stranger.status, 401, 'a cached private manifest is still hidden from others: access is checked first (no credentials: 401)');
});
