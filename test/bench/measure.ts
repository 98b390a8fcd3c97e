// Measuring tools of the benchmark: wrk runs (parsed), timed blob downloads
// with curl, a verifying download (size + sha256) with node:http, and
// samplers of memory and CPU time from /proc (one process, or a cluster
// primary with its workers).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/** One line of a result table: `ratio` is gateway / direct (or its inverse for times), `pass` undefined for information only. */
export interface Row {
  metric: string;
  unit: string;
  direct?: number;
  gateway: number;
  ratio?: number;
  target?: string;
  pass?: boolean;
}

export interface Output {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command to completion (SIGKILL after timeoutMs). Never rejects for a non-zero exit. */
export function exec(cmd: string, args: string[], timeoutMs: number): Promise<Output> {
  return new Promise((res, rej) => {
    const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${timeoutMs} ms]`;
      proc.kill('SIGKILL');
    }, timeoutMs);
    proc.on('error', (e) => {
      clearTimeout(timer);
      rej(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    proc.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------
// wrk
// ---------------------------------------------------------------------------

export interface WrkResult {
  requestsPerSec: number;
  requests: number;
  /** Latency percentiles in ms. */
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  non2xx: number;
  socketErrors: number;
  raw: string;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function durationMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text);
  if (!m) throw new Error(`cannot parse wrk duration '${text}'`);
  return Number(m[1]) * UNIT_MS[m[2]!]!;
}

/** Parse `wrk --latency` output. */
export function parseWrk(raw: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(raw);
  const total = /(\d+) requests in /.exec(raw);
  const pct = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(raw);
    if (!m) throw new Error(`wrk output has no ${p}% latency:\n${raw}`);
    return durationMs(m[1]!);
  };
  if (!rps || !total) throw new Error(`cannot parse wrk output:\n${raw}`);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(raw);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(raw);
  return {
    requestsPerSec: Number(rps[1]),
    requests: Number(total[1]),
    p50Ms: pct('50'),
    p90Ms: pct('90'),
    p99Ms: pct('99'),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    socketErrors: sock ? [1, 2, 3, 4].reduce((s, i) => s + Number(sock[i]), 0) : 0,
    raw,
  };
}

export async function runWrk(url: string, headers: Record<string, string>, o: { threads: number; connections: number; seconds: number }): Promise<WrkResult> {
  const args = [`-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, '--latency'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const r = await exec('wrk', args, (o.seconds + 30) * 1000);
  if (r.code !== 0) throw new Error(`wrk ${url} failed (code ${r.code}):\n${r.stderr || r.stdout}`);
  return parseWrk(r.stdout);
}

// ---------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------

export interface Download {
  status: number;
  bytes: number;
  seconds: number;
  /** 10^6 bytes per second. */
  mbPerSec: number;
}

/** `curl -s -o /dev/null`, timed by curl itself (time_total, connection included). */
export async function curlDownload(url: string, headers: Record<string, string>, timeoutMs = 120_000): Promise<Download> {
  const args = ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const r = await exec('curl', args, timeoutMs);
  if (r.code !== 0) throw new Error(`curl ${url} failed (code ${r.code}): ${r.stderr.trim()}`);
  const [status, bytes, seconds] = r.stdout.trim().split(/\s+/).map(Number) as [number, number, number];
  return { status, bytes, seconds, mbPerSec: bytes / seconds / 1e6 };
}

export interface Fetched {
  status: number;
  headers: http.IncomingHttpHeaders;
  bytes: number;
  /** `sha256:<hex>` of the body. */
  digest: string;
  /** The body, when asked to keep it. */
  body?: Buffer;
  seconds: number;
}

/** GET with node:http, hashing the body as it streams (kept in memory only if `keep`). */
export function fetchHashed(url: string, headers: Record<string, string>, keep = false): Promise<Fetched> {
  return new Promise((res, rej) => {
    const t0 = process.hrtime.bigint();
    const req = http.get(url, { headers, agent: false }, (r) => {
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let bytes = 0;
      r.on('data', (d: Buffer) => {
        bytes += d.length;
        hash.update(d);
        if (keep) chunks.push(d);
      });
      r.on('error', rej);
      r.on('end', () =>
        res({
          status: r.statusCode ?? 0,
          headers: r.headers,
          bytes,
          digest: `sha256:${hash.digest('hex')}`,
          ...(keep ? { body: Buffer.concat(chunks) } : {}),
          seconds: Number(process.hrtime.bigint() - t0) / 1e9,
        }),
      );
    });
    req.on('error', rej);
  });
}

/** A request with a body (management API calls, logins). */
export function request(method: string, url: string, headers: Record<string, string>, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((res, rej) => {
    const req = http.request(url, { method, headers: body === undefined ? headers : { ...headers, 'Content-Length': String(Buffer.byteLength(body)) }, agent: false }, (r) => {
      let text = '';
      r.setEncoding('utf8');
      r.on('data', (d: string) => (text += d));
      r.on('end', () => res({ status: r.statusCode ?? 0, text }));
      r.on('error', rej);
    });
    req.on('error', rej);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------
// /proc sampling
// ---------------------------------------------------------------------------

let clockTicks: number | undefined;

/** The kernel's clock ticks per second (units of utime/stime in /proc/<pid>/stat). */
export async function ticksPerSecond(): Promise<number> {
  if (clockTicks === undefined) {
    const r = await exec('getconf', ['CLK_TCK'], 5000).catch(() => undefined);
    clockTicks = Number(r?.stdout.trim()) || 100;
  }
  return clockTicks;
}

/** VmRSS and VmHWM in kB (KiB), or undefined when the process is gone. */
export function memoryOf(pid: number): { rssKb: number; hwmKb: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
    if (!rss || !hwm) return undefined;
    return { rssKb: Number(rss[1]), hwmKb: Number(hwm[1]) };
  } catch {
    return undefined;
  }
}

/** User + system CPU seconds used so far by a process (its own threads, not its children). */
export function cpuSecondsOf(pid: number, ticks: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name in parentheses (which may contain spaces).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after "(comm) ".
    return (Number(fields[11]) + Number(fields[12])) / ticks;
  } catch {
    return undefined;
  }
}

/** User and system CPU seconds and minor page faults of a process so far, or undefined when it is gone. */
export function cpuDetailOf(pid: number, ticks: number): { user: number; sys: number; minflt: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(fields[11]) / ticks, sys: Number(fields[12]) / ticks, minflt: Number(fields[7]) };
  } catch {
    return undefined;
  }
}

export interface PhaseUsage {
  /** Wall seconds of the phase. */
  seconds: number;
  /** CPU seconds used by each watched process during the phase. */
  cpu: Record<string, number>;
  /** Highest sampled VmRSS of the main process during the phase, kB. */
  peakRssKb: number;
}

/**
 * Samples VmRSS of `main` every `intervalMs` for the whole run and keeps the
 * maximum; `phase()` brackets a step and reports its CPU seconds per process.
 */
export class ProcSampler {
  peakRssKb = 0;
  samples = 0;
  private timer: NodeJS.Timeout | undefined;
  private phasePeak = 0;
  private ticks = 100;

