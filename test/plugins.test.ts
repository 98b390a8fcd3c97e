// Plugin lifecycle through the real loader and a real daemon: states,
// failure isolation, requirements, stop order, hook timeouts.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';

async function features(p: RunningProxyd) {
  const res = await request(`${p.httpUrl}/v2/features`);
  t.equal(res.status, 200, '/v2/features answers');
  return res.json<Record<string, { state: string; message?: string; http_enabled: boolean; https_enabled: boolean; settings: object; capabilities: string[] }>>();
}

t.test('a plugin whose setup throws fails alone; the others keep serving', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: true }, needs_hello: { enabled: true }, broken_setup: { enabled: true } } });
  t.teardown(() => p.stop());
  const f = await features(p);
  t.equal(f.broken_setup!.state, 'failed');
  t.match(f.broken_setup!.message, /Disabling all modules in the group \['broken_setup'\] due to a failure in one of them: database exploded/);
  t.same([f.broken_setup!.http_enabled, f.broken_setup!.https_enabled], [false, false], 'a failed plugin has no listener');
  t.equal(f.hello!.state, 'running');
  t.equal(f.needs_hello!.state, 'running');

  t.equal((await request(`${p.httpUrl}/broken_setup/ping`)).status, 404, "the failed plugin's routes are not mounted");
  const ping = await request(`${p.httpUrl}/hello/ping`);
  t.same([ping.status, ping.json()], [200, { greeting: 'hello' }], 'hello still serves');
  t.same((await request(`${p.httpUrl}/needs_hello/greet`)).json(), { text: 'hello, world' }, 'a dependent gets what its requirement set up');

  t.same((await request(`${p.httpUrl}/features`)).json(), ['hello', 'logs', 'needs_hello'], '/features lists running plugins only, sorted');
  const logs = (await request(`${p.httpUrl}/logs/`)).json();
  t.match(logs.info.failed_modules, { broken_setup: /database exploded/ }, '/logs carries the failure message');
  t.notOk('hello' in logs.info.failed_modules);
  t.ok(
    logs.logs.some((r: { level: string; message: string }) => r.level === 'ERROR' && /database exploded/.test(r.message)),
    'the failure is in the log buffer at ERROR',
  );

  const ready = await request(`${p.httpUrl}/readyz`);
  t.same([ready.status, ready.json()], [503, { ready: false, not_running: ['broken_setup'] }], 'not ready while an enabled plugin failed');
});

t.test('requirements: missing, wrong version, and a cascade from a failed requirement', async (t) => {
  const p = await startProxyd({
    plugins: { needs_missing: { enabled: true }, needs_newer_hello: { enabled: true }, hello: { enabled: true, greeting: '' }, needs_hello: { enabled: true } },
  });
  t.teardown(() => p.stop());
  const f = await features(p);
  t.equal(f.needs_missing!.state, 'failed');
  t.equal(f.needs_missing!.message, "'nowhere' required by 'needs_missing' could not be found.");
  t.equal(f.hello!.state, 'failed', 'hello fails on its empty greeting');
  t.match(f.hello!.message, /hello\.yml: setting 'greeting'/);
  t.equal(f.needs_hello!.state, 'failed', 'a plugin whose requirement failed fails too');
  t.match(f.needs_hello!.message, /'hello' required by 'needs_hello'/);
  t.equal(f.logs!.state, 'running', 'unrelated plugins run');
});

t.test('version requirement not met', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: true }, needs_newer_hello: { enabled: true } } });
  t.teardown(() => p.stop());
  const f = await features(p);
  t.equal(f.needs_newer_hello!.state, 'failed');
  t.equal(f.needs_newer_hello!.message, "Available version '1.2.3' of 'hello' doesn't match version '>= 2.0' required by 'needs_newer_hello'");
  t.equal(f.hello!.state, 'running');
});

t.test('a requirement that is disabled counts as missing', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: false }, needs_hello: { enabled: true } } });
  t.teardown(() => p.stop());
  const f = await features(p);
  t.equal(f.hello!.state, 'disabled');
  t.equal(f.needs_hello!.message, "'hello' required by 'needs_hello' could not be found.");
});

