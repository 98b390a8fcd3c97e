// Pushes through the smart proxy (issue #5): the main server is Debian's
// docker-registry with Docker token auth, its tokens issued by the Katello
// test double. skopeo and podman push to the proxy; the content lands in the
// main server, and is pullable from the proxy at once, byte for byte, without
// the proxy fetching again a blob that streamed through it. With the main
// server stopped, pushes get 503 at once while pulls are still served.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, inspectImage, layoutBlobPath, layoutBlobs, layoutManifest, podman, pullImage, pushImage, sha256 } from './helpers/images.ts';
import { startMainServer, type MainServer } from './helpers/main-server.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';

const PUSHER = 'pusher:pusher-pw';
const READER = 'reader:reader-pw';
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json';

const work = mkdtempSync(join(tmpdir(), 'gw-push-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

let main: MainServer;
let proxy: RunningProxyd;
let gw: string; // host:port of the proxy, for image references

t.before(async () => {
  main = await startMainServer({
    users: {
      // Katello lists the repositories a user can read at login: a pusher reads its product's.
      pusher: { password: 'pusher-pw', repositories: ['acme/web/app', 'acme/web/pod', 'acme/web/outage', 'id/1/2/raw'], push: true },
      reader: { password: 'reader-pw', repositories: [] },
    },
  });
  proxy = await startProxyd({
    fixtures: false,
    settings: { foreman_url: main.foremanUrl, log_level: 'INFO' },
    plugins: {
      container_gateway: {
        enabled: true,
        content_backend: 'local',
        main_registry_url: main.mainRegistryUrl,
        sqlite_db_path: join(work, 'gw.db'),
        storage_path: join(work, 'storage'),
        upstream_connect_timeout: 2,
      },
    },
  });
  gw = new URL(proxy.httpUrl).host;
});
t.teardown(async () => {
  await proxy?.stop();
  await main?.stop();
});

function basic(creds: string): string {
  return `Basic ${Buffer.from(creds).toString('base64')}`;
}

async function tokenFor(creds: string, scope: string): Promise<string> {
  const res = await request(`${proxy.httpUrl}/v2/token?account=${creds.split(':')[0]}&scope=${encodeURIComponent(scope)}`, { headers: { Authorization: basic(creds) } });
  if (res.status !== 200) throw new Error(`token: ${res.status} ${res.body}`);
  return res.json().token as string;
}

/** Blob GETs the main server answered, from its access log. */
function blobGets(): string[] {
  return main
    .accessLog()
    .filter((l) => l.method === 'GET' && /\/blobs\/sha256:/.test(l.path))
    .map((l) => l.path.replace(/^.*\/blobs\//, '').replace(/\?.*$/, ''));
}

t.test('skopeo copy to the proxy: in the main server, and pullable from the proxy at once, byte for byte', async (t) => {
  const img = await buildImage(join(work, 'src'), { name: 'app', files: { '/etc/app.txt': 'pushed through the proxy\n' }, layers: 3, randomBytes: 512 * 1024 });
  const source = layoutManifest(img.layout);
  const before = blobGets().length;
  await pushImage(img.ref, `${gw}/acme/web/app:v1`, { creds: PUSHER });

  // At once: the proxy serves the tag from its own store, to the pusher.
  const token = await tokenFor(PUSHER, 'repository:acme/web/app:pull');
  const served = await request(`${proxy.httpUrl}/v2/acme/web/app/manifests/v1`, { headers: { Authorization: `Bearer ${token}`, Accept: ACCEPT } });
  t.equal(served.status, 200, 'the tag is pullable from the proxy right after the push');
  t.equal(served.headers['docker-content-digest'], source.digest, 'the same manifest');

  // Byte for byte from the proxy.
  const out = join(work, 'pulled-app');
  await pullImage(`${gw}/acme/web/app:v1`, `oci:${out}:v1`, { creds: PUSHER });
  t.same(layoutBlobs(out).sort(), layoutBlobs(img.layout).sort(), 'the same blobs');
  for (const d of layoutBlobs(img.layout)) t.equal(sha256(readFileSync(layoutBlobPath(out, d))), d, `${d.slice(0, 19)} identical`);

  await main.flushAccessLog();
  const fetched = blobGets().slice(before);
  const pushed = [...source.manifest.layers.map((l: { digest: string }) => l.digest), source.manifest.config.digest];
  t.same(fetched.filter((d) => pushed.includes(d)), [], 'the proxy never fetched a blob that streamed through it');

  // In the main server: read it there directly.
  const direct = await inspectImage(`${main.registry.host}/acme/web/app:v1`, { creds: PUSHER });
  t.equal(direct.Digest, source.digest, 'the main server has the pushed manifest');

});

t.test('podman push to the proxy; another user does not see the private repository', async (t) => {
  // podman names an image pulled from a layout after its path, which must be lowercase.
  const lower = join(tmpdir(), `gw-push-${randomBytes(6).toString('hex')}`);
  mkdirSync(lower);
  t.teardown(() => rmSync(lower, { recursive: true, force: true }));
  const img = await buildImage(lower, { name: 'pod', files: { '/etc/pod.txt': 'podman push via proxy\n' }, layers: 2 });
  const store = join(work, 'podman');
  const login = await podman(store, ['login', '--tls-verify=false', '-u', 'pusher', '-p', 'pusher-pw', gw]);
  t.equal(login.code, 0, `podman login: ${login.stderr}`);
  const local = await podman(store, ['pull', `oci:${img.layout}:${img.tag}`]);
  t.equal(local.code, 0, `podman pull from the layout: ${local.stderr}`);
  const id = local.stdout.trim().split('\n').pop()!;
  const ref = `${gw}/acme/web/pod:v1`;
  t.equal((await podman(store, ['tag', id, ref])).code, 0);
  const push = await podman(store, ['push', '--tls-verify=false', ref]);
  t.equal(push.code, 0, `podman push: ${push.stderr}`);

  const token = await tokenFor(PUSHER, 'repository:acme/web/pod:pull');
  const head = await request(`${proxy.httpUrl}/v2/acme/web/pod/manifests/v1`, { method: 'HEAD', headers: { Authorization: `Bearer ${token}`, Accept: ACCEPT } });
  t.equal(head.status, 200, 'pullable from the proxy');
  t.equal(head.headers['docker-content-digest'], (await inspectImage(`${main.registry.host}/acme/web/pod:v1`, { creds: PUSHER })).Digest, 'the proxy and the main server agree');

  const other = await tokenFor(READER, 'repository:acme/web/pod:pull');
  const hidden = await request(`${proxy.httpUrl}/v2/acme/web/pod/manifests/v1`, { headers: { Authorization: `Bearer ${other}`, Accept: ACCEPT } });
  t.equal(hidden.status, 404, 'a user without access gets 404');
  t.equal(hidden.json().errors[0].code, 'NAME_UNKNOWN');
});

/** A raw HTTP call to the proxy (bodies may stream, chunked). */
function call(method: string, path: string, headers: Record<string, string>, body?: Buffer | (() => AsyncGenerator<Buffer>)): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${proxy.httpUrl}${path}`, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${path}: no answer in 30 s`)));
    if (typeof body === 'function') {
      void (async () => {
        for await (const chunk of body()) req.write(chunk);
        req.end();
      })();
    } else req.end(body);
  });
}

