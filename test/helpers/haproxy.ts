// Real HAProxy (Debian's haproxy) in front of test nodes, run in the
// foreground from the shipped example extra/haproxy/proxyd.cfg with only
// addresses and paths substituted, so that the example is what the tests
// exercise: its timeouts, balance, retries and health checks. Stopped by PID.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, ROOT } from './proxyd.ts';

export const HAPROXY_EXAMPLE = join(ROOT, 'extra/haproxy/proxyd.cfg');
const HAPROXY = '/usr/sbin/haproxy';

export interface HaproxyNode {
  /** The `server` name (also what `show stat` calls it). */
  name: string;
  /** host:port of the node's HTTPS listener. */
  address: string;
}

export interface HaproxyOptions {
  nodes: HaproxyNode[];
  /** The CA that signed the nodes' certificates (the health checks verify them). */
  ca: string;
}

function replaceOnce(text: string, pattern: RegExp, by: string): string {
  if (!new RegExp(pattern.source, pattern.flags.replace('g', '')).test(text)) throw new Error(`${HAPROXY_EXAMPLE} no longer has a line matching ${pattern}: update test/helpers/haproxy.ts`);
  return text.replace(pattern, by);
}

/**
 * The example with this run's addresses: the frontend's bind, the CA file,
 * the stats socket, and one server line per node in place of the example's.
 * chroot/user/group (where the system's service puts the process) are left
 * out, and logs go to stderr; nothing else changes.
 */
export function configFromExample(example: string, o: { port: number; ca: string; socket: string; nodes: HaproxyNode[] }): string {
  let cfg = example;
  cfg = replaceOnce(cfg, /^ *(chroot|user|group) .*\n/gm, '');
  cfg = replaceOnce(cfg, /^( *)log \/dev\/log (.*)$/m, '$1log stderr format short $2');
  cfg = replaceOnce(cfg, /^( *)stats socket \S+/m, `$1stats socket ${o.socket}`);
  cfg = replaceOnce(cfg, /^( *)bind :443$/m, `$1bind 127.0.0.1:${o.port}`);
  cfg = replaceOnce(cfg, /ca-file \S+/, `ca-file ${o.ca}`);
  const servers = /^( *)server \S+ \S+\n?/gm;
  const indent = /^( *)server /m.exec(cfg)?.[1] ?? '    ';
  cfg = replaceOnce(cfg, servers, '');
  return `${cfg.trimEnd()}\n${o.nodes.map((n) => `${indent}server ${n.name} ${n.address}`).join('\n')}\n`;
}

export type ServerStatus = 'UP' | 'DOWN' | string;

export class RunningHaproxy {
  private log = '';

  private constructor(
    readonly proc: ChildProcess,
    readonly port: number,
    readonly dir: string,
    readonly socket: string,
    readonly backend: string,
  ) {
    proc.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
    proc.stdout!.on('data', (d: Buffer) => (this.log += d.toString()));
  }

  /** What HAProxy logged so far (its startup, health-check transitions, one line per connection). */
  output(): string {
    return this.log;
  }

  /** host:port of the frontend, as registry clients name it. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(o: HaproxyOptions): Promise<RunningHaproxy> {
    const dir = mkdtempSync(join(tmpdir(), 'proxyd-haproxy-'));
    const port = await freePort();
    const socket = join(dir, 'admin.sock');
    const example = readFileSync(HAPROXY_EXAMPLE, 'utf8');
    const backend = /^backend (\S+)/m.exec(example)?.[1];
    if (!backend) throw new Error(`${HAPROXY_EXAMPLE} has no backend section`);
    const cfgFile = join(dir, 'haproxy.cfg');
    writeFileSync(cfgFile, configFromExample(example, { port, ca: o.ca, socket, nodes: o.nodes }));
    const check = spawnSyncCheck(cfgFile);
    if (check) throw new Error(`haproxy -c rejects the config made from ${HAPROXY_EXAMPLE}:\n${check}`);
    const proc = spawn(HAPROXY, ['-f', cfgFile, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const h = new RunningHaproxy(proc, port, dir, socket, backend);
    try {
      await h.waitFor(Object.fromEntries(o.nodes.map((n) => [n.name, 'UP'])), 20_000);
    } catch (err) {
      await h.stop();
      throw err;
    }
    return h;
  }

  /** One command on the stats socket; its answer. */
  command(cmd: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const conn = net.connect(this.socket);
      let out = '';
      conn.on('data', (d) => (out += d.toString()));
      conn.on('error', reject);
      conn.on('end', () => resolve(out));
      conn.end(`${cmd}\n`);
    });
  }

  /** Each server's status as HAProxy's health checks see it (UP, DOWN, UP 1/2, ...), by name. */
  async states(): Promise<Record<string, ServerStatus>> {
    return Object.fromEntries(Object.entries(await this.servers()).map(([name, s]) => [name, s.status]));
  }

  /** Each server's row of `show stat`: its status and its connections open now (scur), by name. */
  async servers(): Promise<Record<string, { status: ServerStatus; sessions: number }>> {
    const csv = await this.command('show stat');
    const [header, ...rows] = csv.replace(/^# /, '').trim().split('\n');
    const cols = header!.split(',');
    const at = (f: string[], col: string) => f[cols.indexOf(col)] ?? '';
    const out: Record<string, { status: ServerStatus; sessions: number }> = {};
    for (const row of rows) {
      const f = row.split(',');
      if (at(f, 'pxname') === this.backend && at(f, 'svname') !== 'BACKEND') out[at(f, 'svname')] = { status: at(f, 'status'), sessions: Number(at(f, 'scur')) };
    }
    return out;
  }

  /** Wait until every named server has the status given (exactly: 'UP' is not 'UP 1/2'). */
  async waitFor(wanted: Record<string, ServerStatus>, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: Record<string, ServerStatus> = {};
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`haproxy exited (${this.proc.exitCode}): ${this.log}`);
      last = await this.states().catch(() => ({}));
      if (Object.entries(wanted).every(([name, status]) => last[name] === status)) return;
      if (Date.now() > deadline) throw new Error(`haproxy servers are ${JSON.stringify(last)}, not ${JSON.stringify(wanted)} after ${timeoutMs} ms:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Stop the process (by its PID), wait for it to exit, remove its config and socket. */
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** `haproxy -c -f cfg`: undefined when valid, else what it said. */
function spawnSyncCheck(cfgFile: string): string | undefined {
  const r = spawnSync(HAPROXY, ['-c', '-f', cfgFile], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? undefined : `${r.stdout}${r.stderr}`;
}