t.test('states, exposed settings and capabilities in /v2/features', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: 'http', greeting: 'hi' }, logs: { enabled: false } } });
  t.teardown(() => p.stop());
  const f = await features(p);
  t.same(f.hello, { http_enabled: true, https_enabled: false, settings: { greeting: 'hi' }, state: 'running', capabilities: ['dynamic', 'say'] });
  t.same(f.logs, { http_enabled: false, https_enabled: false, settings: {}, state: 'disabled', capabilities: [] }, 'a disabled plugin is listed');
  t.same(f.hangs_in_setup!.state, 'disabled', 'plugins default to disabled');
  t.equal((await request(`${p.httpUrl}/logs/`)).status, 404, 'a disabled plugin serves nothing');
  t.same((await request(`${p.httpUrl}/hello-at-root`)).json(), { root: true }, 'a plugin can mount routes at the listener root');
  const ready = await request(`${p.httpUrl}/readyz`);
  t.equal(ready.status, 200, 'ready when every enabled plugin runs (disabled ones do not count)');
});

t.test('a hook that never finishes fails its plugin after plugin_hook_timeout; the daemon starts', async (t) => {
  const p = await startProxyd({ settings: { plugin_hook_timeout: 0.5 }, plugins: { hangs_in_setup: { enabled: true }, hello: { enabled: true } } });
  t.teardown(() => p.stop());
  const f = await features(p);
  t.equal(f.hangs_in_setup!.state, 'failed');
  t.match(f.hangs_in_setup!.message, /setup of 'hangs_in_setup' did not finish within 0.5 s/);
  t.equal(f.hello!.state, 'running');
});

t.test('plugins stop in reverse start order on SIGTERM; a failed setup is stopped too', async (t) => {
  const p0 = await startProxyd({ plugins: {} });
  const stopLog = join(p0.dir, 'stops.txt');
  await p0.stop();
  writeFileSync(stopLog, '');
  const p = await startProxyd({
    plugins: { hello: { enabled: true, stop_log: stopLog }, needs_hello: { enabled: true, stop_log: stopLog }, broken_setup: { enabled: true, stop_log: stopLog } },
  });
  t.equal(readFileSync(stopLog, 'utf8'), 'broken_setup\n', 'the failed plugin was stopped when its setup threw');
  t.equal(await p.stop('SIGTERM'), 0, 'exit 0');
  t.equal(readFileSync(stopLog, 'utf8'), 'broken_setup\nneeds_hello\nhello\n', 'dependent stopped before its requirement');
});

t.test('a plugin folder that does not load is reported failed under its folder name', async (t) => {
  const p0 = await startProxyd({ plugins: {} });
  await p0.stop();
  const extra = join(p0.dir, 'extra-plugins');
  mkdirSync(extra);
  // Plugin folders outside the app ship ESM TypeScript, as the app's own do.
  writeFileSync(join(extra, 'package.json'), '{"type":"module"}');
  mkdirSync(join(extra, 'syntax_error'), { recursive: true });
  writeFileSync(join(extra, 'syntax_error', 'index.ts'), 'export default {{{ not typescript');
  mkdirSync(join(extra, 'no_definition'), { recursive: true });
  writeFileSync(join(extra, 'no_definition', 'index.ts'), 'export const x = 1;');
  const p = await startProxyd({ settings: { plugin_directories: [join(process.cwd(), 'test/fixtures/plugins'), extra] }, plugins: { hello: { enabled: true } } });
  t.teardown(() => p.stop());
  const f = await features(p);
  t.equal(f.syntax_error!.state, 'failed');
  t.match(f.syntax_error!.message, /could not be loaded/);
  t.equal(f.no_definition!.state, 'failed');
  t.match(f.no_definition!.message, /does not default-export a plugin definition/);
  t.equal(f.hello!.state, 'running');
});

t.test('a route that throws answers 500 JSON and the daemon keeps serving', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: true } } });
  t.teardown(() => p.stop());
  const boom = await request(`${p.httpUrl}/hello/boom`);
  t.same([boom.status, boom.json()], [500, { error: 'Internal server error' }]);
  t.equal((await request(`${p.httpUrl}/hello/ping`)).status, 200);
  const unknown = await request(`${p.httpUrl}/no/such/route`);
  t.same([unknown.status, unknown.json()], [404, { error: 'Requested url was not found' }]);
});
