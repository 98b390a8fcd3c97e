// The README's quickstart, as a new user pastes it: `bin/proxyd` with no
// settings file runs on its embedded defaults (127.0.0.1:8000), `curl
// /features` answers, and `bin/proxyctl status` exits 0.
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { launch, PROXYCTL, PROXYD, ROOT, run } from './helpers/proxyd.ts';

function portInUse(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

// The embedded defaults apply only without a system settings file, and need port 8000.
const skip = existsSync('/etc/proxyd/settings.yml')
  ? '/etc/proxyd/settings.yml exists: the embedded defaults do not apply'
  : (await portInUse(8000))
    ? 'port 8000 is taken by another program'
    : false;

t.test('proxyd on embedded defaults, then proxyctl status', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-quickstart-'));
  const p = await launch([PROXYD], { dir, settingsFile: '', httpPort: 8000, httpsPort: 8443, cwd: ROOT });
  t.teardown(() => p.stop());
  t.match(p.lines.join('\n'), /starting with settings from \(embedded defaults\)/);
  const features = await request('http://127.0.0.1:8000/features');
  t.same([features.status, features.json()], [200, ['logs']]);
  const status = await run([PROXYCTL, 'status']);
  t.equal(status.code, 0, status.stdout + status.stderr);
  t.match(status.stdout, /^logs\s+\S+\s+running\s+http$/m, 'the embedded defaults have no HTTPS: logs serves on http only');
  t.equal(await p.stop(), 0);
});

// The README's "container registry in three minutes", step by step.
t.test('README quickstart: standalone registry, podman login, push, pull', { skip }, async (t) => {
  const { buildImage, podman } = await import('./helpers/images.ts');
  const { mkdirSync, writeFileSync, rmSync } = await import('node:fs');
  // Lower case: podman names an oci: image after its path.
  // Short too: podman refuses a runroot over 50 characters.
  const home = join(tmpdir(), `pq-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(home);
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const settingsDir = join(home, 'settings.d');
  mkdirSync(settingsDir, { recursive: true });
  // printf ':enabled: true\n:sqlite_db_path: %s\n:storage_path: %s\n' ~/proxyd/gateway.db ~/proxyd/storage
  writeFileSync(join(settingsDir, 'container_gateway.yml'), `:enabled: true\n:sqlite_db_path: ${join(home, 'gateway.db')}\n:storage_path: ${join(home, 'storage')}\n`);
  const p = await launch([PROXYD, '--settings-dir', settingsDir], { dir: home, settingsFile: '', httpPort: 8000, httpsPort: 8443, cwd: ROOT });
  t.teardown(() => p.stop());

  const add = await run([PROXYCTL, 'users', 'add', 'alice', '--password-stdin'], {}, ROOT, 'a-long-password\n');
  t.equal(add.code, 0, `proxyctl users add: ${add.stderr}`);

  const store = join(home, 'p');
  const registry = '127.0.0.1:8000';
  const login = await podman(store, ['login', '--tls-verify=false', '-u', 'alice', '-p', 'a-long-password', registry]);
  t.equal(login.code, 0, `podman login: ${login.stderr}`);
  // "any local image": one made here without network.
  const image = await buildImage(home, { name: 'alpine', files: { '/etc/os-release': 'NAME=quickstart\n' }, layers: 2 });
  t.equal((await podman(store, ['pull', image.ref])).code, 0, 'a local image');
  const localId = (await podman(store, ['images', '--format', '{{.ID}}'])).stdout.trim().split('\n')[0]!;
  t.equal((await podman(store, ['tag', localId, `${registry}/alice/alpine:latest`])).code, 0, 'podman tag');
  const push = await podman(store, ['push', '--tls-verify=false', `${registry}/alice/alpine:latest`]);
  t.equal(push.code, 0, `podman push: ${push.stderr}`);
  t.equal((await podman(store, ['rmi', `${registry}/alice/alpine:latest`])).code, 0, 'podman rmi');
  const pull = await podman(store, ['pull', '--tls-verify=false', `${registry}/alice/alpine:latest`]);
  t.equal(pull.code, 0, `podman pull: ${pull.stderr}`);
  const pulledId = (await podman(store, ['image', 'inspect', '--format', '{{.ID}}', `${registry}/alice/alpine:latest`])).stdout.trim();
  t.ok(pulledId.startsWith(localId), `the pulled image is the pushed one (${pulledId} / ${localId})`);

  const anonymous = await podman(join(home, 'a1'), ['pull', '--tls-verify=false', `${registry}/alice/alpine:latest`]);
  t.not(anonymous.code, 0, 'private to its owner');
  const open = await run([PROXYCTL, 'repos', 'set-public', 'alice/alpine']);
  t.equal(open.code, 0, `proxyctl repos set-public: ${open.stderr}`);
  const anonymousAgain = await podman(join(home, 'a2'), ['pull', '--tls-verify=false', `${registry}/alice/alpine:latest`]);
  t.equal(anonymousAgain.code, 0, `public after set-public: ${anonymousAgain.stderr}`);
  t.equal(await p.stop(), 0);
});
