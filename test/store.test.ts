// The embedded store through the daemon: a SIGKILL of proxyd midway through a
// 500 MiB upload leaves no partial blob, the upload resumes from the offset
// the restarted daemon reports (an exact prefix of what was sent) and
// `proxyctl verify` reports 0 bad; gc of blobs and of abandoned uploads (and
// the background purge); catalog and search per standalone user.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { request } from './helpers/http.ts';
import { PROXYCTL, run, startProxyd, type RunningProxyd, lineLogged } from './helpers/proxyd.ts';

const SIZE = 500 * 1024 * 1024;
const block = randomBytes(1024 * 1024);
const digest = (() => {
  const h = createHash('sha256');
  for (let i = 0; i < SIZE / block.length; i++) h.update(block);
  return `sha256:${h.digest('hex')}`;
})();

/** The 500 MiB body from byte `from` on; `pauseAfter` bytes are sent fast, then it trickles (so a kill lands mid-upload). */
function body(pauseAfter = SIZE, from = 0): Readable {
  let sent = from;
  return new Readable({
    read() {
      if (sent >= SIZE) return this.push(null);
      const push = () => {
        const piece = block.subarray(sent % block.length);
        sent += piece.length;
        this.push(piece);
      };
      if (sent >= pauseAfter) setTimeout(push, 200);
      else push();
    },
  });
}

/** PATCH the whole body (chunked; no Content-Range unless given), as podman streams a layer. */
function patch(url: string, token: string, stream: Readable, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PATCH', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream', ...headers } }, (res) => {
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

/** Are the first `n` bytes of `file` the first `n` bytes of the body? */
function isBodyPrefix(file: string, n: number): boolean {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(block.length);
    for (let pos = 0; pos < n; pos += block.length) {
      const len = Math.min(block.length, n - pos);
      if (readSync(fd, buf, 0, len, pos) !== len || !buf.subarray(0, len).equals(block.subarray(0, len))) return false;
    }
    return true;
  } finally {
    closeSync(fd);
  }
}

