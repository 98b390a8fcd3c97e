// proxyctl against a real daemon: finds it from the same settings file, reports
// plugin states, exits 0 healthy / 1 degraded / 2 unreachable / 64 usage.
import { join } from 'node:path';
import t from 'tap';
import { makePki } from './helpers/pki.ts';
import { freePort, PROXYCTL, run, startProxyd, writeSettings } from './helpers/proxyd.ts';

t.test('healthy daemon: table and --json, exit 0', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: 'http' }, needs_hello: { enabled: true } } });
  t.teardown(() => p.stop());
  const table = await run([PROXYCTL, 'status', '--settings', p.settingsFile]);
  t.equal(table.code, 0, table.stderr);
  t.match(table.stdout, /^proxyd \d+\.\d+\.\d+ at http:\/\/127\.0\.0\.1:\d+: healthy$/m);
  t.match(table.stdout, /^hello\s+1\.2\.3\s+running\s+http$/m);
  t.match(table.stdout, /^needs_hello\s+0\.3\.0\s+running\s+http$/m, "enabled: true on a daemon without HTTPS: it serves on http only");
  t.match(table.stdout, /^hangs_in_setup\s+-\s+disabled\s+-$/m, 'every plugin is listed, disabled ones too');

  const json = await run([PROXYCTL, 'status', '--json', '--settings', p.settingsFile]);
  t.equal(json.code, 0);
  const report = JSON.parse(json.stdout);
  t.equal(report.status, 'healthy');
  t.equal(report.detailed, true);
  t.same(report.plugins.find((x: { name: string }) => x.name === 'hello'), { name: 'hello', state: 'running', version: '1.2.3', http: true, https: false });

  const env = await run([PROXYCTL, 'features'], { PROXYD_SETTINGS: p.settingsFile });
  t.same([env.code, env.stdout], [0, 'hello\nlogs\nneeds_hello\n'], 'PROXYD_SETTINGS finds the daemon too');
  const featuresJson = await run([PROXYCTL, 'features', '--json', '--settings', p.settingsFile]);
  t.same(JSON.parse(featuresJson.stdout), ['hello', 'logs', 'needs_hello']);
});

t.test('a failed plugin: degraded, its message shown, exit 1', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: true }, broken_setup: { enabled: true } } });
  t.teardown(() => p.stop());
  const r = await run([PROXYCTL, 'status', '--settings', p.settingsFile]);
  t.equal(r.code, 1);
  t.match(r.stdout, /: degraded$/m);
  t.match(r.stdout, /^broken_setup\s+-\s+failed\s+-$/m);
  t.match(r.stdout, /broken_setup: Disabling all modules in the group \['broken_setup'\] due to a failure in one of them: database exploded/);
  const json = JSON.parse((await run([PROXYCTL, 'status', '--json', '--settings', p.settingsFile])).stdout);
  t.match(json.plugins.find((x: { name: string }) => x.name === 'broken_setup'), { state: 'failed', message: /database exploded/ });
});

t.test('no daemon listening: unreachable, exit 2', async (t) => {
  const p0 = await startProxyd({});
  await p0.stop();
  const file = join(p0.dir, 'nothing.yml');
  writeSettings(file, { bind_host: '127.0.0.1', http_port: await freePort() });
  const r = await run([PROXYCTL, 'status', '--settings', file]);
  t.equal(r.code, 2);
  t.match(r.stdout, /unreachable \(connect ECONNREFUSED 127\.0\.0\.1:\d+\)/);
  const json = JSON.parse((await run([PROXYCTL, 'status', '--json', '--settings', file])).stdout);
  t.equal(json.status, 'unreachable');
  t.equal((await run([PROXYCTL, 'features', '--settings', file])).code, 2);
});

t.test('HTTPS only: proxyctl uses the client certificate from the settings', async (t) => {
  const pki = makePki();
  const admin = pki.client('admin');
  const stranger = pki.client('stranger');
  const tls = { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca, trusted_hosts: ['admin'] };
  const p = await startProxyd({ http: false, https: true, settings: { ...tls, foreman_ssl_cert: admin.cert, foreman_ssl_key: admin.key }, plugins: { hello: { enabled: 'https' } } });
  t.teardown(() => p.stop());
  const r = await run([PROXYCTL, 'status', '--json', '--settings', p.settingsFile]);
  t.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  t.match(report, { url: /^https:\/\/127\.0\.0\.1:\d+$/, status: 'healthy', detailed: true });
  t.match(report.plugins.find((x: { name: string }) => x.name === 'hello'), { state: 'running', http: false, https: true });

  // Same daemon, but proxyctl presents a certificate that is not trusted.
  const other = join(p.dir, 'stranger.yml');
  writeSettings(other, { ...tls, bind_host: '127.0.0.1', http_port: undefined, https_port: Number(new URL(p.httpsUrl).port), foreman_ssl_cert: stranger.cert, foreman_ssl_key: stranger.key });
  const limited = await run([PROXYCTL, 'status', '--settings', other]);
  t.equal(limited.code, 0, 'still healthy: /readyz says every enabled plugin runs');
  t.match(limited.stdout, /note: plugin details need a trusted client certificate \(GET \/v2\/features: Untrusted client stranger/);
  t.match(limited.stdout, /^hello\s+1\.2\.3\s+running\s+\?$/m);
});

t.test('--help everywhere, usage errors exit 64', async (t) => {
  for (const argv of [['--help'], ['status', '--help'], ['features', '--help']]) {
    const r = await run([PROXYCTL, ...argv]);
    t.equal(r.code, 0, `proxyctl ${argv.join(' ')}`);
    t.match(r.stdout, /Usage: proxyctl/);
  }
  const typo = await run([PROXYCTL, 'stauts']);
  t.equal(typo.code, 64);
  t.match(typo.stderr, /unknown command 'stauts'/);
  const badTimeout = await run([PROXYCTL, '--timeout', 'soon', 'status']);
  t.equal(badTimeout.code, 64);
  t.match(badTimeout.stderr, /--timeout must be a positive number/);
});
