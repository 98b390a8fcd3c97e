// Settings, end to end: global settings.yml validation through the real
// bin/proxyd (exit codes and start-up messages), both key styles,
// --settings-dir and PROXYD_SETTINGS, plugin settings that fail only their
// plugin (seen over HTTP), and version requirements (unit).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { satisfies } from '../lib/plugins/version.ts';
import { SettingsError } from '../lib/settings/errors.ts';
import { parseSettings } from '../lib/settings/yaml-file.ts';
import { request } from './helpers/http.ts';
import { childEnv, FIXTURE_PLUGINS, freePort, launch, PROXYD, ROOT, run, spawnNode, startProxyd, writeSettings, type RunningProxyd } from './helpers/proxyd.ts';

/** The `t` a test callback receives. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

/** A fresh temp dir, removed when the test ends. */
function tempDir(tt: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-settings-test-'));
  let proxyd: RunningProxyd | undefined;
  t.teardown(async () => {
    await proxyd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Valid global settings for a local HTTP daemon; `extra` is merged over them. */
async function baseSettings(extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  return { bind_host: ['127.0.0.1'], http_port: await freePort(), log_file: 'STDOUT', ...extra };
}

/** Writes settings.yml (symbol keys) into a temp dir; returns its path. */
async function settingsFile(tt: Test, extra: Record<string, unknown>, base = true): Promise<string> {
  const file = join(tempDir(tt), 'settings.yml');
  writeSettings(file, base ? await baseSettings(extra) : extra);
  return file;
}

const check = (file: string, env: Record<string, string> = {}) => run([PROXYD, '--settings', file, '--check'], env);

/**
 * A real start (no --check) that is expected to fail: killed after
 * `timeoutMs` if it does not exit by itself, so a daemon that wrongly starts
 * fails the test instead of hanging it.
 */
function startExpectingExit(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((res) => {
    const proc = spawnNode([PROXYD, ...args], { cwd: ROOT, env: childEnv() });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
    }, timeoutMs);
    proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.on('exit', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr, timedOut });
    });
  });
}

/** The settings file is rejected: exit 1, and stderr names the file, the key and what was expected. */
async function assertRejected(tt: Test, extra: Record<string, unknown>, key: string, expectation: RegExp, base = true): Promise<string> {
  const file = await settingsFile(tt, extra, base);
  const { code, stdout, stderr } = await check(file);
  tt.equal(code, 1, 'exit code 1');
  tt.match(stderr, /Errors detected on startup/, 'start-up error message');
  tt.ok(stderr.includes(file), `stderr names the file ${file}`);
  tt.ok(stderr.includes(`'${key}'`), `stderr names the key '${key}'`);
  tt.match(stderr, expectation, 'stderr says what was expected');
  tt.notMatch(stdout, /settings are valid/, 'not reported valid');
  return stderr;
}

