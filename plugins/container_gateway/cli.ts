// proxyctl commands of the container gateway in standalone mode (no
// foreman_url), where the gateway keeps its own users and repositories:
//
//   proxyctl users add NAME [--password-stdin]   password typed twice without echo on a terminal;
//                                                one line of stdin with --password-stdin or when
//                                                stdin is not a terminal
//   proxyctl users remove NAME
//   proxyctl users list [--json]
//   proxyctl repos list [--json]                 name, public/private, owner
//   proxyctl repos set-public NAME
//   proxyctl repos set-private NAME
//
// Each calls the gateway's admin API (routes/admin.ts; trusted host + client
// certificate, JSON bodies, errors as {"error": "..."}):
//
//   GET    /container_gateway/admin/users                         200 {"users":[...]}
//   POST   /container_gateway/admin/users  {"name","password"}    201 {"user"} | 400 | 409
//   DELETE /container_gateway/admin/users/NAME                    200 {"user","removed":true} | 404
//   GET    /container_gateway/admin/repositories                  200 {"repositories":[{"name","public","owner"?}]}
//   PUT    /container_gateway/admin/repositories/NAME/visibility  {"public":bool}  200 {"name","public"} | 404
//
// Exit codes: 0 done, 1 refused or not found (the daemon's message on
// stderr), 2 daemon unreachable or failing (5xx), 64 usage (a bad name, an
// empty password, passwords that differ), 130 interrupted at the prompt.
import type { Command } from 'commander';
import type { PluginCli, PluginCliContext } from '../../lib/cli/plugin-commands.ts';
import { USER_NAME, validRepositoryName } from './auth/standalone.ts';

const ADMIN = '/container_gateway/admin';

/** Ends a command with this exit code and message. */
class Exit extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

function action<A extends unknown[]>(work: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await work(...args);
    } catch (err) {
      if (!(err instanceof Exit)) throw err;
      process.stderr.write(`proxyctl: ${err.message}\n`);
      process.exitCode = err.code;
    }
  };
}

function errorOf(data: unknown): string | undefined {
  const error = (data as { error?: unknown } | null | undefined)?.error;
  return typeof error === 'string' ? error : undefined;
}

async function call(ctx: PluginCliContext, cmd: Command, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, data?: unknown, timeout?: number): Promise<unknown> {
  const target = ctx.target(cmd);
  let res;
  try {
    res = await target.http.request({ method, url: path, ...(data === undefined ? {} : { data }), ...(timeout === undefined ? {} : { timeout }) });
  } catch (err) {
    throw new Exit(2, `${target.url} is unreachable: ${(err as Error).message}`);
  }
  if (res.status >= 200 && res.status < 300) return res.data;
  const error = errorOf(res.data);
  if (res.status >= 500) throw new Exit(2, `${method} ${path} answered ${res.status}${error ? `: ${error}` : ''}`);
  if (res.status === 404 && (error === undefined || error === 'Requested url was not found')) {
    throw new Exit(1, `${target.url} has no container gateway admin API (${method} ${path} answered 404): is container_gateway running there, in standalone mode (no foreman_url)?`);
  }
  throw new Exit(1, error ?? `${method} ${path} answered ${res.status}`);
}

function checkUser(name: string): string {
  if (!USER_NAME.test(name)) throw new Exit(64, `invalid user name '${name}': 1 to 64 of letters, digits, '.', '_', '@' and '-'`);
  return name;
}

function checkRepository(name: string): string {
  if (!validRepositoryName(name)) throw new Exit(64, `invalid repository name '${name}'`);
  return name;
}

/** One line of a stream (without its line end); the whole stream if it has no newline. */
function readLine(stream: NodeJS.ReadStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const cleanup = () => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.pause();
    };
    const onData = (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        cleanup();
        resolve(buf.slice(0, nl).replace(/\r$/, ''));
      }
    };
    const onEnd = () => {
      cleanup();
      resolve(buf.replace(/\r$/, ''));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(new Exit(64, `cannot read the password from stdin: ${err.message}`));
    };
    stream.setEncoding('utf8');
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.resume();
  });
}

/** Read a line from the terminal without echoing it. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let value = '';
    /** Inside an escape sequence (arrow keys...): ESC, then '[' and parameters up to a final byte. */
    let escape: '' | 'esc' | 'csi' = '';
    const finish = (err?: Exit) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (escape === 'esc') {
          escape = ch === '[' || ch === 'O' ? 'csi' : '';
          continue;
        }
        if (escape === 'csi') {
          if (ch >= '@' && ch <= '~') escape = '';
          continue;
        }
        if (ch === '\r' || ch === '\n') return finish();
        if (ch === '\u0003') return finish(new Exit(130, 'interrupted'));
        if (ch === '\u0004') return value === '' ? finish(new Exit(64, 'no password given')) : finish();
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch === '\u0015') value = '';
        else if (ch === '\u001b') escape = 'esc';
        else if (ch >= ' ') value += ch;
      }
    };
    stdin.setEncoding('utf8');
    stdin.setRawMode(true);
    stdin.on('data', onData);
    stdin.resume();
  });
}

