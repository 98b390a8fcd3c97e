// The same refusals on a smart proxy that forwards pushes to its main server
// (docker-registry with token auth, tokens from the Katello double): a
// manifest PUT that is not of a manifest media type, a malformed
// percent-escape, a malformed Host. Each is refused by the proxy, twice,
// before it reaches the main server: the main server's registry never sees
// it, and the proxy's database and store are unchanged.
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { storeSnapshot } from './helpers/local-registry.ts';
import { startMainServer } from './helpers/main-server.ts';
import { startProxyd } from './helpers/proxyd.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const REPO = 'acme/web/app';

const work = mkdtempSync(join(tmpdir(), 'gw-push-hardening-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const main = await startMainServer({ users: { pusher: { password: 'pusher-pw', repositories: [REPO], push: true } } });
t.teardown(() => main.stop());
const proxy = await startProxyd({
  fixtures: false,
  settings: { foreman_url: main.foremanUrl, log_level: 'INFO' },
  plugins: {
    container_gateway: {
      enabled: true,
      content_backend: 'local',
      main_registry_url: main.mainRegistryUrl,
      sqlite_db_path: join(work, 'gw.db'),
      storage_path: join(work, 'storage'),
    },
  },
});
t.teardown(() => proxy.stop());
const snapshot = () => storeSnapshot(join(work, 'gw.db'), join(work, 'storage'));

interface Answer {
  status: number;
  code?: string;
}

/** A raw request: the path and Host go out exactly as given. */
function call(method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<Answer> {
  const url = new URL(proxy.httpUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path, headers: { ...headers, ...(body ? { 'Content-Length': String(body.length) } : {}) }, agent: false, setHost: !('Host' in headers) }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        let code: string | undefined;
        try {
          code = (JSON.parse(Buffer.concat(parts).toString('utf8')) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code;
        } catch {
          code = undefined;
        }
        resolve({ status: res.statusCode ?? 0, ...(code ? { code } : {}) });
      });
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`timeout: ${method} ${path}`)));
    req.on('error', reject);
    req.end(body);
  });
}

const tokenReply = await fetch(`${proxy.httpUrl}/v2/token?account=pusher&scope=${encodeURIComponent(`repository:${REPO}:pull,push`)}`, {
  headers: { Authorization: `Basic ${Buffer.from('pusher:pusher-pw').toString('base64')}` },
});
const token = ((await tokenReply.json()) as { token: string }).token;
const auth = { Authorization: `Bearer ${token}` };

t.test('refused by the proxy, twice; the main server never sees it; nothing changes', async (t) => {
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'a'.repeat(64)}`, size: 2 }, layers: [] }));
  const seenBefore = (await main.flushAccessLog()).length;
  const before = await snapshot();
  for (let round = 1; round <= 2; round++) {
    for (const contentType of ['text/html', 'application/x-evil', 'application/octet-stream']) {
      const res = await call('PUT', `/v2/${REPO}/manifests/v1`, { ...auth, 'Content-Type': contentType }, manifest);
      t.same(res, { status: 400, code: 'MANIFEST_INVALID' }, `round ${round}: manifest PUT as ${contentType}`);
    }
    t.same(await call('GET', `/v2/${REPO}/manifests/%E0%A4%A`, auth), { status: 400, code: 'MANIFEST_INVALID' }, `round ${round}: GET manifests/%E0%A4%A`);
    t.same(await call('DELETE', `/v2/${REPO}/blobs/%ff`, auth), { status: 400, code: 'DIGEST_INVALID' }, `round ${round}: DELETE blobs/%ff`);
    for (const host of ['a b', '[::1']) {
      t.same(await call('PUT', `/v2/${REPO}/manifests/v1`, { ...auth, Host: host, 'Content-Type': OCI_MANIFEST }, manifest), { status: 400, code: 'UNKNOWN' }, `round ${round}: manifest PUT with Host: ${host}`);
      t.same(await call('POST', `/v2/${REPO}/blobs/uploads/`, { ...auth, Host: host }), { status: 400, code: 'UNKNOWN' }, `round ${round}: upload POST with Host: ${host}`);
    }
  }
  t.equal((await main.flushAccessLog()).length, seenBefore, 'the main server received none of them');
  t.equal(await snapshot(), before, "the proxy's database and store are unchanged");
  t.notOk(proxy.lines.some((line) => /"level":(5|6)\d/.test(line) || line.includes('"stack"')), 'no error and no stack trace logged');
});
