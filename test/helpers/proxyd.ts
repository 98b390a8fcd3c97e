// Starts the real daemon (bin/proxyd) as a child process with settings written
// for the test, on ports picked at run time on 127.0.0.1, and stops it after.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import YAML from 'yaml';
import { gatewayDatabaseSettings } from './test-database.ts';

export const ROOT = resolve(import.meta.dirname, '../..');
export const PROXYD = join(ROOT, 'bin/proxyd');
export const PROXYCTL = join(ROOT, 'bin/proxyctl');
export const FIXTURE_PLUGINS = join(ROOT, 'test/fixtures/plugins');

/**
 * The environment for programs under test: tap's loader hooks (NODE_OPTIONS)
 * are removed so bin/ scripts run exactly as users run them.
 */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PROXYD_SETTINGS: '', ...extra };
  delete env.NODE_OPTIONS;
  for (const key of Object.keys(env)) if (key.startsWith('TAP') || key.startsWith('_TAP')) delete env[key];
  return env;
}

/**
 * Spawn node with `argv`. tap's process tracker re-adds its loader to
 * NODE_OPTIONS inside spawn(); `env -u` drops it again just before exec.
 */
export function spawnNode(argv: string[], options: { cwd: string; env: NodeJS.ProcessEnv; stdin?: 'ignore' | 'pipe' }): ChildProcess {
  const { stdin = 'ignore', ...rest } = options;
  // bin/ programs run through their own #! line (with its node flags), as users run them.
  const command = argv[0] === PROXYD || argv[0] === PROXYCTL ? argv : [process.execPath, ...argv];
  return spawn('env', ['-u', 'NODE_OPTIONS', ...command], { ...rest, stdio: [stdin, 'pipe', 'pipe'] });
}

/** Ask the OS for a free port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => res(port));
    });
  });
}

export interface ProxydOptions {
  /** Global settings; written with smart-proxy symbol keys. */
  settings?: Record<string, unknown>;
  /** settings.d/<name>.yml contents, by plugin name. */
  plugins?: Record<string, Record<string, unknown>>;
  /** Load the fixture plugins of test/fixtures/plugins (default true). */
  fixtures?: boolean;
  http?: boolean;
  https?: boolean;
  /** Extra environment for the daemon. */
  env?: Record<string, string>;
}

