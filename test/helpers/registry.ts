// A real container registry for tests: Debian's docker-registry (distribution
// 2.8) with a private config, filesystem storage in a temp dir, on a free
// loopback port chosen at run time (never 5000).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { statusOf } from './http.ts';
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
  /**
   * Write the access log (default false: `accesslog: { disabled: true }`).
   * When true, `accessLog()` returns one entry per request.
   */
  accessLog?: boolean;
}

/** One line of docker-registry's access log (combined log format, on its stdout). */
export interface AccessLogEntry {
  method: string;
  /** Request path as sent, without the query string (not percent-decoded). */
  path: string;
  status: number;
  /** The whole request target as sent, query string included. */
  url: string;
}

export interface RegistryStopOptions {
  /**
   * Keep the temp dir (config and storage) so that `restart()` can bring the
   * registry back with the same content. Default: `RegistryOptions.keepDir`.
   * A later `stop()` without it removes the dir.
   */
  keepDir?: boolean;
}

export interface RunningRegistry {
  /** Base URL without trailing slash, e.g. `http://127.0.0.1:40123`. */
  url: string;
  /** `127.0.0.1:<port>`, for image references (`127.0.0.1:40123/test/hello:v1`). */
  host: string;
  port: number;
  /** Temp dir holding registry.yml and data/ (the storage root). */
  dir: string;
  /** The current docker-registry process (a new one after `restart()`). */
  readonly proc: ChildProcess;
  /** True while a docker-registry process is up (between start/restart and stop). */
  readonly running: boolean;
  /** Everything the registry wrote to stderr and stdout so far (last 256 KiB, across restarts). */
  stderr(): string;
  /**
   * Every access-log line so far, in the order written, across restarts
   * (requests of `flushAccessLog()` left out). Empty unless started with
   * `accessLog: true`. The registry writes a line when it has handled the
   * request, and it reaches this process asynchronously; use
   * `flushAccessLog()` right after a client finished.
   */
  accessLog(): AccessLogEntry[];
  /**
   * Like `accessLog()`, after making sure earlier requests are in: sends one
   * marker request (`GET /v2/?proxyd-accesslog-flush=N`, not listed) and waits
   * until its line arrives. Returns `accessLog()` at once when not running or
   * when the access log is off.
   */
  flushAccessLog(timeoutMs?: number): Promise<AccessLogEntry[]>;
  /**
   * SIGTERM, SIGKILL after 3 s; resolves once the process has exited. Removes
   * the temp dir unless `keepDir` (here or at start). Safe to call twice.
   */
  stop(opts?: RegistryStopOptions): Promise<void>;
  /**
   * Start docker-registry again on the same port with the same config and
   * storage, after `stop({ keepDir: true })` (or a stop of a registry started
   * with `keepDir`). When still running, stops it first (keeping the dir).
   * Resolves once ready; throws if the dir is gone or it does not come up.
   */
  restart(): Promise<void>;
}

const live = new Set<ChildProcess>();
/** Temp dirs that stop() would remove: removed at exit too if a test dies before its teardown. */
const ownedDirs = new Set<string>();
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
    for (const d of ownedDirs) rmSync(d, { recursive: true, force: true });
  });
}

function registryConfig(dir: string, port: number, opts: RegistryOptions): string {
  const lines = [
    'version: 0.1',
    'log:',
    `  level: ${opts.logLevel ?? 'warn'}`,
    `  accesslog: { disabled: ${opts.accessLog ? 'false' : 'true'} }`,
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

const ping = (url: string) => statusOf(`${url}/v2/`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function pickPort(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (p !== 5000) return p;
  }
}

// `127.0.0.1 - - [22/Nov/2026:14:48:53 +0000] "GET /v2/a/b/blobs/sha256:.. HTTP/1.1" 404 157 "" "curl/7.88.1"`
// (gorilla/handlers: the request target is quoted with `\"` and `\\` escapes).
const ACCESS_LINE = /^\S+ \S+ \S+ \[[^\]]*\] "(\S+) ((?:[^"\\]|\\.)*) HTTP\/[\d.]+" (\d{3}) /;
const FLUSH_PARAM = 'proxyd-accesslog-flush';

/** Parse one access-log line; undefined for anything else. */
export function parseAccessLine(line: string): AccessLogEntry | undefined {
  const m = ACCESS_LINE.exec(line);
  if (!m) return undefined;
  const url = m[2]!.replace(/\\(.)/g, '$1');
  const q = url.indexOf('?');
  return { method: m[1]!, path: q < 0 ? url : url.slice(0, q), status: Number(m[3]), url };
}

interface Launched {
  proc: ChildProcess;
  exited: Promise<void>;
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
  if (!opts.keepDir) ownedDirs.add(dir);
  const configFile = join(dir, 'registry.yml');
  const timeoutMs = opts.readyTimeoutMs ?? 15_000;
  const readyStatus = opts.auth ? 401 : 200;

  // Output of every process of this registry (first start and restarts).
  let output = '';
  const entries: AccessLogEntry[] = [];
  const flushesSeen = new Set<string>();
  const keep = (s: string) => {
    output += s;
    if (output.length > 256 * 1024) output = output.slice(-256 * 1024);
  };