t.test('SIGKILL mid-upload, restart: no partial blob, the upload resumes from the offset the proxy reports (an exact prefix), verify reports 0 bad', async (t) => {
  const first = await daemon(t);
  t.equal((await request(`${first.httpUrl}/container_gateway/admin/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'alice', password: 'pw-alice-1' }) })).status, 201);
  let token = await pushToken(first.httpUrl);
  const start = await request(`${first.httpUrl}/v2/alice/big/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
  t.equal(start.status, 202);
  const location = start.headers.location as string;
  const uuid = location.split('/').pop()!;
  const uploadFile = join(work, 'storage', 'uploads', uuid);
  // 200 MiB fast, then 1 MiB per 200 ms: the kill lands while the body is still coming.
  const sent = patch(`${first.httpUrl}${location}`, token, body(200 * 1024 * 1024)).catch((e: Error) => e.message);
  let reached = false;
  for (let i = 0; i < 1200 && !reached; i++) {
    reached = existsSync(uploadFile) && statSync(uploadFile).size >= 150 * 1024 * 1024;
    if (!reached) await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(reached, 'the daemon had written 150 MiB of the upload when it was killed');
  first.proc.kill('SIGKILL');
  t.equal(await first.exited, null, 'killed');
  const answer = await sent;
  t.type(answer, 'string', `the PATCH got no answer (the daemon died mid-upload): ${answer}`);
  const onDisk = statSync(uploadFile).size;
  t.ok(onDisk >= 150 * 1024 * 1024 && onDisk < SIZE, `the upload file holds part of the blob (${onDisk} bytes)`);

  const blobFile = join(work, 'storage', 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
  t.notOk(existsSync(blobFile), 'no blob under its final name');

  const second = await daemon(t);
  token = await pushToken(second.httpUrl);
  const head = await request(`${second.httpUrl}/v2/alice/big/blobs/${digest}`, { method: 'HEAD', headers: { Authorization: `Bearer ${token}` } });
  t.equal(head.status, 404, 'the blob is not visible');

  // Where the client resumes: the upload's status.
  const status = await request(`${second.httpUrl}${location}`, { headers: { Authorization: `Bearer ${token}` } });
  t.equal(status.status, 204, 'the upload is still there');
  const range = /^0-(\d+)$/.exec(String(status.headers.range));
  t.ok(range, `Range: ${status.headers.range}`);
  const offset = Number(range?.[1]) + 1;
  t.ok(offset > 0 && offset <= onDisk, `it reports ${offset} bytes, no more than the file holds (${onDisk})`);
  t.ok(isBodyPrefix(uploadFile, offset), 'and those bytes are exactly the first bytes sent, in order');
  t.equal(
    await patch(`${second.httpUrl}${location}`, token, body(SIZE, offset), { 'Content-Range': `${offset}-${SIZE - 1}`, 'Content-Length': String(SIZE - offset) }),
    202,
    'the rest is sent from there',
  );
  const done = await request(`${second.httpUrl}${location}?digest=${digest}`, { method: 'PUT', headers: { Authorization: `Bearer ${token}` } });
  t.equal(done.status, 201, `and committed: the resumed upload has the right digest ${done.body}`);
  const stored = await request(`${second.httpUrl}/v2/alice/big/blobs/${digest}`, { method: 'HEAD', headers: { Authorization: `Bearer ${token}` } });
  t.equal(stored.headers['content-length'], String(SIZE));
  t.equal(statSync(blobFile).size, SIZE);
  t.same(readdirSync(join(work, 'storage', 'uploads')), [], 'nothing left in uploads/');

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

/** A PATCH kept open: `send` writes bytes, `end` finishes it and resolves with the status (a client pushing a layer slowly). */
function openPatch(url: string, token: string): { send(b: Buffer): void; end(): Promise<number> } {
  let status: Promise<number>;
  const req = http.request(url, { method: 'PATCH', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' } });
  status = new Promise((resolve, reject) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
  return { send: (b) => req.write(b), end: () => (req.end(), status) };
}

/** Upload sessions of alice/abandoned: start one, and see what its file holds. */
function uploads(p: RunningProxyd, dir: string, token: string) {
  const auth = { Authorization: `Bearer ${token}` };
  return {
    async start(): Promise<{ location: string; uuid: string; file: string }> {
      const r = await request(`${p.httpUrl}/v2/alice/abandoned/blobs/uploads/`, { method: 'POST', headers: auth });
      if (r.status !== 202) throw new Error(`POST: ${r.status} ${r.body}`);
      const location = r.headers.location as string;
      const uuid = location.split('/').pop()!;
      return { location, uuid, file: join(dir, 'storage', 'uploads', uuid) };
    },
    status: (location: string) => request(`${p.httpUrl}${location}`, { headers: auth }),
    put: (location: string, d: string) => request(`${p.httpUrl}${location}?digest=${d}`, { method: 'PUT', headers: auth }),
  };
}

const MiB = 1024 * 1024;
const hourAgo = () => new Date(Date.now() - 60 * 60 * 1000);
/** Wait (bounded) until `file` holds at least `n` bytes: the daemon is writing it. */
async function holds(file: string, n: number): Promise<boolean> {
  for (let i = 0; i < 400; i++) {
    if (existsSync(file) && statSync(file).size >= n) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

async function standalone(tt: Tap, settings: Record<string, unknown>): Promise<{ p: RunningProxyd; dir: string; token: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'store-purge-'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const p = await startProxyd({ fixtures: false, settings: { log_level: 'INFO' }, plugins: { container_gateway: { enabled: true, sqlite_db_path: join(dir, 'gw.db'), storage_path: join(dir, 'storage'), ...settings } } });
  tt.teardown(() => p.stop());
  await request(`${p.httpUrl}/container_gateway/admin/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'alice', password: 'pw-alice-1' }) });
  const login = await request(`${p.httpUrl}/v2/token?scope=repository:alice/abandoned:pull,push`, { headers: { Authorization: `Basic ${Buffer.from('alice:pw-alice-1').toString('base64')}` } });
  return { p, dir, token: login.json().token as string };
}

t.test('proxyctl gc purges uploads idle past upload_purge_age and reports them with their bytes; fresh and in-use uploads stay', async (t) => {
  const { p, dir, token } = await standalone(t, { upload_purge_age: 600 });
  const u = uploads(p, dir, token);
  const part = randomBytes(3 * MiB);
  // A push that failed after 3 MiB, and one that failed right after starting: never committed.
  const failed = await u.start();
  t.equal(await patch(`${p.httpUrl}${failed.location}`, token, Readable.from([part])), 202);
  const empty = await u.start();
  // A push still going (its PATCH open), and one that just sent a chunk.
  const going = await u.start();
  const slow = openPatch(`${p.httpUrl}${going.location}`, token);
  slow.send(part.subarray(0, MiB));
  t.ok(await holds(going.file, MiB), 'the upload in progress has 1 MiB written');
  const fresh = await u.start();
  t.equal(await patch(`${p.httpUrl}${fresh.location}`, token, Readable.from([part.subarray(0, MiB)])), 202);
  // What a sync or an on-demand fetch killed mid-blob leaves: its one-shot temporary file.
  const deadFetch = join(dir, 'storage', 'uploads', `.ingest-${randomBytes(16).toString('hex')}`);
  writeFileSync(deadFetch, part.subarray(0, 1000));
  // An hour without a byte written, for all but the fresh one (the one in progress is just slow).
  for (const f of [failed.file, empty.file, going.file, deadFetch]) utimesSync(f, hourAgo(), hourAgo());

  const gc = await run([PROXYCTL, '--url', p.httpUrl, 'gc', '--json']);
  t.equal(gc.code, 0, gc.stderr);
  t.same(JSON.parse(gc.stdout).purged, { uploads: 3, bytes: 3 * MiB + 1000, sessions: [failed.uuid, empty.uuid].sort() }, 'the two abandoned uploads and the dead fetch purged, 3 MiB + 1000 bytes');
  t.notOk(existsSync(deadFetch), "the dead fetch's file is gone");
  for (const f of [failed, empty]) {
    const r = await u.status(f.location);
    t.equal(r.status, 404, 'an abandoned upload is unknown now');
    t.match(r.json(), { errors: [{ code: 'BLOB_UPLOAD_UNKNOWN' }] });
    t.notOk(existsSync(f.file), 'its file is gone');
  }
  t.equal((await u.status(fresh.location)).headers.range, `0-${MiB - 1}`, 'the fresh upload stays');

  const text = await run([PROXYCTL, '--url', p.httpUrl, 'gc']);
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, /^0 blobs removed, 0\.0 MB freed\n0 abandoned uploads purged, 0\.0 MB freed\n$/, 'a second gc: nothing more');

  // The upload in progress was never purged: it goes on and commits.
  slow.send(part.subarray(MiB));
  t.equal(await slow.end(), 202, 'the slow PATCH completes');
  const d = `sha256:${createHash('sha256').update(part).digest('hex')}`;
  t.equal((await u.put(going.location, d)).status, 201, 'and the upload commits with the right digest');
  t.ok(await lineLogged(p, /gc: 0 blobs \(0 bytes\) removed, 3 abandoned uploads \(3146728 bytes\) purged/), 'the daemon log says what gc purged');
});

t.test('the background purge frees an abandoned upload without proxyctl, and never an upload in use', async (t) => {
  const { p, dir, token } = await standalone(t, { upload_purge_age: 4 });
  const u = uploads(p, dir, token);
  const part = randomBytes(2 * MiB);
  const failed = await u.start();
  t.equal(await patch(`${p.httpUrl}${failed.location}`, token, Readable.from([part])), 202, 'a push that failed after 2 MiB');
  const going = await u.start();
  const slow = openPatch(`${p.httpUrl}${going.location}`, token);
  slow.send(part.subarray(0, MiB));
  t.ok(await holds(going.file, MiB), 'an upload in progress has 1 MiB written');
  // Both idle for an hour by their files (the one in use first, so every purge that sees the other idle saw it idle too); the purge runs every 2 s here.
  for (const f of [going.file, failed.file]) utimesSync(f, hourAgo(), hourAgo());
  let gone = false;
  for (let i = 0; i < 150 && !gone; i++) {
    gone = (await u.status(failed.location)).status === 404;
    if (!gone) await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(gone, 'the abandoned upload is purged in the background');
  t.notOk(existsSync(failed.file), 'its file is gone');
  t.ok(await lineLogged(p, /upload purge: 1 abandoned uploads \(2097152 bytes\) removed, idle for over 4 s/), 'the daemon log says so, with the bytes');
  t.ok(existsSync(going.file), 'the upload in progress was passed over by that same purge');
  slow.send(part.subarray(MiB));
  t.equal(await slow.end(), 202, 'it completes');
  t.equal((await u.put(going.location, `sha256:${createHash('sha256').update(part).digest('hex')}`)).status, 201, 'and commits');
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
