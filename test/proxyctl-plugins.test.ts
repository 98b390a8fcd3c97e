// proxyctl's plugin commands (lib/cli/plugin-commands.ts): each plugin folder's
// optional cli.js / cli.ts adds subcommands; a broken one is skipped with a
// reason and takes nothing else down. (End to end through bin/proxyctl with the
// container gateway's commands: test/standalone-admin.test.ts.)
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import t from 'tap';
import { loadPluginCommands } from '../lib/cli/plugin-commands.ts';
import type { PluginCliContext } from '../lib/plugins/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'proxyctl-plugins-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
// ESM, as the app's own plugins are (its package.json says "type": "module").
writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');

function plugin(name: string, files: Record<string, string>): void {
  mkdirSync(join(dir, name));
  for (const [file, text] of Object.entries(files)) writeFileSync(join(dir, name, file), text);
}

const INDEX = { 'index.js': 'export default {};\n' };
plugin('a_good', {
  ...INDEX,
  'cli.js': `export default (program, ctx) => {
    program.command('alpha').option('--json').action((_o, cmd) => ctx.print(cmd, { url: ctx.target(cmd).url }, 'alpha ran'));
  };\n`,
});
plugin('b_throws_at_import', { ...INDEX, 'cli.js': "throw new Error('boom at import');\n" });
plugin('c_not_a_function', { ...INDEX, 'cli.js': 'export default 42;\n' });
plugin('d_throws_while_registering', {
  ...INDEX,
  'cli.js': "export default (program) => { program.command('delta'); program.command('delta2'); throw new Error('half done'); };\n",
});
plugin('e_typescript', {
  'index.ts': 'export default {};\n',
  'cli.ts': `import type { Command } from 'commander';
    export default (program: Command): void => { program.command('echo').argument('<word>').action((word: string) => { (globalThis as { echoed?: string }).echoed = word; }); };\n`,
});
plugin('f_no_cli', INDEX);
plugin('g_clashes', { ...INDEX, 'cli.js': "export default (program) => { program.command('status'); };\n" });
mkdirSync(join(dir, 'h_not_a_plugin'));
writeFileSync(join(dir, 'h_not_a_plugin', 'cli.js'), "throw new Error('never imported: no index');\n");

t.test('plugin cli files add commands; broken ones are skipped with a reason', async (t) => {
  const printed: Array<{ json: unknown; text: string }> = [];
  const ctx: PluginCliContext = {
    target: () => ({ url: 'http://daemon.test', http: undefined as never }),
    print: (_cmd, json, text) => void printed.push({ json, text }),
    json: () => false,
    readPassword: async () => 'unused',
  };
  const program = new Command('proxyctl').exitOverride();
  program.command('status');
  const { problems } = await loadPluginCommands(program, ctx, [dir, join(dir, 'missing')]);

  t.same(program.commands.map((c) => c.name()), ['status', 'alpha', 'echo'], 'good plugins in folder order; half-registered commands removed');
  t.equal(problems.length, 4);
  t.match(problems[0], /b_throws_at_import\/cli\.js are unavailable: boom at import/);
  t.match(problems[1], /c_not_a_function\/cli\.js are unavailable: its default export is not a function/);
  t.match(problems[2], /d_throws_while_registering\/cli\.js are unavailable: half done/);
  t.match(problems[3], /g_clashes\/cli\.js are unavailable: .*status/);

  await program.parseAsync(['alpha'], { from: 'user' });
  t.same(printed, [{ json: { url: 'http://daemon.test' }, text: 'alpha ran' }], 'the context reaches plugin commands');
  await program.parseAsync(['echo', 'hello'], { from: 'user' });
  t.equal((globalThis as { echoed?: string }).echoed, 'hello', 'a TypeScript cli file');
});