export interface RunningProxyd {
  proc: ChildProcess;
  dir: string;
  settingsFile: string;
  httpUrl: string;
  httpsUrl: string;
  /** Every stdout line so far (JSON log records). */
  lines: string[];
  stderr(): string;
  /** Resolves with the first log record whose msg matches. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<Record<string, unknown>>;
  /**
   * Passwords and tokens the test used: stop() fails if any log line
   * contains one (besides any Authorization header or Basic/Bearer credential).
   */
  secrets: string[];
  /** Send a signal; resolves with the exit code, or rejects if a log line holds a credential. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

/** What a credential looks like in a log line. */
export const CREDENTIAL_IN_LOG = /Authorization|Basic [A-Za-z0-9+/=]{8,}|Bearer [^ "]{8,}/;

/** Throws, naming the first offending line, if a log line holds a credential or one of `secrets`. */
export function assertNoCredentialsLogged(lines: string[], secrets: readonly string[] = []): void {
  const known = secrets.filter((s) => s.length >= 4);
  const leak = lines.find((line) => CREDENTIAL_IN_LOG.test(line) || known.some((s) => line.includes(s)));
  if (leak !== undefined) throw new Error(`a log line holds a credential: ${leak.slice(0, 300)}`);
}

/** Write a settings file with `:key:` symbol keys, as smart-proxy's are written. */
export function writeSettings(file: string, data: Record<string, unknown>): void {
  const symbolKeyed = Object.fromEntries(Object.entries(data).map(([k, v]) => [`:${k}`, v]));
  writeFileSync(file, `---\n${YAML.stringify(symbolKeyed)}`);
}

export async function startProxyd(opts: ProxydOptions = {}): Promise<RunningProxyd> {
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-test-'));
  const settingsDir = join(dir, 'settings.d');
  mkdirSync(settingsDir);
  const httpPort = await freePort();
  const httpsPort = await freePort();
  const settings: Record<string, unknown> = {
    bind_host: ['127.0.0.1'],
    log_file: 'STDOUT',
    log_level: 'DEBUG',
    settings_directory: settingsDir,
    ...(opts.fixtures === false ? {} : { plugin_directories: [FIXTURE_PLUGINS] }),
    ...(opts.http === false ? {} : { http_port: httpPort }),
    ...(opts.https ? { https_port: httpsPort } : {}),
    ...opts.settings,
  };
  for (const [name, values] of Object.entries(opts.plugins ?? {})) {
    // On PostgreSQL (PROXYD_TEST_POSTGRES) each gateway gets a database of its own, named after its sqlite_db_path.
    const database = name === 'container_gateway' && !('db_connection_string' in values) ? await gatewayDatabaseSettings(String(values.sqlite_db_path ?? join(dir, 'container_gateway.db'))) : {};
    writeSettings(join(settingsDir, `${name}.yml`), { ...values, ...database });
  }
  const settingsFile = join(dir, 'settings.yml');
  writeSettings(settingsFile, settings);
  return launch([PROXYD, '--settings', settingsFile], { dir, settingsFile, httpPort, httpsPort, env: opts.env });
}

export function launch(
  argv: string[],
  o: { dir: string; settingsFile: string; httpPort: number; httpsPort: number; env?: Record<string, string>; cwd?: string },
): Promise<RunningProxyd> {
  const proc = spawnNode(argv, { cwd: o.cwd ?? o.dir, env: childEnv(o.env) });
  const lines: string[] = [];
  let err = '';
  const waiters: Array<() => void> = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts);
    waiters.forEach((w) => w());
  });
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((res) => proc.on('exit', (code) => {
    waiters.forEach((w) => w());
    res(code);
  }));
  const waitForLog = (pattern: RegExp, timeoutMs = 20_000) =>
    new Promise<Record<string, unknown>>((res, rej) => {
      const check = () => {
        for (const line of lines) {
          try {
            const rec = JSON.parse(line) as Record<string, unknown>;
            if (pattern.test(String(rec.msg))) return finish(() => res(rec));
          } catch {
            // not a log record
          }
        }
        if (proc.exitCode !== null) finish(() => rej(new Error(`proxyd exited (${proc.exitCode}) before logging ${pattern}: ${err}`)));
      };
      const timer = setTimeout(() => finish(() => rej(new Error(`no log line ${pattern} within ${timeoutMs} ms; stderr: ${err}`))), timeoutMs);
      const finish = (f: () => void) => {
        clearTimeout(timer);
        waiters.splice(waiters.indexOf(check), 1);
        f();
      };
      waiters.push(check);
      check();
    });
  const running: RunningProxyd = {
    proc,
    dir: o.dir,
    settingsFile: o.settingsFile,
    httpUrl: `http://127.0.0.1:${o.httpPort}`,
    httpsUrl: `https://127.0.0.1:${o.httpsPort}`,
    lines,
    stderr: () => err,
    waitForLog,
    secrets: [],
    stop: (signal = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited.then((code) => {
        assertNoCredentialsLogged([...lines, ...err.split('\n')], running.secrets);
        return code;
      });
    },
    exited,
  };
  // Ready when it says so, or (at log levels above INFO) when /healthz answers.
  const healthy = async () => {
    for (let i = 0; i < 200 && proc.exitCode === null; i++) {
      const ok = await fetch(`${running.httpUrl}/healthz`).then((r) => r.ok, () => false);
      if (ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`proxyd did not become healthy; stderr: ${err}`);
  };
  const ready = o.httpPort > 0 ? Promise.any([waitForLog(/Smart proxy has launched/), healthy()]) : waitForLog(/Smart proxy has launched/);
  return ready.then(
    () => running,
    (e: unknown) => {
      // Never leave a daemon behind when start-up is judged failed.
      proc.kill('SIGKILL');
      throw e instanceof AggregateError ? e.errors[0] : e;
    },
  );
}

/**
 * Run a command to completion; resolves with its exit code and output. Its
 * stdin is /dev/null, or a pipe that receives `input` and is then closed.
 */
export function run(argv: string[], env: Record<string, string> = {}, cwd = ROOT, input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const proc = spawnNode(argv, { cwd, env: childEnv(env), stdin: input === undefined ? 'ignore' : 'pipe' });
    if (input !== undefined) {
      // The program may exit without reading it all: that is not an error here.
      proc.stdin!.on('error', () => {});
      proc.stdin!.end(input);
    }
    let stdout = '';
    let stderr = '';
    proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.on('exit', (code) => res({ code, stdout, stderr }));
  });
}

/**
 * Has the daemon logged a line matching `pattern`? A client can see the effect
 * (a response, a file gone) before the daemon's log line reaches the test
 * through its stdout pipe, so this polls for it, bounded.
 */
export async function lineLogged(p: Pick<RunningProxyd, 'lines'>, pattern: RegExp, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!p.lines.some((l) => pattern.test(l))) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
