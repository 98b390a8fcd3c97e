// `proxyctl sync` (mirroring from the main server, followed with --wait) and
// the `status` hook: the last sync, on-demand counters and the node's name under the plugin's row.
import type { Command } from 'commander';
import { CliExit, type DaemonTarget, type PluginCli, type PluginStatusHook } from '../../../lib/plugins/api.ts';
import { progressLine, statusLine, summary, type RunView } from '../sync/render.ts';
import { ADMIN, call, checkRepository, errorOf } from './common.ts';

const SYNC = '/container_gateway/sync';
const SYNC_HINT = 'is container_gateway running there (a version with sync)?';
/** How often a waiting `proxyctl sync` asks for progress. */
const POLL_MS = 500;
/** A daemon that stays unreachable this many polls in a row ends the wait (exit 2). */
const POLL_FAILURES = 10;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One GET of a run while waiting; undefined when the daemon did not answer. */
async function pollRun(target: DaemonTarget, id: number): Promise<RunView | undefined> {
  let res;
  try {
    res = await target.http.get(`${SYNC}/${id}`);
  } catch {
    return undefined;
  }
  if (res.status === 200) return res.data as RunView;
  if (res.status >= 500) return undefined;
  throw new CliExit(1, `GET ${SYNC}/${id} answered ${res.status}${errorOf(res.data) ? `: ${errorOf(res.data)}` : ''}`);
}

/**
 * Follow a run to its end: a progress bar on a terminal (stderr, redrawn in
 * place), JSON lines with --json (one per change; the last has "final": true),
 * else only retry notices on stderr. The summary goes to stdout.
 */
async function followSync(target: DaemonTarget, id: number, json: boolean): Promise<RunView> {
  const tty = !json && process.stderr.isTTY === true;
  let last = '';
  let lastRetry = '';
  let misses = 0;
  for (;;) {
    const run = await pollRun(target, id);
    if (!run) {
      if (++misses >= POLL_FAILURES) {
        if (tty) process.stderr.write('\n');
        throw new CliExit(2, `${target.url} is unreachable while sync #${id} runs: it may have stopped (proxyctl sync again resumes)`);
      }
      await sleep(POLL_MS * 2);
      continue;
    }
    misses = 0;
    const done = run.state !== 'running';
    const { pid: _pid, ...view } = run as RunView & { pid?: number };
    const line = JSON.stringify(done ? { ...view, final: true } : view);
    if (json && line !== last) process.stdout.write(`${line}\n`);
    last = line;
    if (tty) process.stderr.write(`\r${progressLine(run, Math.max(20, (process.stderr.columns || 80) - 1))}\x1b[K${done ? '\n' : ''}`);
    else if (!json && run.retrying && run.retrying.message !== lastRetry) process.stderr.write(`sync #${id}: ${run.retrying.message}\n`);
    lastRetry = run.retrying?.message ?? '';
    if (done) return run;
    await sleep(POLL_MS);
  }
}

interface OnDemandView {
  download_policy: string;
  hits?: number;
  misses?: number;
  bytes_fetched?: number;
}

/** e.g. "on demand: 120 hits, 14 misses, 1.27 GB fetched since start". */
function onDemandLine(v: OnDemandView): string | undefined {
  if (v.hits === undefined) return undefined;
  const policy = v.download_policy === 'streamed' ? 'streamed' : 'on demand';
  return `${policy}: ${v.hits} hits, ${v.misses ?? 0} misses, ${((v.bytes_fetched ?? 0) / 1e9).toFixed(2)} GB fetched since start`;
}

/**
 * `proxyctl status`: under container_gateway's row, the on-demand counters
 * (where the policy fetches from the main server) and the last sync (where
 * one ran), each left out where the daemon has none, then the node's name.
 */
export const status: PluginStatusHook = async (target) => {
  const [node, sync, onDemand] = await Promise.all([target.http.get(`${ADMIN}/node`), target.http.get(SYNC), target.http.get(`${ADMIN}/on_demand`)]);
  const lines: string[] = [];
  const data: Record<string, unknown> = {};
  if (sync.status === 200) {
    const run = sync.data as RunView;
    data.last_sync = run;
    lines.push(statusLine(run));
  }
  if (onDemand.status === 200) {
    const view = onDemand.data as OnDemandView;
    data.on_demand = view;
    const line = onDemandLine(view);
    if (line) lines.push(line);
  }
  if (node.status === 200) {
    const name = (node.data as { node_name?: unknown }).node_name;
    if (typeof name === 'string') {
      data.node_name = name;
      lines.push(`node: ${name}`);
    }
  }
  return lines.length > 0 || Object.keys(data).length > 0 ? { lines, data } : undefined;
};

export const registerSync: PluginCli = (program, ctx) => {
  program
    .command('sync')
    .description("mirror the main server's registry into the embedded store: its catalog for this proxy, or the REPOs")
    .argument('[repo...]', 'repository names, e.g. org/product/app (default: every repository the main server lists for this proxy)')
    .option('--wait', 'follow the run to its end: a progress bar on a terminal; exit 0 succeeded, 1 failed')
    .option('--json', 'machine-readable output (with --wait: JSON lines, one per progress change, the last with "final": true)')
    .addHelpText('after', [
      '',
      'Tags, manifests and blobs are copied; blobs the store has are not downloaded again; tags gone from the',
      'main server are removed here. A run stopped midway (daemon restart) resumes when started again.',
      'One run at a time. Needs content_backend: local and foreman_url; main_registry_url, sync_username,',
      'sync_password, sync_concurrency and sync_retries are read from the container_gateway settings.',
      '',
      'Exit codes: 0 started (or, with --wait, succeeded), 1 refused or failed or interrupted (the reason on',
      'stderr), 2 daemon unreachable, 64 usage.',
    ].join('\n'))
    .action(async (repositories: string[], opts: { wait?: boolean; json?: boolean }, cmd: Command) => {
      repositories.forEach(checkRepository);
      const json = ctx.json(cmd);
      const body = repositories.length > 0 ? { repositories } : {};
      const started = (await call(ctx, cmd, 'POST', SYNC, body, undefined, SYNC_HINT)) as { id: number; state: string };
      if (!opts.wait) {
        ctx.print(cmd, started, `sync #${started.id} started (follow it: proxyctl sync --wait, or proxyctl status)`);
        return;
      }
      const run = await followSync(ctx.target(cmd), started.id, json);
      if (!json) process.stdout.write(`${summary(run)}\n`);
      // With --json the run's last line (state, error) is the answer: the exit code says the rest.
      if (run.state !== 'succeeded') throw new CliExit(1, `sync #${run.id} ${run.state}: ${run.error ?? 'no reason given'}`, json);
    });
};