  constructor(
    readonly mainPid: number,
    readonly watched: Record<string, number>,
    readonly intervalMs = 50,
  ) {}

  async start(): Promise<void> {
    this.ticks = await ticksPerSecond();
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  private sample(): void {
    const m = memoryOf(this.mainPid);
    if (!m) return;
    this.samples++;
    if (m.rssKb > this.peakRssKb) this.peakRssKb = m.rssKb;
    if (m.rssKb > this.phasePeak) this.phasePeak = m.rssKb;
  }

  /** Run `work`, and report wall time, CPU per watched process, and peak RSS during it. */
  async phase<T>(work: () => Promise<T>): Promise<{ result: T; usage: PhaseUsage }> {
    const cpu0 = Object.fromEntries(Object.entries(this.watched).map(([k, pid]) => [k, cpuSecondsOf(pid, this.ticks) ?? 0]));
    const t0 = process.hrtime.bigint();
    this.sample();
    this.phasePeak = 0;
    const result = await work();
    this.sample();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = Object.fromEntries(Object.entries(this.watched).map(([k, pid]) => [k, (cpuSecondsOf(pid, this.ticks) ?? cpu0[k]!) - cpu0[k]!]));
    return { result, usage: { seconds, cpu, peakRssKb: this.phasePeak } };
  }

  /** Stop sampling; the final VmHWM (kernel high-water mark, covers start-up too) if the process is still there. */
  stop(): { peakRssKb: number; hwmKb?: number } {
    this.sample();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const m = memoryOf(this.mainPid);
    return { peakRssKb: this.peakRssKb, ...(m ? { hwmKb: m.hwmKb } : {}) };
  }
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// ---------------------------------------------------------------------------
// Process groups (a cluster primary and its workers)
// ---------------------------------------------------------------------------

/** Direct children of a process (from /proc/<pid>/task/<tid>/children), sorted. */
export function childrenOf(pid: number): number[] {
  const out = new Set<number>();
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  for (const tid of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (c) out.add(Number(c));
    } catch {
      // the thread ended meanwhile
    }
  }
  return [...out].sort((a, b) => a - b);
}

/**
 * Bytes a process has read and written through system calls so far
 * (/proc/<pid>/io rchar, wchar: sockets and files alike) and read from the
 * disk (read_bytes: page-cache misses), or undefined when the process is gone.
 */
export function ioOf(pid: number): { rchar: number; wchar: number; readBytes: number } | undefined {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const r = /^rchar:\s+(\d+)/m.exec(io);
    const w = /^wchar:\s+(\d+)/m.exec(io);
    const d = /^read_bytes:\s+(\d+)/m.exec(io);
    return r && w ? { rchar: Number(r[1]), wchar: Number(w[1]), readBytes: Number(d?.[1] ?? 0) } : undefined;
  } catch {
    return undefined;
  }
}

export interface MemberPeak {
  name: string;
  pid: number;
  /** Highest sampled VmRSS, kB. */
  peakRssKb: number;
  /** VmHWM (kernel high-water mark, start-up included) when last seen, kB. */
  hwmKb: number;
}

export interface GroupUsage {
  seconds: number;
  /** CPU seconds per member (primary, worker1, ...) and per extra watched process. */
  cpu: Record<string, number>;
  /** Highest sampled VmRSS per member during the phase, kB. */
  peakRssKb: Record<string, number>;
  /** Highest sampled sum of the members' VmRSS during the phase, kB. */
  peakSumKb: number;
}

/**
 * Like ProcSampler, for a process and its children (a node:cluster primary
 * and its workers): every `intervalMs` the children are listed again and the
 * VmRSS of each member read, keeping the peak per process and the peak of
 * their sum (members read in the same tick). Members are named `primary`,
 * `worker1`, `worker2`, ... in order of appearance; a worker that was
 * replaced (a restart) shows up as a further name, which `stop()` reports.
 */
export class ProcGroupSampler {
  readonly members = new Map<number, MemberPeak>();
  peakSumKb = 0;
  samples = 0;
  private timer: NodeJS.Timeout | undefined;
  private phasePeak = new Map<number, number>();
  private phaseSum = 0;
  private ticks = 100;
  private workers = 0;

