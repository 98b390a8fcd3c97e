// proxyctl commands of the container gateway: users and repositories of
// standalone mode (no foreman_url, where the gateway keeps its own), the
// embedded store's gc and verify, and sync from a main server. Each calls the
// gateway's admin API; what it answers decides the exit code: 1 refused or not
// found (the daemon's message on stderr), 2 daemon unreachable or failing
// (5xx), 64 usage (a bad name, an empty password, passwords that differ), 130
// interrupted at the password prompt. `proxyctl status` shows the on-demand
// counters and the last sync under the plugin's row (the `status` export).
import type { Command } from 'commander';
import { CliExit, type DaemonTarget, type PluginCli, type PluginCliContext, type PluginStatusHook } from '../../lib/plugins/api.ts';
import { USER_NAME, validRepositoryName } from './auth/standalone.ts';
import { progressLine, statusLine, summary, type RunView } from './sync/render.ts';

const ADMIN = '/container_gateway/admin';

function errorOf(data: unknown): string | undefined {
  const error = (data as { error?: unknown } | null | undefined)?.error;
  return typeof error === 'string' ? error : undefined;
}

const STANDALONE_HINT = 'is container_gateway running there, in standalone mode (no foreman_url)?';

async function call(ctx: PluginCliContext, cmd: Command, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, data?: unknown, timeout?: number, hint = STANDALONE_HINT): Promise<unknown> {
  const target = ctx.target(cmd);
  let res;
  try {
    res = await target.http.request({ method, url: path, ...(data === undefined ? {} : { data }), ...(timeout === undefined ? {} : { timeout }) });
  } catch (err) {
    throw new CliExit(2, `${target.url} is unreachable: ${(err as Error).message}`);
  }
  if (res.status >= 200 && res.status < 300) return res.data;
  const error = errorOf(res.data);
  if (res.status >= 500) throw new CliExit(2, `${method} ${path} answered ${res.status}${error ? `: ${error}` : ''}`);
  if (res.status === 404 && (error === undefined || error === 'Requested url was not found')) {
    throw new CliExit(1, `${target.url} has no container gateway admin API (${method} ${path} answered 404): ${hint}`);
  }
  throw new CliExit(1, error ?? `${method} ${path} answered ${res.status}`);
}

function checkUser(name: string): string {
  if (!USER_NAME.test(name)) throw new CliExit(64, `invalid user name '${name}': 1 to 64 of letters, digits, '.', '_', '@' and '-'`);
  return name;
}

function checkRepository(name: string): string {
  if (!validRepositoryName(name)) throw new CliExit(64, `invalid repository name '${name}'`);
  return name;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

/** GET .../verify streams one JSON line per blob, then {checked, bad}. */
async function verifyStore(ctx: PluginCliContext, cmd: Command, json: boolean): Promise<{ checked: number; bad: number }> {
  const target = ctx.target(cmd);
  let res;
  try {
    res = await target.http.request({ method: 'GET', url: `${ADMIN}/verify`, responseType: 'stream', timeout: 0 });
  } catch (err) {
    throw new CliExit(2, `${target.url} is unreachable: ${(err as Error).message}`);
  }
  if (res.status !== 200) {
    res.data.resume();
    throw new CliExit(res.status >= 500 ? 2 : 1, `GET ${ADMIN}/verify answered ${res.status}: is container_gateway running with content_backend: local?`);
  }
  const tty = !json && process.stderr.isTTY;
  let checked = 0;
  let bytes = 0;
  let summary: { checked: number; bad: number } | undefined;
  let rest = '';
  for await (const chunk of res.data as AsyncIterable<Buffer>) {
    rest += chunk.toString('utf8');
    const lines = rest.split('\n');
    rest = lines.pop()!;
    for (const line of lines.filter(Boolean)) {
      const record = JSON.parse(line) as { digest?: string; ok?: boolean; size?: number; checked?: number; bad?: number };
      if (json) process.stdout.write(`${line}\n`);
      if (record.digest === undefined) {
        summary = { checked: record.checked ?? 0, bad: record.bad ?? 0 };
        continue;
      }
      checked++;
      bytes += record.size ?? 0;
      if (!record.ok && !json) process.stdout.write(`BAD ${record.digest}\n`);
      // A progress line on a terminal; scripts get the plain lines.
      if (tty) process.stderr.write(`\rverifying: ${checked} blobs, ${(bytes / 1e9).toFixed(2)} GB`);
    }
  }
  if (tty) process.stderr.write('\n');
  if (!summary) throw new CliExit(2, 'the verification ended before its summary: the daemon may have stopped');
  return summary;
}

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
 * one ran); each left out where the daemon has none.
 */