  /** One process on `port`; resolves when ready, or with the reason it is not. */
  const launch = async (port: number): Promise<{ ok: Launched } | { error: string; portInUse: boolean }> => {
    const proc = spawn('docker-registry', ['serve', configFile], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(proc);
    // This process's own output (first 64 KiB), for error messages.
    let own = '';
    const keepOwn = (s: string) => {
      if (own.length < 64 * 1024) own += s;
    };
    let partial = '';
    proc.stdout!.on('data', (d: Buffer) => {
      const s = d.toString();
      keep(s);
      keepOwn(s);
      const lines = (partial + s).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        const e = parseAccessLine(line);
        if (!e) continue;
        const flush = new URL(e.url, 'http://x').searchParams.get(FLUSH_PARAM);
        if (flush !== null && e.path === '/v2/') flushesSeen.add(flush);
        else entries.push(e);
      }
    });
    proc.stderr!.on('data', (d: Buffer) => {
      const s = d.toString();
      keep(s);
      keepOwn(s);
    });
    let spawnError: Error | undefined;
    proc.on('error', (e) => (spawnError = e));
    const exited = new Promise<void>((res) => proc.once('close', () => {
      live.delete(proc);
      res();
    }));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (spawnError) {
        live.delete(proc);
        throw new Error(`cannot start docker-registry: ${spawnError.message}`);
      }
      if (proc.exitCode !== null || proc.signalCode !== null) break;
      if ((await ping(url)) === readyStatus) return { ok: { proc, exited } };
      await sleep(100);
    }
    const died = proc.exitCode !== null || proc.signalCode !== null;
    if (!died) {
      proc.kill('SIGKILL');
      await exited;
      return { error: `docker-registry on port ${port} not ready within ${timeoutMs} ms; output:\n${own}`, portInUse: false };
    }
    await exited;
    return {
      error: `docker-registry exited (code ${proc.exitCode}, signal ${proc.signalCode}); output:\n${own}`,
      portInUse: /address already in use/i.test(own),
    };
  };

  let current: Launched | undefined;
  let port = 0;
  let lastError = '';
  for (let attempt = 0; attempt < 3 && !current; attempt++) {
    port = await pickPort();
    writeFileSync(configFile, registryConfig(dir, port, opts));
    let r;
    try {
      r = await launch(port);
    } catch (e) {
      if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
      ownedDirs.delete(dir);
      throw e;
    }
    if ('ok' in r) current = r.ok;
    else {
      lastError = r.error;
      if (!r.portInUse) break;
    }
  }
  if (!current) {
    if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
    ownedDirs.delete(dir);
    throw new Error(lastError);
  }

  const url = `http://127.0.0.1:${port}`;
  let dirRemoved = false;
  let flushCounter = 0;
  let proc = current.proc;

  const stopProcess = async (): Promise<void> => {
    const c = current;
    current = undefined;
    if (!c) return;
    if (c.proc.exitCode === null && c.proc.signalCode === null) {
      c.proc.kill('SIGTERM');
      const timer = setTimeout(() => c.proc.kill('SIGKILL'), 3000);
      await c.exited;
      clearTimeout(timer);
    } else {
      await c.exited;
    }
  };

  const reg: RunningRegistry = {
    url,
    host: `127.0.0.1:${port}`,
    port,
    dir,
    get proc() {
      return proc;
    },
    get running() {
      return current !== undefined && current.proc.exitCode === null && current.proc.signalCode === null;
    },
    stderr: () => output,
    accessLog: () => entries.slice(),
    async flushAccessLog(waitMs = 5000) {
      if (!opts.accessLog || !reg.running) return entries.slice();
      const id = `${process.pid}-${++flushCounter}`;
      await statusOf(`${url}/v2/?${FLUSH_PARAM}=${id}`);
      const deadline = Date.now() + waitMs;
      while (!flushesSeen.has(id)) {
        if (Date.now() > deadline) throw new Error(`access log line of the flush request ${id} did not arrive within ${waitMs} ms`);
        await sleep(10);
      }
      flushesSeen.delete(id);
      return entries.slice();
    },
    async stop(stopOpts: RegistryStopOptions = {}) {
      await stopProcess();
      if (!(stopOpts.keepDir ?? opts.keepDir) && !dirRemoved) {
        rmSync(dir, { recursive: true, force: true });
        ownedDirs.delete(dir);
        dirRemoved = true;
      }
    },
    async restart() {
      await stopProcess();
      if (dirRemoved || !existsSync(configFile)) throw new Error(`cannot restart the registry: ${dir} was removed by stop()`);
      // The old listener is closed once the process has exited, but allow a
      // moment in case the kernel has not released the port yet.
      let error = '';
      for (let attempt = 0; attempt < 20; attempt++) {
        const r = await launch(port);
        if ('ok' in r) {
          current = r.ok;
          proc = r.ok.proc;
          return;
        }
        error = r.error;
        if (!r.portInUse) break;
        await sleep(250);
      }
      throw new Error(`cannot restart the registry on port ${port}: ${error}`);
    },
  };
  return reg;
}
