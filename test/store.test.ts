// The embedded store through the daemon: a SIGKILL of proxyd midway through a
// 500 MiB upload leaves no partial blob, the upload can be done again and
// `proxyctl verify` reports 0 bad; gc; catalog and search per standalone user.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { request } from './helpers/http.ts';
import { PROXYCTL, run, startProxyd, type RunningProxyd } from './helpers/proxyd.ts';

const SIZE = 500 * 1024 * 1024;
const block = randomBytes(1024 * 1024);
const digest = (() => {
  const h = createHash('sha256');
  for (let i = 0; i < SIZE / block.length; i++) h.update(block);
  return `sha256:${h.digest('hex')}`;
})();

/** The 500 MiB body; `pauseAfter` bytes are sent fast, then it trickles (so a kill lands mid-upload). */
function body(pauseAfter = SIZE): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= SIZE) return this.push(null);
      const push = () => {
        sent += block.length;
        this.push(block);
      };
      if (sent >= pauseAfter) setTimeout(push, 200);
      else push();
    },
  });
}

/** PATCH the whole body (no Content-Range, chunked), as podman streams a layer. */
function patch(url: string, token: string, stream: Readable): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PATCH', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    stream.pipe(req);
  });
}

const work = mkdtempSync(join(tmpdir(), 'store-crash-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const gatewaySettings = { enabled: true, sqlite_db_path: join(work, 'gw.db'), storage_path: join(work, 'storage') };

async function daemon(tt: Tap): Promise<RunningProxyd> {
  const p = await startProxyd({ fixtures: false, plugins: { container_gateway: gatewaySettings } });
  tt.teardown(() => p.stop());
  return p;
}
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

async function pushToken(base: string): Promise<string> {
  const res = await request(`${base}/v2/token?scope=repository:alice/big:pull,push`, { headers: { Authorization: `Basic ${Buffer.from('alice:pw-alice-1').toString('base64')}` } });
  return res.json().token as string;
}

t.test('SIGKILL mid-upload, restart: no partial blob, the upload works again, verify reports 0 bad', async (t) => {
  const first = await daemon(t);
  t.equal((await request(`${first.httpUrl}/container_gateway/admin/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'alice', password: 'pw-alice-1' }) })).status, 201);
  let token = await pushToken(first.httpUrl);
  const start = await request(`${first.httpUrl}/v2/alice/big/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
  t.equal(start.status, 202);
  const uploadUrl = `${first.httpUrl}${start.headers.location}`;
  const uploads = join(work, 'storage', 'uploads');
  const sent = patch(uploadUrl, token, body(200 * 1024 * 1024)).catch((e: Error) => e.message);
  // Kill once the daemon has written a good part of the body.
  for (let i = 0; i < 600; i++) {
    const files = existsSync(uploads) ? readdirSync(uploads).map((f) => statSync(join(uploads, f)).size) : [];
    if (files.some((s) => s >= 150 * 1024 * 1024)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  first.proc.kill('SIGKILL');
  t.equal(await first.exited, null, 'killed');
  await sent;

  const blobFile = join(work, 'storage', 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
  t.notOk(existsSync(blobFile), 'no blob under its final name');

  const second = await daemon(t);
  token = await pushToken(second.httpUrl);
  const head = await request(`${second.httpUrl}/v2/alice/big/blobs/${digest}`, { method: 'HEAD', headers: { Authorization: `Bearer ${token}` } });
  t.equal(head.status, 404, 'the blob is not visible');

  const again = await request(`${second.httpUrl}/v2/alice/big/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
  t.equal(again.status, 202, 'a new upload starts');
  t.equal(await patch(`${second.httpUrl}${again.headers.location}`, token, body()), 202, 'the whole blob is sent');
  const done = await request(`${second.httpUrl}${again.headers.location}?digest=${digest}`, { method: 'PUT', headers: { Authorization: `Bearer ${token}` } });
  t.equal(done.status, 201, 'and committed');
  const stored = await request(`${second.httpUrl}/v2/alice/big/blobs/${digest}`, { method: 'HEAD', headers: { Authorization: `Bearer ${token}` } });
  t.equal(stored.headers['content-length'], String(SIZE));
  t.equal(statSync(blobFile).size, SIZE);

  const verify = await run([PROXYCTL, '--url', second.httpUrl, 'verify']);
  t.equal(verify.code, 0, `proxyctl verify: ${verify.stderr}`);
  t.match(verify.stdout, /1 blobs? checked, 0 bad/);
});

t.test('proxyctl gc removes blobs no repository references, and only those', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'store-gc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const p = await startProxyd({ fixtures: false, plugins: { container_gateway: { enabled: true, sqlite_db_path: join(dir, 'gw.db'), storage_path: join(dir, 'storage'), gc_grace_period: 0 } } });
  t.teardown(() => p.stop());
  await request(`${p.httpUrl}/container_gateway/admin/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'alice', password: 'pw-alice-1' }) });
  const login = await request(`${p.httpUrl}/v2/token?scope=repository:alice/gc:pull,push,delete`, { headers: { Authorization: `Basic ${Buffer.from('alice:pw-alice-1').toString('base64')}` } });
  const auth = { Authorization: `Bearer ${login.json().token}` };
  const blobs = ['kept', 'dropped'].map((text) => ({ bytes: Buffer.from(text), digest: `sha256:${createHash('sha256').update(text).digest('hex')}` }));
  for (const b of blobs) {
    const r = await request(`${p.httpUrl}/v2/alice/gc/blobs/uploads/?digest=${b.digest}`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Length': String(b.bytes.length) }, body: b.bytes.toString() });
    t.equal(r.status, 201);
  }
  t.equal((await request(`${p.httpUrl}/v2/alice/gc/blobs/${blobs[1]!.digest}`, { method: 'DELETE', headers: auth })).status, 202);
  const gc = await run([PROXYCTL, '--url', p.httpUrl, 'gc', '--json']);
  t.equal(gc.code, 0, gc.stderr);
  t.match(JSON.parse(gc.stdout), { removed: 1 });
  const file = (d: string) => join(dir, 'storage', 'blobs', 'sha256', d.slice(7, 9), d.slice(7));
  t.ok(existsSync(file(blobs[0]!.digest)), 'the linked blob stays');
  t.notOk(existsSync(file(blobs[1]!.digest)), 'the unlinked blob is gone');
  t.equal((await request(`${p.httpUrl}/v2/alice/gc/blobs/${blobs[0]!.digest}`, { headers: auth })).body, 'kept');
  const verify = await run([PROXYCTL, '--url', p.httpUrl, 'verify']);
  t.equal(verify.code, 0);
  t.match(verify.stdout, /1 blobs checked, 0 bad/);
});

t.test('standalone: catalog and search reflect what each user may see', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'store-search-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const p = await startProxyd({ fixtures: false, plugins: { container_gateway: { enabled: true, sqlite_db_path: join(dir, 'gw.db'), storage_path: join(dir, 'storage') } } });
  t.teardown(() => p.stop());
  const basic = (u: string) => ({ Authorization: `Basic ${Buffer.from(`${u}:pw-${u}-1`).toString('base64')}` });
  for (const name of ['alice', 'bob']) {
    await request(`${p.httpUrl}/container_gateway/admin/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, password: `pw-${name}-1` }) });
    const token = (await request(`${p.httpUrl}/v2/token?scope=repository:${name}/app:pull,push`, { headers: basic(name) })).json().token;
    const bytes = `${name} config`;
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    t.equal((await request(`${p.httpUrl}/v2/${name}/app/blobs/uploads/?digest=${digest}`, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Length': String(bytes.length) }, body: bytes })).status, 201);
    const manifest = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest, size: bytes.length }, layers: [] });
    t.equal((await request(`${p.httpUrl}/v2/${name}/app/manifests/v1`, { method: 'PUT', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest })).status, 201);
  }
  const aliceCatalog = (await request(`${p.httpUrl}/v2/token?scope=registry:catalog:*`, { headers: basic('alice') })).json().token;
  t.same((await request(`${p.httpUrl}/v2/_catalog`, { headers: { Authorization: `Bearer ${aliceCatalog}` } })).json(), { repositories: ['alice/app'] }, "alice sees her own, not bob's");
  t.same((await request(`${p.httpUrl}/v2/_catalog`, { headers: { Authorization: 'Bearer unauthenticated' } })).json(), { repositories: [] }, 'anonymous clients see nothing private');
  t.same((await request(`${p.httpUrl}/v1/search?q=app`, { headers: basic('bob') })).json().results, [{ description: '', name: 'bob/app' }], 'search: bob sees his');
  t.equal((await request(`${p.httpUrl}/v1/search?q=app`, { headers: { Authorization: `Basic ${Buffer.from('bob:wrong').toString('base64')}` } })).status, 401);
  t.equal((await run([PROXYCTL, '--url', p.httpUrl, 'repos', 'set-public', 'bob/app'])).code, 0);
  t.same((await request(`${p.httpUrl}/v2/_catalog`, { headers: { Authorization: 'Bearer unauthenticated' } })).json(), { repositories: ['bob/app'] }, 'a public repository is listed for everyone');
});

t.test('workers: two processes opening a new database at once both serve the gateway', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'store-workers-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const p = await startProxyd({ fixtures: false, settings: { workers: 2 }, plugins: { container_gateway: { enabled: true, sqlite_db_path: join(dir, 'gw.db'), storage_path: join(dir, 'storage') } } });
  t.teardown(() => p.stop());
  const launched = () => p.lines.filter((l) => l.includes('Smart proxy has launched')).length;
  for (let i = 0; i < 100 && launched() < 2; i++) await new Promise((r) => setTimeout(r, 100));
  t.equal(launched(), 2);
  t.notOk(p.lines.some((l) => /container_gateway.*(failed|Disabling)/.test(l) || /duplicate column/.test(l)), 'no worker failed its migrations');
  for (let i = 0; i < 12; i++) t.equal((await request(`${p.httpUrl}/readyz`)).status, 200, 'every worker is ready');
});