export const status: PluginStatusHook = async (target) => {
  const [sync, onDemand] = await Promise.all([target.http.get(SYNC), target.http.get(`${ADMIN}/on_demand`)]);
  const lines: string[] = [];
  const data: Record<string, unknown> = {};
  if (onDemand.status === 200) {
    const view = onDemand.data as OnDemandView;
    data.on_demand = view;
    const line = onDemandLine(view);
    if (line) lines.push(line);
  }
  if (sync.status === 200) {
    const run = sync.data as RunView;
    data.last_sync = run;
    lines.push(statusLine(run));
  }
  return lines.length > 0 || Object.keys(data).length > 0 ? { lines, data } : undefined;
};

interface RepositoryRow {
  name: string;
  public: boolean;
  owner?: string;
}

/** The admin API path of one granted namespace (its '/' kept: namespaces are paths). */
function namespacePath(user: string, namespace: string): string {
  return `${ADMIN}/users/${encodeURIComponent(user)}/namespaces/${namespace.split('/').map(encodeURIComponent).join('/')}`;
}

/** What `users remove` did to the user's repositories: they stay, ownerless, and a new user of that name gets none. */
function removedText(name: string, orphaned: string[]): string {
  if (orphaned.length === 0) return `user '${name}' removed`;
  return [
    `user '${name}' removed; the repositories it owned now have no owner: ${orphaned.join(', ')}`,
    'Their content and visibility are unchanged: public ones stay public, private ones are readable only by mapped',
    `users; nobody can push to them. A user added later as '${name}' does not get them.`,
  ].join('\n');
}

