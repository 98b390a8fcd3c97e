// Pieces of section 5 of the benchmark (test/bench/database.ts): standalone
// gateways with `workers: W` over HTTP and HTTPS whose database is one
// setting, the processes they and the PostgreSQL server are made of (for CPU
// seconds), HAProxy's per-server session counts, and the section's table.
// Kept apart so that database.ts reads as the measurement it is.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { freePort } from '../helpers/proxyd.ts';
import type { TestPki } from '../helpers/pki.ts';
import type { RunningHaproxy } from '../helpers/haproxy.ts';
import { startGateway, type RunningGateway } from './gateway.ts';
import { childrenOf, cpuSecondsOf, request, type Row } from './measure.ts';

/** Where the section hands what it starts, so that the caller stops it even on a failure or Ctrl-C. */
export interface Keeper {
  /** A process: SIGKILLed on a hard exit, `stop` run at cleanup (stop is safe to call twice). */
  adopt(what: string, proc: ChildProcess, stop: () => Promise<unknown>): void;
  /** Cluster workers of a daemon (children of it): SIGKILLed on a hard exit if still there. */
  workers(pids: number[]): void;
  /** Synchronous undo on a hard exit, and at cleanup (the PostgreSQL server: pg_ctl stop). */
  atExit(what: string, fn: () => void): void;
}

export interface Node {
  gw: RunningGateway;
  name: string;
  httpsUrl: string;
  /** host:port of the HTTPS listener (HAProxy's server line). */
  httpsAddress: string;
  workers: number[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function check(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/**
 * A standalone gateway (embedded store) with W workers on HTTP and HTTPS.
 * `database` is the only thing that differs between the gateways compared:
 * sqlite_db_path, or db_connection_string. With `createSchema`, a one-worker
 * start creates the schema first (workers opening a new database at once
 * each run its migrations, as section 2 notes).
 */
export async function startNode(o: { name: string; workers: number; pki: TestPki; storage: string; database: Record<string, unknown>; createSchema: boolean; keep: Keeper; progress(msg: string): void; nodeArgs?: string[] }): Promise<Node> {
  const httpsPort = await freePort();
  const settings = { log_level: 'WARN', https_port: httpsPort, ssl_certificate: o.pki.server.cert, ssl_private_key: o.pki.server.key, ssl_ca_file: o.pki.ca };
  const plugins = { container_gateway: { enabled: true, storage_path: o.storage, node_name: o.name, ...o.database } };
  if (o.createSchema && o.workers > 1) {
    const init = await startGateway({ settings: { ...settings, workers: 1 }, plugins, readyTimeoutMs: 60_000 });
    o.keep.adopt(`proxyd ${o.name} (schema)`, init.proc, () => init.stop());
    const code = await init.stop();
    check(code === 0, `the one-worker start of ${o.name} that creates the schema exited with ${code}:\n${init.output()}`);
  }
  const gw = await startGateway({ settings: { ...settings, workers: o.workers }, plugins, readyTimeoutMs: 60_000, ...(o.nodeArgs ? { nodeArgs: o.nodeArgs } : {}) });
  o.keep.adopt(`proxyd ${o.name}`, gw.proc, () => gw.stop());
  const deadline = Date.now() + 60_000;
  let workers: number[] = [];
  for (;;) {
    workers = o.workers > 1 ? childrenOf(gw.pid) : [];
    if (workers.length >= (o.workers > 1 ? o.workers : 0)) break;
    check(Date.now() < deadline, `proxyd ${o.name} (pid ${gw.pid}) has ${workers.length} workers after 60 s, not ${o.workers}`);
    await sleep(100);
  }
  o.keep.workers(workers);
  // Connections are dealt to the workers in turn: each must have its plugins running.
  const ready: number[] = [];
  for (let i = 0; i < 4 * o.workers; i++) ready.push((await request('GET', `${gw.httpUrl}/readyz`, {})).status);
  check(ready.every((s) => s === 200), `GET /readyz of ${o.name} on ${4 * o.workers} new connections answered ${ready.join(' ')}: a worker's plugins are not all running`);
  o.progress(`proxyd ${o.name} on ${gw.httpUrl} and https://127.0.0.1:${httpsPort}: primary pid ${gw.pid}, workers ${workers.join(', ') || '(none)'}`);
  return { gw, name: o.name, httpsUrl: `https://127.0.0.1:${httpsPort}`, httpsAddress: `127.0.0.1:${httpsPort}`, workers };
}

/** pids of a node: its primary and workers. */
export const pidsOf = (n: Node) => [n.gw.pid, ...n.workers];

/** The PostgreSQL server's processes: the postmaster and its children (a backend per pooled connection). */
export function postgresPids(dataDir: string): number[] {
  const postmaster = Number(readFileSync(`${dataDir}/postmaster.pid`, 'utf8').split('\n')[0]);
  return [postmaster, ...childrenOf(postmaster)];
}

/** CPU seconds of a set of processes now (those gone count 0). */
export function cpuOf(pids: number[], ticks: number): Map<number, number> {
  return new Map(pids.map((p) => [p, cpuSecondsOf(p, ticks) ?? 0]));
}

/** CPU seconds used since `before` by the processes of `pids` (a process new since then counts in full). */
export function cpuSince(before: Map<number, number>, pids: number[], ticks: number): number {
  return pids.reduce((sum, p) => sum + Math.max(0, (cpuSecondsOf(p, ticks) ?? before.get(p) ?? 0) - (before.get(p) ?? 0)), 0);
}

/** Sessions HAProxy has sent to each server of its backend so far (`show stat` stot), by name. */
export async function sessionsByServer(h: RunningHaproxy): Promise<Record<string, number>> {
  const csv = await h.command('show stat');
  const [header, ...rows] = csv.replace(/^# /, '').trim().split('\n');
  const cols = header!.split(',');
  const out: Record<string, number> = {};
  for (const row of rows) {
    const f = row.split(',');
    if (f[cols.indexOf('pxname')] === h.backend && f[cols.indexOf('svname')] !== 'BACKEND') out[f[cols.indexOf('svname')]!] = Number(f[cols.indexOf('stot')]);
  }
  return out;
}

const fmt = (v: number | undefined, digits = 0) => (v === undefined ? '-' : v.toFixed(digits));

/** The rows as run.ts prints its tables: metric, the two sides, ratio, target, result. */
export function tableOf(rows: Row[], columns: [string, string]): string {
  const cells = [
    ['metric', ...columns, 'ratio', 'target', 'result'],
    ...rows.map((r) => {
      const d = r.unit === 'ms' || r.unit === 's' ? 2 : 0;
      return [`${r.metric} (${r.unit})`, fmt(r.direct, d), fmt(r.gateway, d), r.ratio === undefined ? '-' : `${r.ratio.toFixed(2)}x`, r.target ?? '-', r.pass === undefined ? 'info' : r.pass ? 'met' : 'NOT met'];
    }),
  ];
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  const line = (row: string[]) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}
