// proxyctl: the operator's command line for a running proxyd. Its own
// commands, then those of every plugin folder's cli file (lib/plugins/cli.ts),
// enabled or not: the daemon may run with other settings than this shell sees.
// Exit codes: 0 healthy / done, 1 degraded (or, for plugin commands, refused /
// not found), 2 unreachable or failed, 64 usage.
import { join } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { VERSION } from '../daemon.ts';
import { CliExit, type DaemonTarget } from '../plugins/cli.ts';
import { CODE_ROOT, DEFAULT_SETTINGS_FILE, loadGlobalSettings, locateSettings } from '../settings/global.ts';
import { completionScript } from './completion.ts';
import { daemonTarget } from './daemon-client.ts';
import { readPassword } from './password-prompt.ts';
import { loadPluginCommands } from './plugin-commands.ts';
import { collectStatus, EXIT, renderStatus } from './status.ts';

interface GlobalOpts {
  settings?: string;
  url?: string;
  timeout: number;
  json?: boolean;
}

const program = new Command('proxyctl')
  .description("Operate a running proxyd: status, features, and the plugins' commands")
  .version(VERSION)
  .option('-s, --settings <file>', `proxyd's global settings file (default: $PROXYD_SETTINGS, else ${DEFAULT_SETTINGS_FILE}, else embedded defaults)`)
  .option('-u, --url <url>', "the daemon's URL (default: from the settings file)")
  .addOption(new Option('-t, --timeout <seconds>', 'request timeout').default(10).argParser((v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('--timeout must be a positive number of seconds.');
    return n;
  }))
  .option('--json', 'machine-readable output')
  .addHelpText('after', '\nExit codes: 0 healthy or done, 1 degraded (a plugin is not running) or refused/not found, 2 daemon unreachable or request failed, 64 usage error.')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

function target(cmd: Command): DaemonTarget {
  const o = cmd.optsWithGlobals<GlobalOpts>();
  const global = loadGlobalSettings(locateSettings(o.settings));
  return daemonTarget(global, { url: o.url, timeoutMs: o.timeout * 1000 });
}

/** --json, before or after the command name: every command reads it here. */
function wantsJson(cmd: Command): boolean {
  return cmd.optsWithGlobals<GlobalOpts>().json === true;
}

function print(cmd: Command, json: unknown, text: string): void {
  process.stdout.write(wantsJson(cmd) ? `${JSON.stringify(json, null, 2)}\n` : `${text}\n`);
}

/** Every command that runs takes --json (shown in its --help), whether or not it declared it. */
function addJsonEverywhere(cmd: Command): void {
  for (const sub of cmd.commands as Command[]) {
    if (sub.commands.length > 0) addJsonEverywhere(sub);
    else if (!sub.options.some((o) => o.long === '--json')) sub.option('--json', 'machine-readable output');
  }
}

program
  .command('status')
  .description("daemon reachability, version, and each plugin's state, listeners and failure message")
  .option('--json', 'machine-readable output')
  .action(async (_opts, cmd: Command) => {
    const report = await collectStatus(target(cmd), plugins.statusHooks);
    print(cmd, report, renderStatus(report));
    process.exitCode = EXIT[report.status];
  });

program
  .command('features')
  .description('the running features, as Foreman sees them (GET /features)')
  .option('--json', 'machine-readable output')
  .action(async (_opts, cmd: Command) => {
    const t = target(cmd);
    const res = await t.http.get('/features');
    if (res.status !== 200) throw new Error(`GET ${t.url}/features answered ${res.status}`);
    print(cmd, res.data, (res.data as string[]).join('\n'));
  });

// The app's own plugins: their cli files come with the code, whatever the settings say.
const plugins = await loadPluginCommands(program, { target, print, readPassword, json: wantsJson }, [join(CODE_ROOT, 'plugins')]);
for (const problem of plugins.problems) process.stderr.write(`proxyctl: warning: ${problem}\n`);

program
  .command('completion')
  .description('print a shell completion script, generated from the commands above (bash: source <(proxyctl completion bash))')
  .argument('<shell>', 'bash or zsh')
  .action((shell: string) => {
    if (shell !== 'bash' && shell !== 'zsh') throw new CliExit(64, `no completion for '${shell}': bash or zsh`);
    process.stdout.write(completionScript(program, shell));
  });
addJsonEverywhere(program);

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version exit 0; usage mistakes get 64 (EX_USAGE).
    process.exitCode = err.exitCode === 0 ? 0 : 64;
  } else {
    process.stderr.write(`proxyctl: ${(err as Error).message}\n`);
    process.exitCode = err instanceof CliExit ? err.code : EXIT.unreachable;
    // With --json a script also gets the failure as JSON on stdout.
    const answered = err instanceof CliExit && err.answered;
    if (!answered && (program.opts<GlobalOpts>().json || process.argv.includes('--json'))) process.stdout.write(`${JSON.stringify({ error: (err as Error).message, exit: process.exitCode })}\n`);
  }
}