const register: PluginCli = (program, ctx) => {
  const users = program
    .command('users')
    .description("standalone users of the container gateway (who may log in with 'podman login')");

  users
    .command('add')
    .description('add a user; the password is asked twice on a terminal, else read as one line of stdin')
    .argument('<name>', "user name: 1 to 64 of letters, digits, '.', '_', '@' and '-'")
    .option('--password-stdin', 'read the password as one line of stdin')
    .action(async (name: string, opts: { passwordStdin?: boolean }, cmd: Command) => {
      checkUser(name);
      const password = await ctx.readPassword(`Password for ${name}: `, { fromStdin: opts.passwordStdin === true, confirm: true });
      const data = await call(ctx, cmd, 'POST', `${ADMIN}/users`, { name, password });
      ctx.print(cmd, data, `user '${name}' added`);
    });

  users
    .command('remove')
    .description('remove a user (its tokens stop working; its repositories stay, without owner)')
    .argument('<name>', 'user name')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = (await call(ctx, cmd, 'DELETE', `${ADMIN}/users/${encodeURIComponent(name)}`)) as { orphaned?: string[] };
      ctx.print(cmd, data, removedText(name, data.orphaned ?? []));
    });

  users
    .command('list')
    .description('the users, one per line')
    .option('--json', 'machine-readable output')
    .action(async (_opts: unknown, cmd: Command) => {
      const data = (await call(ctx, cmd, 'GET', `${ADMIN}/users`)) as { users?: string[] };
      const names = data.users ?? [];
      ctx.print(cmd, names, names.length > 0 ? names.join('\n') : '(no users)');
    });

  // Repositories are created only under the user's own name or a namespace granted here.
  users
    .command('grant')
    .description("let a user create repositories under NAMESPACE/... (besides its own name)")
    .argument('<name>', 'user name')
    .argument('<namespace>', "a namespace, e.g. 'team' or 'team/web'")
    .action(async (name: string, namespace: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = await call(ctx, cmd, 'PUT', namespacePath(name, namespace));
      ctx.print(cmd, data, `user '${name}' may create repositories under ${namespace}/`);
    });

  users
    .command('revoke')
    .description('take a namespace back (repositories already created there keep their owner)')
    .argument('<name>', 'user name')
    .argument('<namespace>', 'a namespace granted before')
    .action(async (name: string, namespace: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = await call(ctx, cmd, 'DELETE', namespacePath(name, namespace));
      ctx.print(cmd, data, `user '${name}' may no longer create repositories under ${namespace}/`);
    });

  users
    .command('namespaces')
    .description('the namespaces granted to a user, one per line')
    .argument('<name>', 'user name')
    .option('--json', 'machine-readable output')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = (await call(ctx, cmd, 'GET', `${ADMIN}/users/${encodeURIComponent(name)}/namespaces`)) as { namespaces?: string[] };
      const list = data.namespaces ?? [];
      ctx.print(cmd, data, list.length > 0 ? list.join('\n') : '(none granted)');
    });

  const repos = program
    .command('repos')
    .description('repositories of the container gateway: created private on first push');

  repos
    .command('list')
    .description('every repository: name, public or private, owner')
    .option('--json', 'machine-readable output')
    .action(async (_opts: unknown, cmd: Command) => {
      const data = (await call(ctx, cmd, 'GET', `${ADMIN}/repositories`)) as { repositories?: RepositoryRow[] };
      const rows = data.repositories ?? [];
      const text = rows.length > 0
        ? table([['REPOSITORY', 'VISIBILITY', 'OWNER'], ...rows.map((r) => [r.name, r.public ? 'public' : 'private', r.owner ?? '-'])])
        : '(no repositories)';
      ctx.print(cmd, rows, text);
    });

  program
    .command('gc')
    .description('delete the content of repositories Katello unlisted, stored blobs no repository references, and abandoned uploads (safe while uploads run)')
    .option('--json', 'machine-readable output')
    .action(async (_opts: unknown, cmd: Command) => {
      const data = (await call(ctx, cmd, 'POST', `${ADMIN}/gc`, undefined, 0)) as { removed: number; bytes: number; repositories?: string[]; purged?: { uploads: number; bytes: number } };
      const purged = data.purged ?? { uploads: 0, bytes: 0 };
      const reclaimed = data.repositories?.length ? `\ncontent of unlisted repositories reclaimed: ${data.repositories.join(', ')}` : '';
      ctx.print(cmd, data, `${data.removed} blobs removed, ${(data.bytes / 1e6).toFixed(1)} MB freed\n${purged.uploads} abandoned uploads purged, ${(purged.bytes / 1e6).toFixed(1)} MB freed${reclaimed}`);
    });

  program
    .command('verify')
    .description('re-hash every stored blob against its digest; exit 1 if any is bad')
    .option('--json', 'JSON lines: one per blob, then the summary')
    .action(async (_opts: unknown, cmd: Command) => {
      // --json may come before or after the command name (`proxyctl --json verify`).
      const json = cmd.optsWithGlobals<{ json?: boolean }>().json === true;
      const summary = await verifyStore(ctx, cmd, json);
      if (!json) process.stdout.write(`${summary.checked} blobs checked, ${summary.bad} bad\n`);
      if (summary.bad > 0) process.exitCode = 1;
    });

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
      const json = cmd.optsWithGlobals<{ json?: boolean }>().json === true;
      const body = repositories.length > 0 ? { repositories } : {};
      const started = (await call(ctx, cmd, 'POST', SYNC, body, undefined, SYNC_HINT)) as { id: number; state: string };
      if (!opts.wait) {
        ctx.print(cmd, started, `sync #${started.id} started (follow it: proxyctl sync --wait, or proxyctl status)`);
        return;
      }
      const run = await followSync(ctx.target(cmd), started.id, json);
      if (!json) process.stdout.write(`${summary(run)}\n`);
      if (run.state !== 'succeeded') throw new CliExit(1, `sync #${run.id} ${run.state}: ${run.error ?? 'no reason given'}`);
    });

  for (const visibility of ['public', 'private'] as const) {
    repos
      .command(`set-${visibility}`)
      .description(visibility === 'public' ? 'let anyone pull the repository, anonymous clients included' : 'only its owner and mapped users may pull the repository')
      .argument('<name>', 'repository name, e.g. team/app')
      .action(async (name: string, _opts: unknown, cmd: Command) => {
        checkRepository(name);
        const path = `${ADMIN}/repositories/${name.split('/').map(encodeURIComponent).join('/')}/visibility`;
        const data = await call(ctx, cmd, 'PUT', path, { public: visibility === 'public' });
        ctx.print(cmd, data, `repository '${name}' is now ${visibility}`);
      });
  }
};

export default register;
