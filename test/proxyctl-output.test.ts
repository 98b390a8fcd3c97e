// proxyctl and the start-up log say what is true (issue 10): every `--json`
// prints JSON (before or after the command name), the listeners shown are the
// ones a plugin really serves on, a missing settings file of a plugin that is
// on by default is no warning, and a settings.d beside the settings file that
// is not used is pointed out.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, pushImage } from './helpers/images.ts';
import { makePki } from './helpers/pki.ts';
import { freePort, launch, PROXYCTL, PROXYD, run, startProxyd, writeSettings, type RunningProxyd } from './helpers/proxyd.ts';

const work = mkdtempSync(join(tmpdir(), 'proxyd-ctl-output-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

/** The JSON log records of a daemon so far. */
function records(p: RunningProxyd): Array<Record<string, unknown>> {
  return p.lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

t.test('every subcommand prints JSON with --json, before or after the command name', async (t) => {
  const p = await startProxyd({
    fixtures: false,
    plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'gw.db'), storage_path: join(work, 'storage') } },
  });
  t.teardown(() => p.stop());
  const ctl = (args: string[], input?: string) => run([PROXYCTL, '--settings', p.settingsFile, ...args], {}, undefined, input);
  const added = await ctl(['users', 'add', 'alice', '--password-stdin', '--json'], 'alice-pw\n');
  t.equal(added.code, 0, added.stderr);
  t.same(JSON.parse(added.stdout), { user: 'alice' }, 'users add --json');
  const image = await buildImage(join(work, 'images'), { name: 'ctl', files: { '/etc/ctl.txt': 'verify me\n' } });
  await pushImage(image.ref, `${new URL(p.httpUrl).host}/alice/app:v1`, { creds: 'alice:alice-pw' });

  for (const where of ['after', 'before'] as const) {
    const args = (cmd: string[]) => (where === 'after' ? [...cmd, '--json'] : ['--json', ...cmd]);
    const verify = await ctl(args(['verify']));
    t.equal(verify.code, 0, `verify (--json ${where}): ${verify.stderr}`);
    const lines = verify.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    t.ok(lines.length >= 3, `verify --json ${where}: one JSON line per blob, then the summary`);
    t.match(lines.slice(0, -1), lines.slice(0, -1).map(() => ({ digest: /^sha256:[0-9a-f]{64}$/, ok: true, size: Number })), 'each blob verified');
    t.same(lines.at(-1), { checked: lines.length - 1, bad: 0 }, 'the summary last');
    for (const cmd of [['status'], ['features'], ['users', 'list'], ['repos', 'list'], ['gc'], ['repos', 'set-public', 'alice/app'], ['repos', 'set-private', 'alice/app']]) {
      const r = await ctl(args(cmd));
      t.equal(r.code, 0, `${cmd.join(' ')} (--json ${where}): ${r.stderr}`);
      t.doesNotThrow(() => JSON.parse(r.stdout), `${cmd.join(' ')} --json ${where}: stdout is JSON (${r.stdout.slice(0, 80)})`);
    }
  }
  const removed = await ctl(['users', 'remove', 'alice', '--json']);
  t.same([removed.code, JSON.parse(removed.stdout)], [0, { user: 'alice', removed: true, orphaned: ['alice/app'] }], 'users remove --json');
});

