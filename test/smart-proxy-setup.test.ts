// The README's "Setting up a smart proxy with HTTPS", pasted as an operator
// would: its fenced shell blocks are read from README.md at test time and run
// by bash, in order, with the variables its first block defines set to a
// temporary directory, `localhost` and a port free now. The one block that
// starts the daemon in the background is started by the test instead (same
// argv), so the test can wait for it and stop it. Real openssl, proxyd,
// curl and podman; Katello is the double, over HTTPS with a certificate from
// the README's CA (it holds the image, pushed to it beforehand, and checks
// logins). podman runs with a private store and auth
// file (a wrapper first in PATH adds the storage flags, and, as root, a
// private blob-info cache), and HOME is a fresh directory, so its certs.d is
// the one the README fills.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { KatelloDouble } from './helpers/katello-double.ts';
import { buildImage, layoutManifest, podman, pushImage } from './helpers/images.ts';
import { freePort, launch, PROXYD, ROOT } from './helpers/proxyd.ts';

const SECTION = '## Setting up a smart proxy with HTTPS';
const REPO = 'acme/web/app';

/** The section's ```sh blocks, in order. */
function readmeBlocks(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf(`\n${SECTION}\n`);
  if (start < 0) throw new Error(`README.md has no section "${SECTION}"`);
  const rest = readme.slice(start + SECTION.length + 2);
  const end = rest.search(/\n## /);
  const section = end < 0 ? rest : rest.slice(0, end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/** Run one block with bash -e (tap's loader dropped from NODE_OPTIONS, as a user's shell has none). */
function bash(script: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const base: NodeJS.ProcessEnv = { ...process.env, ...env };
    for (const k of Object.keys(base)) if (k.startsWith('TAP') || k.startsWith('_TAP') || k === 'PROXYD_SETTINGS') delete base[k];
    const proc = spawn('env', ['-u', 'NODE_OPTIONS', 'bash', '-e', '-c', script], { cwd: ROOT, env: base, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.on('exit', (code) => res({ code, stdout, stderr }));
  });
}

/** Every file path under `dir`. */
function storedFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => join(dir, f));
}

/** A `podman` first in PATH: the real one with the store under `store` (see helpers/images.ts for the cache). */
function podmanWrapper(dir: string, store: string): void {
  mkdirSync(dir, { recursive: true });
  const flags = `--root ${store}/root --runroot ${store}/run --tmpdir ${store}/tmp --storage-driver vfs --events-backend file`;
  const podmanPath = '/usr/bin/podman';
  const cache = join(store, 'cache');
  mkdirSync(cache, { recursive: true });
  const body = process.getuid?.() === 0
    ? `exec unshare -m -- sh -c 'mount --bind "$0" /var/lib/containers/cache && exec "$@"' ${cache} ${podmanPath} ${flags} "$@"`
    : `XDG_DATA_HOME=${cache} exec ${podmanPath} ${flags} "$@"`;
  writeFileSync(join(dir, 'podman'), `#!/bin/sh\n${body}\n`);
  chmodSync(join(dir, 'podman'), 0o755);
}

t.test('the README smart-proxy set-up, pasted block by block, works', async (t) => {
  const blocks = readmeBlocks();
  t.equal(blocks.length, 12, 'the section has its twelve shell blocks');
  const work = join(tmpdir(), `sp-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(work);
  t.teardown(() => rmSync(work, { recursive: true, force: true }));

  const hostUuid = '0d9c8b7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a';
  const katelloPort = await freePort();
  const home = join(work, 'home');
  mkdirSync(home);
  const store = join(work, 'p');
  podmanWrapper(join(work, 'bin'), store);
  const authFile = join(store, 'auth.json');
  writeFileSync(authFile, '{"auths":{}}\n', { mode: 0o600 });

  const httpsPort = await freePort();
  const vars: Record<string, string> = {
    PROXY: 'localhost',
    HTTPS_PORT: String(httpsPort),
    FOREMAN: 'foreman.example.com',
    FOREMAN_URL: `https://127.0.0.1:${katelloPort}/`,
    SYNC_USER: 'capsule',
    SYNC_PASSWORD: 'capsule-password',
    HOST_UUID: hostUuid,
    ETC: join(work, 'etc'),
    DATA: join(work, 'data'),
  };
  const defined = [...blocks[0]!.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]!);
  t.same(defined.sort(), Object.keys(vars).sort(), 'the test sets exactly the variables the README defines');
  const env = { ...vars, HOME: home, PATH: `${join(work, 'bin')}:${process.env.PATH}`, REGISTRY_AUTH_FILE: authFile };
  const step = async (i: number) => {
    const r = await bash(blocks[i]!, env);
    t.equal(r.code, 0, `block ${i} exits 0: ${r.stderr}`);
    return r;
  };

  // 1-5: the PKI and the settings.
  for (const i of [1, 2, 3, 4, 5]) await step(i);

  // Katello over HTTPS, its server certificate from the README's CA (so the
  // proxy verifies it with foreman_ssl_ca's default, ssl_ca_file): alice may
  // read the repository, the proxy's account too, the host is mapped to it.
  const pki = join(vars.ETC!, 'pki');
  const katelloCert = await bash(`cd "${pki}" && openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout k-server.key -out k-server.csr 2>/dev/null && openssl x509 -req -copy_extensions copy -days 2 -in k-server.csr -CA ca.crt -CAkey ca.key -out k-server.crt 2>/dev/null`, env);
  t.equal(katelloCert.code, 0, katelloCert.stderr);
  const katello = new KatelloDouble({
    users: {
      pusher: { password: 'pusher-pw', repositories: [], push: true },
      alice: { password: 'alice-password', repositories: [REPO] },
      capsule: { password: 'capsule-password', repositories: [REPO] },
    },
    hosts: { [hostUuid]: [REPO] },
    tls: { key: join(pki, 'k-server.key'), cert: join(pki, 'k-server.crt') },
  });
  await katello.start(katelloPort);
  t.teardown(() => katello.stop());
  t.equal(katello.url, vars.FOREMAN_URL);
  const image = await buildImage(join(work, 'images'), { name: 'app', files: { '/etc/app.txt': 'the app\n' }, layers: 2 });
  await pushImage(image.ref, `127.0.0.1:${katelloPort}/${REPO}:1.0`, { creds: 'pusher:pusher-pw' });
  const verify = await bash(`cd "${pki}" && openssl verify -CAfile ca.crt server.crt host.crt proxy.crt katello.crt && openssl x509 -in server.crt -noout -ext subjectAltName && openssl x509 -in host.crt -noout -subject`, env);
  t.equal(verify.code, 0, verify.stderr);
  t.match(verify.stdout, /DNS:localhost, IP Address:127\.0\.0\.1/, 'the server certificate names the host and 127.0.0.1');
  t.match(verify.stdout, new RegExp(`subject=CN = ${hostUuid}`), "the content host's certificate has its UUID as CN");

  // 6: the daemon (the block is exactly this line; started here to be waited for and stopped).
  t.equal(blocks[6]!.trim(), 'bin/proxyd --settings "$ETC/settings.yml" &');
  const settingsFile = join(vars.ETC!, 'settings.yml');
  const p = await launch([PROXYD, '--settings', settingsFile], { dir: work, settingsFile, httpPort: 0, httpsPort, cwd: ROOT });
  t.teardown(() => p.stop());
  p.secrets.push('alice-password', 'capsule-password', 'pusher-pw');

  const status = await step(7);
  t.match(status.stdout, /^proxyd \S+ at https:\/\/127\.0\.0\.1:\d+: healthy$/m, 'proxyctl reached the daemon over HTTPS, verified');
  t.match(status.stdout, /^container_gateway\s+\S+\s+running\s+https$/m, 'proxyctl status over HTTPS: the gateway runs on https');
  t.notMatch(status.stdout + status.stderr, /not trusted|403/i, "proxyctl's certificate is trusted");

  // 7: Katello's calls with its certificate.
  const calls = await step(8);
  t.same(calls.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown).length, 3, `three JSON answers: ${calls.stdout}`);
  // ...and the same call with the content host's certificate is refused: not in trusted_hosts.
  const hostCall = await bash(
    `curl --silent --output /dev/null --write-out '%{http_code}' --cacert "$ETC/pki/ca.crt" --cert "$ETC/pki/host.crt" --key "$ETC/pki/host.key" -X PUT -H 'Content-Type: application/json' -d '{"repositories":[]}' "https://$PROXY:$HTTPS_PORT/container_gateway/repository_list"`,
    env,
  );
  t.equal(hostCall.stdout, '403', "a content host's certificate may not call the management routes");

  // 8: certs.d with the CA; 9: a user's login (checked by Katello) and pull over verified HTTPS.
  await step(9);
  const certsD = join(home, '.config/containers/certs.d', `localhost:${httpsPort}`);
  t.same(readdirSync(certsD), ['ca.crt']);
  const wrong = await bash('podman login -u alice -p not-her-password "$PROXY:$HTTPS_PORT"', env);
  t.not(wrong.code, 0, `a wrong password is refused: ${wrong.stderr}`);
  const basicUsers = () => katello.requests
    .filter((r) => r.path === '/v2/token' && r.headers.authorization?.startsWith('Basic '))
    .map((r) => Buffer.from(r.headers.authorization!.slice(6), 'base64').toString().split(':')[0]);
  t.ok(basicUsers().includes('alice'), "alice's login went to Katello");
  const pushedDigest = layoutManifest(image.layout).digest;
  const pulledDigest = async () => {
    const r = await podman(store, ['image', 'inspect', '--format', '{{.Digest}}', `localhost:${httpsPort}/${REPO}:1.0`]);
    return r.code === 0 ? r.stdout.trim() : `not pulled: ${r.stderr}`;
  };
  const user = await step(10);
  t.match(user.stdout, /Login Succeeded/);
  const imageId = layoutManifest(image.layout).manifest.config.digest.replace(/^sha256:/, '');
  t.equal(user.stdout.trim().split('\n').find((l) => /^[0-9a-f]{64}$/.test(l)), imageId, "alice pulled Katello's image (podman prints its id)");
  const stored = storedFiles(join(vars.DATA!, 'storage')).join('\n');
  const layers = layoutManifest(image.layout).manifest.layers.map((l) => l.digest.replace(/^sha256:/, ''));
  t.ok(layers.every((hex) => stored.includes(hex)), 'the gateway kept the layers it fetched on demand');
  const anonymous = await bash(`podman pull "$PROXY:$HTTPS_PORT/${REPO}:1.0"`, env);
  t.not(anonymous.code, 0, 'no certificate, no login: the private repository is not readable');

  // 10: the content host's certificate, no login.
  const tokenCalls = basicUsers().length;
  await step(11);
  t.same(readdirSync(certsD).sort(), ['ca.crt', 'client.cert', 'client.key']);
  t.equal(await pulledDigest(), pushedDigest, 'the image pulled as the content host is the one in Katello');
  t.equal(basicUsers().length, tokenCalls, 'no login was needed');
  // What the README warns of: with a host certificate, a login is not checked.
  const unchecked = await bash('podman login -u alice -p not-her-password "$PROXY:$HTTPS_PORT"', env);
  t.equal(unchecked.code, 0, 'podman login with a host certificate succeeds whatever the password');
  t.equal(basicUsers().length, tokenCalls, 'without asking Katello');
  t.equal(await p.stop(), 0);
});
