// The README's quickstart, as a new user pastes it: `bin/proxyd` on the
// embedded defaults, `curl /features`, `bin/proxyctl status`, then the
// registry in three minutes. The embedded defaults (127.0.0.1:8000) apply
// only where no /etc/proxyd/settings.yml exists and port 8000 is free, which
// this machine does not promise: the daemon gets the same defaults from a
// file named by $PROXYD_SETTINGS, with a port free now, and HOME is a fresh
// directory; the commands are otherwise the README's.
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import YAML from 'yaml';
import { buildGlobalSettings, EMBEDDED_DEFAULTS } from '../lib/settings/global.ts';
import { request } from './helpers/http.ts';
import { freePort, launch, PROXYCTL, PROXYD, ROOT, run } from './helpers/proxyd.ts';

type Tap = Parameters<Parameters<typeof import('tap').test>[0]>[0];

/** A fresh HOME whose settings.yml holds the embedded defaults on a free port. */
async function quickstartHome(t: Tap): Promise<{ home: string; port: number; env: Record<string, string> }> {
  // Lower case: podman names an oci: image after its path.
  // Short too: podman refuses a runroot over 50 characters.
  const home = join(tmpdir(), `pq-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(home);
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const port = await freePort();
  const settingsFile = join(home, 'settings.yml');
  writeFileSync(settingsFile, YAML.stringify({ ...EMBEDDED_DEFAULTS, http_port: port }));
  return { home, port, env: { HOME: home, PROXYD_SETTINGS: settingsFile } };
}

t.test('the embedded defaults are what the README says: HTTP on 127.0.0.1:8000, logs to stdout', async (t) => {
  const defaults = buildGlobalSettings(EMBEDDED_DEFAULTS, '(embedded defaults)');
  t.same([defaults.bind_host, defaults.http_port, defaults.log_file, defaults.ssl_certificate], [['127.0.0.1'], 8000, 'STDOUT', undefined]);
});

t.test('proxyd on the embedded defaults, then curl /features and proxyctl status', async (t) => {
  const { home, port, env } = await quickstartHome(t);
  const p = await launch([PROXYD], { dir: home, settingsFile: env.PROXYD_SETTINGS!, httpPort: port, httpsPort: 0, cwd: ROOT, env });
  t.teardown(() => p.stop());
  t.match(p.lines.join('\n'), /starting with settings from .*settings\.yml/);
  const features = await request(`http://127.0.0.1:${port}/features`);
  t.same([features.status, features.json()], [200, ['logs']]);
  const status = await run([PROXYCTL, 'status'], env);
  t.equal(status.code, 0, status.stdout + status.stderr);
  t.match(status.stdout, /^logs\s+\S+\s+running\s+http$/m, 'the embedded defaults have no HTTPS: logs serves on http only');
  t.equal(await p.stop(), 0);
});

// The README's "container registry in three minutes", step by step.
t.test('README quickstart: standalone registry, podman login, push, pull', async (t) => {
  const { buildImage, podman } = await import('./helpers/images.ts');
  const { home, port, env } = await quickstartHome(t);
  const settingsDir = join(home, 'proxyd/settings.d');
  // mkdir -p ~/proxyd/settings.d; printf ... > ~/proxyd/settings.d/container_gateway.yml
  const readmeSteps = "mkdir -p ~/proxyd/settings.d && printf ':enabled: true\\n:sqlite_db_path: %s\\n:storage_path: %s\\n' ~/proxyd/gateway.db ~/proxyd/storage > ~/proxyd/settings.d/container_gateway.yml";
  await promisify(execFile)('/bin/sh', ['-c', readmeSteps], { env: { ...process.env, ...env }, cwd: home });
  const p = await launch([PROXYD, '--settings-dir', settingsDir], { dir: home, settingsFile: env.PROXYD_SETTINGS!, httpPort: port, httpsPort: 0, cwd: ROOT, env });
  t.teardown(() => p.stop());

  const add = await run([PROXYCTL, 'users', 'add', 'alice', '--password-stdin'], env, ROOT, 'a-long-password\n');
  t.equal(add.code, 0, `proxyctl users add: ${add.stderr}`);

  const store = join(home, 'p');
  const registry = `127.0.0.1:${port}`;
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
  const open = await run([PROXYCTL, 'repos', 'set-public', 'alice/alpine'], env);
  t.equal(open.code, 0, `proxyctl repos set-public: ${open.stderr}`);
  const anonymousAgain = await podman(join(home, 'a2'), ['pull', '--tls-verify=false', `${registry}/alice/alpine:latest`]);
  t.equal(anonymousAgain.code, 0, `public after set-public: ${anonymousAgain.stderr}`);
  t.equal(await p.stop(), 0);
});