async function readPassword(user: string, fromStdin: boolean): Promise<string> {
  let password: string;
  if (fromStdin || !process.stdin.isTTY) {
    password = await readLine(process.stdin);
  } else {
    password = await promptHidden(`Password for ${user}: `);
    if (password !== '' && (await promptHidden('Retype the password: ')) !== password) throw new Exit(64, 'the passwords do not match');
  }
  if (password === '') throw new Exit(64, 'the password must not be empty');
  return password;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

const STORE = '/container_gateway/admin';

/** GET .../verify streams one JSON line per blob, then {checked, bad}. */
async function verifyStore(ctx: PluginCliContext, cmd: Command, json: boolean): Promise<{ checked: number; bad: number }> {
  const target = ctx.target(cmd);
  let res;
  try {
    res = await target.http.request({ method: 'GET', url: `${STORE}/verify`, responseType: 'stream', timeout: 0 });
  } catch (err) {
    throw new Exit(2, `${target.url} is unreachable: ${(err as Error).message}`);
  }
  if (res.status !== 200) {
    res.data.resume();
    throw new Exit(res.status >= 500 ? 2 : 1, `GET ${STORE}/verify answered ${res.status}: is container_gateway running with content_backend: local?`);
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
  if (!summary) throw new Exit(2, 'the verification ended before its summary: the daemon may have stopped');
  return summary;
}

interface RepositoryRow {
  name: string;
  public: boolean;
  owner?: string;
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
    .action(action(async (name: string, opts: { passwordStdin?: boolean }, cmd: Command) => {
      checkUser(name);
      const password = await readPassword(name, opts.passwordStdin === true);
      const data = await call(ctx, cmd, 'POST', `${ADMIN}/users`, { name, password });
      ctx.print(cmd, data, `user '${name}' added`);
    }));

  users
    .command('remove')
    .description('remove a user (its tokens stop working)')
    .argument('<name>', 'user name')
    .action(action(async (name: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = await call(ctx, cmd, 'DELETE', `${ADMIN}/users/${encodeURIComponent(name)}`);
      ctx.print(cmd, data, `user '${name}' removed`);
    }));

  users
    .command('list')
    .description('the users, one per line')
    .option('--json', 'machine-readable output')
    .action(action(async (_opts: unknown, cmd: Command) => {
      const data = (await call(ctx, cmd, 'GET', `${ADMIN}/users`)) as { users?: string[] };
      const names = data.users ?? [];
      ctx.print(cmd, names, names.length > 0 ? names.join('\n') : '(no users)');
    }));

  const repos = program
    .command('repos')
    .description('repositories of the container gateway: created private on first push');

  repos
    .command('list')
    .description('every repository: name, public or private, owner')
    .option('--json', 'machine-readable output')
    .action(action(async (_opts: unknown, cmd: Command) => {
      const data = (await call(ctx, cmd, 'GET', `${ADMIN}/repositories`)) as { repositories?: RepositoryRow[] };
      const rows = data.repositories ?? [];
      const text = rows.length > 0
        ? table([['REPOSITORY', 'VISIBILITY', 'OWNER'], ...rows.map((r) => [r.name, r.public ? 'public' : 'private', r.owner ?? '-'])])
        : '(no repositories)';
      ctx.print(cmd, rows, text);
    }));

  program
    .command('gc')
    .description('delete stored blobs that no repository references (safe while uploads run)')
    .option('--json', 'machine-readable output')
    .action(action(async (_opts: unknown, cmd: Command) => {
      const data = (await call(ctx, cmd, 'POST', `${STORE}/gc`, undefined, 0)) as { removed: number; bytes: number };
      ctx.print(cmd, data, `${data.removed} blobs removed, ${(data.bytes / 1e6).toFixed(1)} MB freed`);
    }));

  program
    .command('verify')
    .description('re-hash every stored blob against its digest; exit 1 if any is bad')
    .option('--json', 'JSON lines: one per blob, then the summary')
    .action(action(async (opts: { json?: boolean }, cmd: Command) => {
      const summary = await verifyStore(ctx, cmd, opts.json === true);
      if (!opts.json) process.stdout.write(`${summary.checked} blobs checked, ${summary.bad} bad\n`);
      if (summary.bad > 0) process.exitCode = 1;
    }));

  for (const visibility of ['public', 'private'] as const) {
    repos
      .command(`set-${visibility}`)
      .description(visibility === 'public' ? 'let anyone pull the repository, anonymous clients included' : 'only its owner and mapped users may pull the repository')
      .argument('<name>', 'repository name, e.g. team/app')
      .action(action(async (name: string, _opts: unknown, cmd: Command) => {
        checkRepository(name);
        const path = `${ADMIN}/repositories/${name.split('/').map(encodeURIComponent).join('/')}/visibility`;
        const data = await call(ctx, cmd, 'PUT', path, { public: visibility === 'public' });
        ctx.print(cmd, data, `repository '${name}' is now ${visibility}`);
      }));
  }
};

export default register;