t.test('global settings: validation stops start-up', async (t) => {
  t.test('a misspelt key stops a real start with "did you mean"', async (t) => {
    const file = join(tempDir(t), 'settings.yml');
    writeFileSync(file, `---\n:bind_host: ['127.0.0.1']\n:log_file: STDOUT\n:htp_port: ${await freePort()}\n`);
    const r = await startExpectingExit(['--settings', file]);
    t.notOk(r.timedOut, 'proxyd exited by itself instead of starting');
    t.equal(r.code, 1, 'exit code 1');
    t.ok(r.stderr.includes(file), 'stderr names the file');
    t.ok(r.stderr.includes("'htp_port'"), 'stderr names the misspelt key');
    t.ok(r.stderr.includes("did you mean 'http_port'"), 'stderr suggests http_port');
  });

  t.test('http_port as a string', async (t) => {
    await assertRejected(t, { http_port: 'abc' }, 'http_port', /TCP port number \(0-65535\).*"abc"/);
  });

  t.test('http_port out of range', async (t) => {
    await assertRejected(t, { http_port: 70000 }, 'http_port', /TCP port number \(0-65535\).*70000/);
  });

  t.test('log_level not one of the levels (enum)', async (t) => {
    await assertRejected(t, { log_level: 'LOUD' }, 'log_level', /one of DEBUG, INFO, WARN, ERROR, FATAL, UNKNOWN.*"LOUD"/);
  });

  t.test('forward_verify not a boolean', async (t) => {
    await assertRejected(t, { forward_verify: 'maybe' }, 'forward_verify', /true or false.*"maybe"/);
  });

  t.test("YAML 1.1 booleans, as Ruby reads them: an unquoted 'no' is false", async (t) => {
    t.same(parseSettings(':forward_verify: no\n:http_port: 8000\n', 'f.yml'), { forward_verify: false, http_port: 8000 });
  });

  t.test('ssl_certificate names a missing file (file readable)', async (t) => {
    const stderr = await assertRejected(t, { ssl_certificate: '/nonexistent/proxy.pem' }, 'ssl_certificate', /doesn't exist or is unreadable/);
    t.ok(stderr.includes('/nonexistent/proxy.pem'), 'stderr names the missing file');
  });

  t.test('foreman_url is not a url', async (t) => {
    await assertRejected(t, { foreman_url: 'not a url' }, 'foreman_url', /expected to contain a url.*"not a url"/);
  });

  t.test('ssl_certificate and ssl_private_key without ssl_ca_file', async (t) => {
    const dir = tempDir(t);
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    writeFileSync(cert, 'not checked here\n');
    writeFileSync(key, 'not checked here\n');
    await assertRejected(t, { ssl_certificate: cert, ssl_private_key: key }, 'ssl_ca_file', /must be set too/);
  });

  t.test('neither http_port nor SSL settings', async (t) => {
    await assertRejected(t, { bind_host: ['127.0.0.1'], log_file: 'STDOUT' }, 'http_port', /both http and https are disabled/, false);
  });

  t.test('tls_disabled_versions with a version outside the list (enum list)', async (t) => {
    await assertRejected(t, { tls_disabled_versions: ['1.3'] }, 'tls_disabled_versions', /'1\.0', '1\.1', '1\.2'.*"1\.3"/);
  });

  t.test('an unsupported smart-proxy key gets its specific hint', async (t) => {
    await assertRejected(t, { file_rolling_size: 10 }, 'file_rolling_size', /not supported by proxyd.*logrotate/);
  });

  t.test('a file that is not valid YAML names the file and the line', async (t) => {
    const file = join(tempDir(t), 'settings.yml');
    writeFileSync(file, `---\n:http_port: 8000\n:bind_host: [127.0.0.1\n:log_file: STDOUT\n  nested: : oops\n`);
    const { code, stderr } = await check(file);
    t.equal(code, 1, 'exit code 1');
    t.ok(stderr.includes(file), 'stderr names the file');
    t.match(stderr, /not valid YAML \(line \d+\)/, 'stderr says invalid YAML with a line number');
  });

  t.test('a settings file that does not exist', async (t) => {
    const file = join(tempDir(t), 'missing.yml');
    const { code, stderr } = await check(file);
    t.equal(code, 1, 'exit code 1');
    t.ok(stderr.includes(`${file}: does not exist`), 'stderr names the file and says it does not exist');
  });

  t.test('a settings path that cannot be read (a directory)', async (t) => {
    const dir = join(tempDir(t), 'settings.yml');
    mkdirSync(dir);
    const { code, stderr } = await check(dir);
    t.equal(code, 1, 'exit code 1');
    t.ok(stderr.includes(`${dir}: `), 'stderr names the path');
    t.match(stderr, /cannot be read|is not readable/, 'stderr says it cannot be read');
  });

  t.test('several problems are all reported at once', async (t) => {
    const file = await settingsFile(t, { http_port: 70000, htp_port: 8000, log_level: 'LOUD' });
    const { code, stderr } = await check(file);
    t.equal(code, 1, 'exit code 1');
    t.match(stderr, /'http_port' must be a TCP port number/, 'the bad port is reported');
    t.match(stderr, /'htp_port' is not a known setting \(did you mean 'http_port'\?\)/, 'the unknown key is reported');
    t.match(stderr, /'log_level' must be one of/, 'the bad log level is reported');
  });
});

t.test('global settings: accepted forms', async (t) => {
  t.test(':key: symbol keys pass --check', async (t) => {
    const file = await settingsFile(t, {});
    const { code, stdout, stderr } = await check(file);
    t.equal(code, 0, `exit code 0 (stderr: ${stderr})`);
    t.ok(stdout.includes(`${file}: settings are valid`), 'reported valid');
  });

  t.test('plain key: keys pass --check', async (t) => {
    const file = join(tempDir(t), 'settings.yml');
    writeFileSync(file, `---\nbind_host: ['127.0.0.1']\nhttp_port: ${await freePort()}\nlog_file: STDOUT\nlog_level: debug\ntls_disabled_versions: [1.1]\n`);
    const { code, stdout, stderr } = await check(file);
    t.equal(code, 0, `exit code 0 (stderr: ${stderr})`);
    t.ok(stdout.includes(`${file}: settings are valid`), 'reported valid');
  });

  t.test('a scalar bind_host is accepted (wrapped into a list)', async (t) => {
    const file = join(tempDir(t), 'settings.yml');
    writeFileSync(file, `---\n:bind_host: 127.0.0.1\n:http_port: ${await freePort()}\n:log_file: STDOUT\n`);
    const { code, stderr } = await check(file);
    t.equal(code, 0, `exit code 0 (stderr: ${stderr})`);
  });

  t.test('the same key as :key: and key: is refused', async (t) => {
    const file = join(tempDir(t), 'settings.yml');
    writeFileSync(file, `---\n:bind_host: ['127.0.0.1']\n:http_port: 8000\nhttp_port: 8001\n`);
    const { code, stderr } = await check(file);
    t.equal(code, 1, 'exit code 1');
    t.ok(stderr.includes(file), 'stderr names the file');
    t.match(stderr, /'http_port' is set twice/, 'stderr names the doubled key');
  });

  t.test('parseSettings: symbol keys and symbol values (unit)', async (t) => {
    t.same(parseSettings('---\n:enabled: :https\n:greeting: hi\n', 'x.yml'), { enabled: 'https', greeting: 'hi' });
    t.same(parseSettings('---\nenabled: http\n', 'x.yml'), { enabled: 'http' });
    t.same(parseSettings('---\n:list: [:a, b]\n:url: "http://x/"\n', 'x.yml'), { list: ['a', 'b'], url: 'http://x/' });
    t.same(parseSettings('---\n', 'x.yml'), {}, 'an empty document is no settings');
    t.throws(() => parseSettings('---\n:a: 1\n  b: [\n', '/etc/x.yml'), SettingsError, 'invalid YAML throws a SettingsError');
    try {
      parseSettings('---\n:a: 1\n:b: [1, 2\n', '/etc/x.yml');
      t.fail('invalid YAML was accepted');
    } catch (err) {
      t.match((err as Error).message, /^\/etc\/x\.yml: is not valid YAML \(line \d+\)/);
    }
  });
});

t.test('--settings-dir overrides settings_directory', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-settings-test-'));
  let proxyd: RunningProxyd | undefined;
  t.teardown(async () => {
    await proxyd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const fromFile = join(dir, 'from-file.d');
  const fromFlag = join(dir, 'from-flag.d');
  mkdirSync(fromFile);
  mkdirSync(fromFlag);
  writeSettings(join(fromFile, 'hello.yml'), { enabled: false });
  writeSettings(join(fromFlag, 'hello.yml'), { enabled: true });
  const httpPort = await freePort();
  const httpsPort = await freePort();
  const file = join(dir, 'settings.yml');
  writeSettings(file, {
    bind_host: ['127.0.0.1'],
    http_port: httpPort,
    log_file: 'STDOUT',
    settings_directory: fromFile,
    plugin_directories: [FIXTURE_PLUGINS],
  });
  proxyd = await launch([PROXYD, '--settings', file, '--settings-dir', fromFlag], { dir, settingsFile: file, httpPort, httpsPort });
  const features = await request(`${proxyd.httpUrl}/features`);
  t.equal(features.status, 200);
  t.ok((features.json() as string[]).includes('hello'), `hello is running: ${features.body}`);
  const ping = await request(`${proxyd.httpUrl}/hello/ping`);
  t.equal(ping.status, 200, 'hello answers');
});

t.test('PROXYD_SETTINGS names the settings file when --settings is absent', async (t) => {
  const bad = await settingsFile(t, { http_port: 'abc' });
  const r = await run([PROXYD, '--check'], { PROXYD_SETTINGS: bad });
  t.equal(r.code, 1, 'exit code 1');
  t.ok(r.stderr.includes(bad), 'stderr names the file from PROXYD_SETTINGS');
  t.ok(r.stderr.includes("'http_port'"), 'stderr names the key');

  const good = await settingsFile(t, {});
  const flagWins = await run([PROXYD, '--settings', good, '--check'], { PROXYD_SETTINGS: bad });
  t.equal(flagWins.code, 0, '--settings wins over PROXYD_SETTINGS');
  t.ok(flagWins.stdout.includes(good), 'the --settings file is the one checked');
});

async function startWithStrict(t: Test, strict: Record<string, unknown>): Promise<RunningProxyd> {
  const proxyd = await startProxyd({ plugins: { hello: { enabled: true }, strict_settings: strict } });
  t.teardown(async () => {
    await proxyd.stop();
    rmSync(proxyd.dir, { recursive: true, force: true });
  });
  return proxyd;
}

/** strict_settings failed with a message naming its file and key; hello and the daemon go on. */
async function assertStrictFailed(t: Test, strict: Record<string, unknown>, key: string, expectation: RegExp): Promise<void> {
  const proxyd = await startWithStrict(t, strict);
  const features = await request(`${proxyd.httpUrl}/v2/features`);
  t.equal(features.status, 200, 'GET /v2/features answers');
  const body = features.json() as Record<string, { state: string; message?: string; http_enabled: boolean }>;
  const strictEntry = body.strict_settings;
  t.equal(strictEntry?.state, 'failed', 'strict_settings failed');
  t.equal(strictEntry?.http_enabled, false, 'strict_settings is off on HTTP');
  const message = strictEntry?.message ?? '';
  const file = join(proxyd.dir, 'settings.d', 'strict_settings.yml');
  t.ok(message.includes(file), `message names ${file}: ${message}`);
  t.ok(message.includes(`'${key}'`), `message names the key '${key}'`);
  t.match(message, expectation, 'message says what was expected');
  t.equal(body.hello?.state, 'running', 'hello is running');
  const ping = await request(`${proxyd.httpUrl}/hello/ping`);
  t.equal(ping.status, 200, 'GET /hello/ping answers 200');
  const mounted = await request(`${proxyd.httpUrl}/strict_settings/settings`);
  t.equal(mounted.status, 404, 'the failed plugin is not mounted');
}

t.test('plugin settings fail only their plugin', async (t) => {
  t.test('presence: token missing', async (t) => {
    await assertStrictFailed(t, { enabled: true }, 'token', /non-empty value/);
  });

  t.test('url: endpoint is not a url', async (t) => {
    await assertStrictFailed(t, { enabled: true, token: 'x', endpoint: 'not a url' }, 'endpoint', /expected to contain a url/);
  });

  t.test('file readable: ca_file does not exist', async (t) => {
    await assertStrictFailed(t, { enabled: true, token: 'x', ca_file: '/nonexistent' }, 'ca_file', /doesn't exist or is unreadable: '\/nonexistent'/);
  });

  t.test('enum: mode not in the list', async (t) => {
    await assertStrictFailed(t, { enabled: true, token: 'x', mode: 'slow' }, 'mode', /one of fast, safe.*"slow"/);
  });

  t.test('boolean: verbose is not true/false', async (t) => {
    await assertStrictFailed(t, { enabled: true, token: 'x', verbose: 'sometimes' }, 'verbose', /true or false.*"sometimes"/);
  });

  t.test('unknown key', async (t) => {
    await assertStrictFailed(t, { enabled: true, token: 'x', tokn: 'y' }, 'tokn', /not a known setting \(did you mean 'token'\?\)/);
  });

  t.test('enabled: maybe', async (t) => {
    await assertStrictFailed(t, { enabled: 'maybe', token: 'x' }, 'enabled', /must be one of true, false, http, https/);
  });

  t.test("the plugin's own validate (cross-key)", async (t) => {
    await assertStrictFailed(t, { enabled: true, token: 'x', min: 5, max: 1 }, 'min', /must not exceed 'max'/);
  });

  t.test('valid settings: running, with defaults merged', async (t) => {
    const proxyd = await startWithStrict(t, { enabled: true, token: 'x' });
    const features = await request(`${proxyd.httpUrl}/v2/features`);
    const body = features.json() as Record<string, { state: string; message?: string }>;
    t.equal(body.strict_settings?.state, 'running', 'strict_settings is running');
    t.notOk(body.strict_settings?.message, 'no failure message');
    const settings = await request(`${proxyd.httpUrl}/strict_settings/settings`);
    t.equal(settings.status, 200);
    t.match(settings.json(), { mode: 'safe', verbose: false, token: 'x', endpoint: 'https://example.invalid/', min: 1, max: 2 });
  });
});

t.test('version requirements (satisfies)', async (t) => {
  t.test("'~> 1.2' (Ruby pessimistic, two segments)", async (t) => {
    t.ok(satisfies('1.2.0', '~> 1.2'));
    t.ok(satisfies('1.9.9', '~> 1.2'));
    t.notOk(satisfies('2.0.0', '~> 1.2'));
    t.notOk(satisfies('1.1.9', '~> 1.2'));
  });

  t.test("'~> 1.2.3' (Ruby pessimistic, three segments)", async (t) => {
    t.ok(satisfies('1.2.3', '~> 1.2.3'));
    t.ok(satisfies('1.2.9', '~> 1.2.3'));
    t.notOk(satisfies('1.3.0', '~> 1.2.3'));
    t.notOk(satisfies('1.2.2', '~> 1.2.3'));
  });

  t.test("'>= 1.0, < 2' (every clause must hold)", async (t) => {
    t.ok(satisfies('1.0.0', '>= 1.0, < 2'));
    t.ok(satisfies('1.99.99', '>= 1.0, < 2'));
    t.notOk(satisfies('2.0.0', '>= 1.0, < 2'));
    t.notOk(satisfies('0.9.9', '>= 1.0, < 2'));
  });

  t.test("'^0.2.1' (npm caret below 1.0)", async (t) => {
    t.ok(satisfies('0.2.1', '^0.2.1'));
    t.ok(satisfies('0.2.9', '^0.2.1'));
    t.notOk(satisfies('0.3.0', '^0.2.1'));
    t.notOk(satisfies('0.2.0', '^0.2.1'));
    t.notOk(satisfies('1.0.0', '^0.2.1'));
  });

  t.test("npm '~' and '^' with partial versions ('~1', '^0', '^0.0')", async (t) => {
    // npm: ~1 := >=1.0.0 <2.0.0, ^0 := >=0.0.0 <1.0.0, ^0.0 := >=0.0.0 <0.1.0
    t.ok(satisfies('1.2.5', '~1.2'));
    t.notOk(satisfies('1.3.0', '~1.2'));
    t.ok(satisfies('1.5.0', '~1'), "'~1' accepts 1.5.0");
    t.notOk(satisfies('2.0.0', '~1'));
    t.ok(satisfies('0.5.0', '^0'), "'^0' accepts 0.5.0");
    t.notOk(satisfies('1.0.0', '^0'));
    t.ok(satisfies('0.0.5', '^0.0'), "'^0.0' accepts 0.0.5");
    t.notOk(satisfies('0.1.0', '^0.0'));
  });

  t.test("'-develop' versions compare by their numbers", async (t) => {
    t.ok(satisfies('1.3.0-develop', '~> 1.2'));
    t.ok(satisfies('2.0.0-develop', '>= 2.0'));
    t.notOk(satisfies('2.0.0-develop', '~> 1.2'));
    t.ok(satisfies('1.2.3-RC1', '= 1.2.3'));
  });

  t.test("'!=' excludes one version (Ruby's requirement syntax)", async (t) => {
    t.notOk(satisfies('2.0.0', '!= 2.0'), "'!= 2.0' excludes 2.0.0");
    t.ok(satisfies('2.0.1', '>= 1, != 2.0'), "'>= 1, != 2.0' accepts 2.0.1");
  });

  t.test('an invalid requirement throws', async (t) => {
    t.throws(() => satisfies('1.0.0', 'banana'), /invalid version requirement/);
    t.throws(() => satisfies('1.0.0', '>= one'), /invalid version requirement/);
    t.throws(() => satisfies('1.0.0', '>= 1.0,'), /invalid version requirement/);
  });
});