t.test('status and the start-up log show the listeners a plugin really serves on', async (t) => {
  const pki = makePki();
  t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));
  const httpOnly = await startProxyd({ fixtures: false, plugins: { logs: { enabled: true } } });
  t.teardown(() => httpOnly.stop());
  const status = await run([PROXYCTL, 'status', '--settings', httpOnly.settingsFile]);
  t.match(status.stdout, /^logs\s+\S+\s+running\s+http$/m, `HTTP only, enabled: true: "http" (${status.stdout})`);
  const json = JSON.parse((await run([PROXYCTL, 'status', '--json', '--settings', httpOnly.settingsFile])).stdout);
  t.match(json.plugins.find((x: { name: string }) => x.name === 'logs'), { http: true, https: false });
  t.ok(records(httpOnly).some((r) => /^'logs' \S+ is running \(http\)$/.test(String(r.msg))), "the log says: 'logs' ... is running (http)");
  const features = await request(`${httpOnly.httpUrl}/v2/features`);
  t.match(features.json().logs, { http_enabled: true, https_enabled: false }, '/v2/features agrees');

  const tls = { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca };
  const both = await startProxyd({ https: true, fixtures: false, settings: tls, plugins: { logs: { enabled: true } } });
  t.teardown(() => both.stop());
  const bothStatus = await run([PROXYCTL, 'status', '--settings', both.settingsFile]);
  t.match(bothStatus.stdout, /^logs\s+\S+\s+running\s+http, https$/m, 'HTTP and HTTPS: both');

  const httpsPlugin = await startProxyd({ fixtures: false, plugins: { logs: { enabled: 'https' } } });
  t.teardown(() => httpsPlugin.stop());
  const none = await run([PROXYCTL, 'status', '--settings', httpsPlugin.settingsFile]);
  t.match(none.stdout, /^logs\s+\S+\s+running\s+-$/m, `enabled: https without HTTPS: no listener (${none.stdout})`);
  t.ok(records(httpsPlugin).some((r) => r.level === 'warn' && /'logs' is enabled for https, but that listener is not configured/.test(String(r.msg))), 'and a warning says why');
});

t.test('a missing settings file: no warning for a plugin on by default', async (t) => {
  const p = await startProxyd({ fixtures: false, settings: { log_level: 'INFO' } });
  t.teardown(() => p.stop());
  await p.waitForLog(/waiting for requests/);
  const warnings = records(p).filter((r) => r.level === 'warn' || r.level === 'error');
  t.same(warnings, [], 'no warning or error at start-up');
  t.ok(records(p).some((r) => /^No settings file .*container_gateway\.yml: 'container_gateway' uses its default settings \(disabled\)$/.test(String(r.msg))), 'a plugin off by default: an info line');
  t.equal((await request(`${p.httpUrl}/v2/features`)).json().logs.state, 'running', 'logs runs on its defaults');
});

t.test('a settings.d beside --settings that is not used is pointed out', async (t) => {
  const dir = join(work, 'etc');
  mkdirSync(join(dir, 'settings.d'), { recursive: true });
  writeFileSync(join(dir, 'settings.d', 'logs.yml'), '---\n:enabled: false\n');
  const port = await freePort();
  const settingsFile = join(dir, 'settings.yml');
  writeSettings(settingsFile, { bind_host: ['127.0.0.1'], http_port: port, log_file: 'STDOUT' });
  const p = await launch([PROXYD, '--settings', settingsFile], { dir, settingsFile, httpPort: port, httpsPort: 0 });
  t.teardown(() => p.stop());
  const hint = await p.waitForLog(/beside the settings file is not used/);
  t.match(hint, { level: 'info', msg: new RegExp(`${join(dir, 'settings.d').replace(/[/.]/g, '\\$&')} beside the settings file is not used .*--settings-dir`) });
  t.equal((await request(`http://127.0.0.1:${port}/v2/features`)).json().logs.state, 'running', 'indeed: logs.yml there (enabled: false) was not read');

  const used = join(work, 'etc2');
  mkdirSync(join(used, 'settings.d'), { recursive: true });
  const port2 = await freePort();
  const usedFile = join(used, 'settings.yml');
  writeSettings(usedFile, { bind_host: ['127.0.0.1'], http_port: port2, log_file: 'STDOUT', settings_directory: 'settings.d' });
  const q = await launch([PROXYD, '--settings', usedFile], { dir: used, settingsFile: usedFile, httpPort: port2, httpsPort: 0 });
  t.teardown(() => q.stop());
  await q.waitForLog(/waiting for requests/);
  t.notOk(records(q).some((r) => /is not used/.test(String(r.msg))), 'settings_directory: settings.d: no hint');
});
