// Starts bin/proxyd for the benchmark. Like test/helpers/proxyd.ts
// startProxyd() (same settings layout, same child environment), but ready when
// GET /readyz answers 200 instead of when the INFO line "Smart proxy has
// launched" appears: the benchmark runs with log_level WARN, where that line is
// never written. Extra node flags (e.g. --cpu-prof) can be passed.
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { statusOf } from '../helpers/http.ts';
import { childEnv, freePort, PROXYD, ROOT, spawnNode, writeSettings } from '../helpers/proxyd.ts';

export interface GatewayOptions {
  /** Global settings (merged over bind_host, log_file, http_port, settings_directory). */
  settings?: Record<string, unknown>;
  /** settings.d/<name>.yml contents, by plugin name. */
  plugins?: Record<string, Record<string, unknown>>;
  /** Node flags placed before bin/proxyd (e.g. ['--cpu-prof', '--cpu-prof-dir', dir]). */
  nodeArgs?: string[];
  readyTimeoutMs?: number;
}

export interface RunningGateway {
  proc: ChildProcess;
  /** The daemon's pid: `env -u NODE_OPTIONS node ...` execs node, so it is node's pid. */
  pid: number;
  /** /proc/<pid>/cmdline, NUL separators replaced by spaces. */
  cmdline: string;
  httpUrl: string;
  dir: string;
  /** Everything the daemon wrote to stdout and stderr (last 256 KiB). */
  output(): string;
  /** SIGTERM, SIGKILL after `graceMs`; resolves with the exit code once it exited. Removes `dir`. */
  stop(graceMs?: number): Promise<number | null>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startGateway(opts: GatewayOptions = {}): Promise<RunningGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-bench-'));
  const settingsDir = join(dir, 'settings.d');
  mkdirSync(settingsDir);
  const httpPort = await freePort();
  const settings: Record<string, unknown> = {
    bind_host: ['127.0.0.1'],
    log_file: 'STDOUT',
    settings_directory: settingsDir,
    http_port: httpPort,
    ...opts.settings,
  };
  for (const [name, values] of Object.entries(opts.plugins ?? {})) writeSettings(join(settingsDir, `${name}.yml`), values);
  const settingsFile = join(dir, 'settings.yml');
  writeSettings(settingsFile, settings);

  const proc = spawnNode([...(opts.nodeArgs ?? []), PROXYD, '--settings', settingsFile], { cwd: ROOT, env: childEnv() });
  let out = '';
  const collect = (d: Buffer) => {
    out += d.toString();
    if (out.length > 256 * 1024) out = out.slice(-256 * 1024);
  };
  proc.stdout!.on('data', collect);
  proc.stderr!.on('data', collect);
  let spawnError: Error | undefined;
  proc.on('error', (e) => (spawnError = e));
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  const alive = () => proc.exitCode === null && proc.signalCode === null && !spawnError;

  const stop = async (graceMs = 10_000): Promise<number | null> => {
    let code: number | null = proc.exitCode;
    if (alive()) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (alive()) proc.kill('SIGKILL');
      }, graceMs);
      code = await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
    return code;
  };

  const httpUrl = `http://127.0.0.1:${httpPort}`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (spawnError) {
      await stop();
      throw new Error(`cannot start proxyd: ${spawnError.message}`);
    }
    if (!alive()) {
      const code = await stop();
      throw new Error(`proxyd exited (code ${code}) during start-up; output:\n${out}`);
    }
    if ((await statusOf(`${httpUrl}/readyz`)) === 200) break;
    if (Date.now() > deadline) {
      await stop(2000);
      throw new Error(`proxyd not ready (GET /readyz != 200) within ${opts.readyTimeoutMs ?? 30_000} ms; output:\n${out}`);
    }
    await sleep(100);
  }

  const pid = proc.pid!;
  let cmdline = '';
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    // reported as empty: the caller checks it
  }
  return { proc, pid, cmdline, httpUrl, dir, output: () => out, stop };
}
