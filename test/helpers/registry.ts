// A real container registry for tests: Debian's docker-registry (distribution
// 2.8) with a private config, filesystem storage in a temp dir, on a free
// loopback port chosen at run time (never 5000).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './proxyd.ts';

export interface RegistryTokenAuth {
  realm: string;
  service: string;
  issuer: string;
  /** PEM file with the certificate(s) that sign the tokens. */
  rootcertbundle: string;
}

export interface RegistryOptions {
  /** Token auth block (`auth.token`); without it the registry has no auth. */
  auth?: RegistryTokenAuth;
  /** Keep the temp dir after stop() (default: removed). */
  keepDir?: boolean;
  /** Readiness timeout in ms (default 15 000). */
  readyTimeoutMs?: number;
  /** Log level (default warn). */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
}

export interface RunningRegistry {
  /** Base URL without trailing slash, e.g. `http://127.0.0.1:40123`. */
  url: string;
  /** `127.0.0.1:<port>`, for image references (`127.0.0.1:40123/test/hello:v1`). */
  host: string;
  port: number;
  /** Temp dir holding registry.yml and data/ (the storage root). */
  dir: string;
  proc: ChildProcess;
  /** Everything the registry wrote to stderr and stdout so far (last 256 KiB). */
  stderr(): string;
  /** SIGTERM, SIGKILL after 3 s; resolves once the process has exited. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // If the test process dies without teardown, do not leave registries behind.
  process.once('exit', () => {
    for (const p of live) {
      try {
        p.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

function registryConfig(dir: string, port: number, opts: RegistryOptions): string {
  const lines = [
    'version: 0.1',
    'log:',
    `  level: ${opts.logLevel ?? 'warn'}`,
    '  accesslog: { disabled: true }',
    'storage:',
    `  filesystem: { rootdirectory: ${JSON.stringify(join(dir, 'data'))} }`,
    '  delete: { enabled: true }',
    '  cache: { blobdescriptor: inmemory }',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: test-only',
    'health:',
    '  storagedriver: { enabled: false }',
  ];
  if (opts.auth) {
    lines.push(
      'auth:',
      '  token:',
      `    realm: ${JSON.stringify(opts.auth.realm)}`,
      `    service: ${JSON.stringify(opts.auth.service)}`,
      `    issuer: ${JSON.stringify(opts.auth.issuer)}`,
      `    rootcertbundle: ${JSON.stringify(opts.auth.rootcertbundle)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

function ping(url: string): Promise<number> {
  return new Promise((res) => {
    const req = http.get(`${url}/v2/`, { agent: false, timeout: 1000 }, (r) => {
      r.resume();
      r.on('end', () => res(r.statusCode ?? 0));
      r.on('error', () => res(0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => res(0));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function pickPort(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (p !== 5000) return p;
  }
}

/**
 * Start `docker-registry serve <config>`; resolves once `GET /v2/` answers 200
 * (401 when token auth is configured). Throws with the registry's output if it
 * does not become ready within the timeout. Retries on another port if the
 * chosen one was taken in the meantime.
 */
export async function startRegistry(opts: RegistryOptions = {}): Promise<RunningRegistry> {
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-registry-'));
  const configFile = join(dir, 'registry.yml');
  const timeoutMs = opts.readyTimeoutMs ?? 15_000;
  const readyStatus = opts.auth ? 401 : 200;
  let lastError = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await pickPort();
    writeFileSync(configFile, registryConfig(dir, port, opts));
    const proc = spawn('docker-registry', ['serve', configFile], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(proc);
    let output = '';
    const collect = (d: Buffer) => {
      output += d.toString();
      if (output.length > 256 * 1024) output = output.slice(-256 * 1024);
    };
    proc.stdout!.on('data', collect);
    proc.stderr!.on('data', collect);
    let spawnError: Error | undefined;
    proc.on('error', (e) => (spawnError = e));
    const exited = new Promise<void>((res) => proc.once('close', () => {
      live.delete(proc);
      res();
    }));
    const url = `http://127.0.0.1:${port}`;
    const stop = async (): Promise<void> => {
      if (proc.exitCode === null && proc.signalCode === null && !spawnError) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
    };

    const deadline = Date.now() + timeoutMs;
    let ready = false;
    while (Date.now() < deadline) {
      if (spawnError) throw new Error(`cannot start docker-registry: ${spawnError.message}`);
      if (proc.exitCode !== null || proc.signalCode !== null) break;
      if ((await ping(url)) === readyStatus) {
        ready = true;
        break;
      }
      await sleep(100);
    }
    if (ready) {
      return { url, host: `127.0.0.1:${port}`, port, dir, proc, stderr: () => output, stop };
    }
    const died = proc.exitCode !== null || proc.signalCode !== null;
    if (!died) {
      proc.kill('SIGKILL');
      await exited;
      if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
      throw new Error(`docker-registry on port ${port} not ready within ${timeoutMs} ms; output:\n${output}`);
    }
    await exited;
    lastError = `docker-registry exited (code ${proc.exitCode}, signal ${proc.signalCode}); output:\n${output}`;
    if (!/address already in use/i.test(output)) break;
  }
  if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
  throw new Error(lastError);
}