  constructor(
    readonly primaryPid: number,
    /** Other processes whose CPU time phases report (e.g. the registry). */
    readonly extra: Record<string, number> = {},
    readonly intervalMs = 50,
  ) {}

  async start(): Promise<void> {
    this.ticks = await ticksPerSecond();
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  /** The live members by name. */
  live(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const pid of [this.primaryPid, ...childrenOf(this.primaryPid)]) {
      this.member(pid);
      out[this.members.get(pid)!.name] = pid;
    }
    return out;
  }

  private member(pid: number): MemberPeak {
    let m = this.members.get(pid);
    if (!m) {
      m = { name: pid === this.primaryPid ? 'primary' : `worker${++this.workers}`, pid, peakRssKb: 0, hwmKb: 0 };
      this.members.set(pid, m);
    }
    return m;
  }

  private sample(): void {
    let sum = 0;
    let seen = 0;
    for (const pid of [this.primaryPid, ...childrenOf(this.primaryPid)]) {
      const mem = memoryOf(pid);
      if (!mem) continue;
      seen++;
      const m = this.member(pid);
      m.peakRssKb = Math.max(m.peakRssKb, mem.rssKb);
      m.hwmKb = Math.max(m.hwmKb, mem.hwmKb);
      this.phasePeak.set(pid, Math.max(this.phasePeak.get(pid) ?? 0, mem.rssKb));
      sum += mem.rssKb;
    }
    if (!seen) return;
    this.samples++;
    this.peakSumKb = Math.max(this.peakSumKb, sum);
    this.phaseSum = Math.max(this.phaseSum, sum);
  }

  private cpuNow(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, pid] of Object.entries({ ...this.live(), ...this.extra })) out[name] = cpuSecondsOf(pid, this.ticks) ?? 0;
    return out;
  }

  /** Run `work`; report its wall time, CPU seconds per process, and peak RSS per member and summed. */
  async phase<T>(work: () => Promise<T>): Promise<{ result: T; usage: GroupUsage }> {
    const cpu0 = this.cpuNow();
    const t0 = process.hrtime.bigint();
    this.phasePeak = new Map();
    this.phaseSum = 0;
    this.sample();
    const result = await work();
    this.sample();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu1 = this.cpuNow();
    const cpu = Object.fromEntries(Object.entries(cpu1).map(([k, v]) => [k, v - (cpu0[k] ?? v)]));
    const peakRssKb = Object.fromEntries([...this.phasePeak].map(([pid, kb]) => [this.members.get(pid)!.name, kb]));
    return { result, usage: { seconds, cpu, peakRssKb, peakSumKb: this.phaseSum } };
  }

  /** Stop sampling; the members with their peaks (VmHWM read last), in order of appearance. */
  stop(): { members: MemberPeak[]; peakSumKb: number } {
    this.sample();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    return { members: [...this.members.values()], peakSumKb: this.peakSumKb };
  }
}