t.test('the protocol through the proxy: Locations rewritten, headers kept, chunked PATCH, Katello names, errors unchanged', async (t) => {
  const name = 'id/1/2/raw';
  const token = await tokenFor(PUSHER, `repository:${name}:pull,push`);
  const auth = { Authorization: `Bearer ${token}` };
  const start = await call('POST', `/v2/${name}/blobs/uploads/`, auth);
  t.equal(start.status, 202, 'POST: exactly 202');
  const location = start.headers.location!;
  t.ok(location.startsWith(`${proxy.httpUrl}/v2/${name}/blobs/uploads/`) || location.startsWith(`/v2/${name}/blobs/uploads/`), `Location points at the proxy: ${location}`);
  t.notOk(location.includes(main.registry.host), 'no trace of the main server in the Location');
  t.ok(start.headers['docker-upload-uuid'], 'Docker-Upload-UUID kept');
  t.equal(start.headers.range, '0-0', 'Range kept');

  const parts = [Buffer.alloc(300_000, 1), Buffer.alloc(200_000, 2)];
  const digest = sha256(Buffer.concat(parts));
  const path = new URL(location, proxy.httpUrl);
  const patched = await call('PATCH', path.pathname + path.search, { ...auth, 'Content-Type': 'application/octet-stream' }, async function* () {
    for (const p of parts) yield p;
  });
  t.equal(patched.status, 202, 'a chunked PATCH without Content-Length');
  t.equal(patched.headers.range, `0-${500_000 - 1}`, 'Range after the PATCH');
  const next = new URL(patched.headers.location!, proxy.httpUrl);
  next.searchParams.set('digest', digest);
  const done = await call('PUT', next.pathname + next.search, auth);
  t.equal(done.status, 201, 'PUT ?digest: 201');
  t.equal(done.headers['docker-content-digest'], digest, 'Docker-Content-Digest kept');

  const probe = await call('HEAD', `/v2/${name}/blobs/${digest}`, auth);
  t.equal(probe.status, 200, 'the push probe sees the blob');
  t.equal(probe.headers['content-length'], '500000');

  // A monolithic upload (POST ?digest with the body) and one in two Content-Range chunks.
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const configDigest = sha256(config);
  const mono = await call('POST', `/v2/${name}/blobs/uploads/?digest=${configDigest}`, { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Length': String(config.length) }, config);
  if (mono.status === 202) {
    // docker-registry 2.8 ignores the body of a monolithic POST and opens a session, as the spec allows: finish it with PUT.
    const to = new URL(mono.headers.location!, proxy.httpUrl);
    to.searchParams.set('digest', configDigest);
    t.equal((await call('PUT', to.pathname + to.search, { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Length': String(config.length) }, config)).status, 201, 'PUT ?digest with the body: 201');
  } else t.equal(mono.status, 201, 'monolithic POST ?digest: 201');
  const layer = Buffer.alloc(100_000, 7);
  const layerDigest = sha256(layer);
  const second = await call('POST', `/v2/${name}/blobs/uploads/`, auth);
  let at = new URL(second.headers.location!, proxy.httpUrl);
  for (const [from, to] of [[0, 59_999], [60_000, 99_999]] as const) {
    const chunk = await call('PATCH', at.pathname + at.search, { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Range': `${from}-${to}`, 'Content-Length': String(to - from + 1) }, layer.subarray(from, to + 1));
    t.equal(chunk.status, 202, `chunk ${from}-${to}`);
    at = new URL(chunk.headers.location!, proxy.httpUrl);
  }
  at.searchParams.set('digest', layerDigest);
  t.equal((await call('PUT', at.pathname + at.search, auth)).status, 201, 'the chunked upload is complete');
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digest, size: 500_000 },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length },
      ],
    }),
  );
  const before = blobGets().length;
  const put = await call('PUT', `/v2/${name}/manifests/v1`, { ...auth, 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, manifest);
  t.equal(put.status, 201, 'manifest PUT: 201');
  t.equal(put.headers['docker-content-digest'], sha256(manifest), 'Docker-Content-Digest of the manifest');
  const pull = await tokenFor(PUSHER, `repository:${name}:pull`);
  for (const d of [configDigest, digest, layerDigest]) {
    const got = await call('GET', `/v2/${name}/blobs/${d}`, { Authorization: `Bearer ${pull}` });
    t.equal(got.status, 200, `${d.slice(0, 19)} served by the proxy`);
  }
  await main.flushAccessLog();
  t.same(blobGets().slice(before), [], 'none of them fetched from the main server: all three were kept as they passed');

  const bad = await call('PUT', `/v2/${name}/manifests/v2`, { ...auth, 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:' + 'a'.repeat(64) + '","size":2},"layers":[]}'));
  t.equal(bad.status, 400, "the main server's error status reaches the client");
  t.equal(JSON.parse(bad.text).errors[0].code, 'MANIFEST_BLOB_UNKNOWN', "and its OCI body, unchanged");
  const tags = await call('GET', `/v2/${name}/tags/list`, { Authorization: `Bearer ${pull}` });
  t.same(JSON.parse(tags.text).tags, ['v1'], 'a failed manifest push stores nothing on the proxy');

  const anonymous = await call('POST', `/v2/${name}/blobs/uploads/`, {});
  t.equal(anonymous.status, 401, 'no credentials: the main server says 401');
  t.match(anonymous.headers['www-authenticate'], new RegExp(`realm="${proxy.httpUrl}/v2/token"`), 'the challenge sends clients to log in at the proxy');
  const refused = await call('PATCH', `/v2/${name}/blobs/uploads/5d3f4b7e-0000-4000-8000-000000000000`, { 'Content-Type': 'application/octet-stream' }, async function* () {
    for (let i = 0; i < 64; i++) yield Buffer.alloc(256 * 1024, i);
  });
  t.equal(refused.status, 401, 'a body the main server refuses before reading it: its 401 arrives, nothing hangs');
});

t.test('a client that goes away mid-PATCH: the proxy lets go of both sides, and the next upload works', async (t) => {
  const name = 'acme/web/aborted';
  const token = await tokenFor(PUSHER, `repository:${name}:pull,push`);
  const auth = { Authorization: `Bearer ${token}` };
  const start = await call('POST', `/v2/${name}/blobs/uploads/`, auth);
  t.equal(start.status, 202);
  const at = new URL(start.headers.location!, proxy.httpUrl);
  await new Promise<void>((resolve) => {
    const req = http.request(`${proxy.httpUrl}${at.pathname}${at.search}`, { method: 'PATCH', headers: { ...auth, 'Content-Type': 'application/octet-stream' } });
    req.on('error', () => resolve());
    req.on('close', () => resolve());
    let sent = 0;
    const pump = () => {
      while (sent < 4 * 1024 * 1024) {
        sent += 256 * 1024;
        if (!req.write(Buffer.alloc(256 * 1024, 3))) return void req.once('drain', pump);
      }
      setTimeout(() => req.destroy(), 200); // gone mid-body, never ends it
    };
    pump();
  });
  const health = await request(`${proxy.httpUrl}/healthz`, { timeoutMs: 5000 });
  t.equal(health.status, 200, 'the proxy answers');
  const body = Buffer.alloc(300_000, 9);
  const digest = sha256(body);
  const again = await call('POST', `/v2/${name}/blobs/uploads/?digest=${digest}`, { ...auth, 'Content-Length': String(body.length), 'Content-Type': 'application/octet-stream' }, body);
  let status = again.status;
  if (status === 202) {
    const to = new URL(again.headers.location!, proxy.httpUrl);
    to.searchParams.set('digest', digest);
    status = (await call('PUT', to.pathname + to.search, { ...auth, 'Content-Length': String(body.length), 'Content-Type': 'application/octet-stream' }, body)).status;
  }
  t.equal(status, 201, 'a new upload of the repository completes');
  const head = await call('HEAD', `/v2/${name}/blobs/${digest}`, auth);
  t.equal(head.status, 200, 'and the main server has it');
});

t.test('main server down: pushes get 503 at once, pulls are still served; back up: pushes work', async (t) => {
  const img = await buildImage(join(work, 'src-outage'), { name: 'outage', files: { '/etc/o.txt': 'outage\n' } });
  await pushImage(img.ref, `${gw}/acme/web/outage:v1`, { creds: PUSHER });
  const token = await tokenFor(PUSHER, 'repository:acme/web/outage:pull,push');
  await main.stopRegistry();
  try {
    const push = await call('POST', '/v2/acme/web/outage/blobs/uploads/', { Authorization: `Bearer ${token}` });
    t.equal(push.status, 503, 'push: 503');
    t.equal(JSON.parse(push.text).errors[0].code, 'UNAVAILABLE', 'in the OCI error shape');
    const out = join(work, 'pulled-outage');
    await pullImage(`${gw}/acme/web/outage:v1`, `oci:${out}:v1`, { creds: PUSHER });
    t.equal(layoutManifest(out, 'v1').digest, layoutManifest(img.layout).digest, 'pulls are served from the proxy');
  } finally {
    await main.startRegistry();
  }
  await pushImage(img.ref, `${gw}/acme/web/outage:v2`, { creds: PUSHER });
  t.equal((await inspectImage(`${main.registry.host}/acme/web/outage:v2`, { creds: PUSHER })).Digest, layoutManifest(img.layout).digest, 'the next push works');
});

t.test("Katello's relative Locations stay relative (under /container_gateway too); Link and realm point at the proxy", async (t) => {
  // Katello itself as the main registry: it answers uploads with relative Locations (katello-api.md §3).
  const katello = new KatelloDouble({ users: { pusher: { password: 'pusher-pw', repositories: [] } } });
  const foremanUrl = await katello.start();
  t.teardown(() => katello.stop());
  katello.override((req, res, rec) => {
    if (req.method !== 'POST' || !rec.path.endsWith('/blobs/uploads/')) return false;
    const name = rec.path.slice('/v2/'.length, -'/blobs/uploads/'.length);
    res.writeHead(202, {
      Location: `/v2/${name}/blobs/uploads/0b7e5ad4-9c1e-4e0a-b2c4-1f0e8d6a7c3b?state=abc`,
      Link: `<${foremanUrl}v2/${name}/tags/list?n=1&last=a>; rel="next"`,
      'Docker-Upload-UUID': '0b7e5ad4-9c1e-4e0a-b2c4-1f0e8d6a7c3b',
      Range: '0-0',
      'X-Registry-Supports-Signatures': '1',
      'Content-Length': '0',
    });
    res.end();
    return true;
  });
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl },
    plugins: { container_gateway: { enabled: true, content_backend: 'local', sqlite_db_path: join(work, 'katello-main.db'), storage_path: join(work, 'katello-main') } },
  });
  t.teardown(() => p.stop());
  for (const prefix of ['', '/container_gateway']) {
    const res = await request(`${p.httpUrl}${prefix}/v2/acme/web/app/blobs/uploads/`, { method: 'POST', headers: { Authorization: 'Bearer anything' } });
    t.equal(res.status, 202, `${prefix || '/'}: Katello's status`);
    t.equal(res.headers.location, `${prefix}/v2/acme/web/app/blobs/uploads/0b7e5ad4-9c1e-4e0a-b2c4-1f0e8d6a7c3b?state=abc`, 'relative, with its query, on the path the client used');
    t.equal(res.headers.link, `<${p.httpUrl}${prefix}/v2/acme/web/app/tags/list?n=1&last=a>; rel="next"`, 'Link: the proxy instead of the main server');
    t.equal(res.headers['docker-upload-uuid'], '0b7e5ad4-9c1e-4e0a-b2c4-1f0e8d6a7c3b');
    t.equal(res.headers['x-registry-supports-signatures'], undefined, 'no signature extension is advertised');
  }
  const sent = katello.requestsTo('/v2/acme/web/app/blobs/uploads/');
  t.equal(sent.length, 2, 'both went to the main server');
  t.equal(sent[0]?.headers.authorization, 'Bearer anything', "with the client's Authorization");
});
