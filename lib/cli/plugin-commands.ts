// Loading the plugins' proxyctl commands: each plugin folder may hold a
// `cli.ts` (compiled: `cli.js`) implementing PluginCli (lib/plugins/cli.ts).
// One plugin's broken file must not take proxyctl down: it is skipped with its
// reason, and proxyctl's own commands and the other plugins' keep working.
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import type { PluginCli, PluginCliContext, PluginStatusHook } from '../plugins/cli.ts';
import { listPluginFolders } from '../plugins/loader.ts';
import { ensureTypeScript } from '../plugins/typescript.ts';

// Compiled first, as for the plugins' index files.
const CLI_FILES = ['cli.js', 'cli.ts'];

export function cliFileOf(folder: string): string | undefined {
  return CLI_FILES.map((f) => join(folder, f)).find((f) => existsSync(f));
}

export interface PluginCommands {
  /** Why a plugin's commands are unavailable, one sentence each. */
  problems: string[];
  /** The `status` exports of the cli files loaded, by plugin folder name. */
  statusHooks: ReadonlyMap<string, PluginStatusHook>;
}

/**
 * Import the cli file of every plugin folder under `directories` and let it
 * add its commands. A file that fails to import, does not default-export a
 * function, or throws while registering is skipped (the commands it added are
 * removed).
 */
export async function loadPluginCommands(program: Command, ctx: PluginCliContext, directories: readonly string[]): Promise<PluginCommands> {
  const problems: string[] = [];
  const statusHooks = new Map<string, PluginStatusHook>();
  for (const folder of listPluginFolders(directories)) {
    const file = cliFileOf(folder);
    if (!file) continue;
    const before = program.commands.length;
    try {
      if (file.endsWith('.ts')) await ensureTypeScript();
      const mod = (await import(pathToFileURL(file).href)) as { default?: unknown; status?: unknown };
      if (typeof mod.default !== 'function') throw new Error('its default export is not a function (program, ctx) => void');
      await (mod.default as PluginCli)(program, ctx);
      if (typeof mod.status === 'function') statusHooks.set(basename(folder), mod.status as PluginStatusHook);
    } catch (err) {
      (program.commands as Command[]).splice(before);
      problems.push(`commands of ${file} are unavailable: ${(err as Error)?.message ?? String(err)}`);
    }
  }
  return { problems, statusHooks };
}
