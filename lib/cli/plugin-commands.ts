// Plugin commands for proxyctl: each plugin folder may hold a `cli.ts` (or,
// compiled, `cli.js`) whose default export adds subcommands to proxyctl. The
// commands reach the daemon through the same target proxyctl's own commands
// use (settings, --url, client certificate). Nothing here knows any plugin.
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { listPluginFolders } from '../plugins/loader.ts';
import { ensureTypeScript } from '../plugins/typescript.ts';
import type { DaemonTarget } from './daemon-client.ts';

export interface PluginCliContext {
  /** The daemon this invocation talks to: `target(cmd).http` is an axios instance on its base URL (any status resolves). */
  target(cmd: Command): DaemonTarget;
  /** Print `json` when --json was given, else `text` (a newline is added). */
  print(cmd: Command, json: unknown, text: string): void;
}

/** The default export of a plugin's cli file. Add commands with `program.command(...)` so they inherit proxyctl's error handling. */
export type PluginCli = (program: Command, ctx: PluginCliContext) => void | Promise<void>;

/** What a plugin adds to `proxyctl status`: lines under its row, and `data` merged into its --json entry. */
export interface PluginStatusDetail {
  lines: string[];
  data?: Record<string, unknown>;
}

/** The optional `status` export of a plugin's cli file; undefined adds nothing. Errors are ignored. */
export type PluginStatus = (target: DaemonTarget) => Promise<PluginStatusDetail | undefined>;

/** The `status` hooks of the cli files loaded, by plugin folder name. */
export const statusHooks = new Map<string, PluginStatus>();

// Compiled first, as for the plugins' index files.
const CLI_FILES = ['cli.js', 'cli.ts'];

export function cliFileOf(folder: string): string | undefined {
  return CLI_FILES.map((f) => join(folder, f)).find((f) => existsSync(f));
}

/**
 * Import the cli file of every plugin folder under `directories` and let it
 * add its commands. A file that fails to import, does not default-export a
 * function, or throws while registering is skipped (the commands it added are
 * removed): its problem is returned, so proxyctl's own commands keep working.
 */
export async function loadPluginCommands(program: Command, ctx: PluginCliContext, directories: readonly string[]): Promise<string[]> {
  const problems: string[] = [];
  for (const folder of listPluginFolders(directories)) {
    const file = cliFileOf(folder);
    if (!file) continue;
    const before = program.commands.length;
    try {
      if (file.endsWith('.ts')) await ensureTypeScript();
      const mod = (await import(pathToFileURL(file).href)) as { default?: unknown; status?: unknown };
      if (typeof mod.default !== 'function') throw new Error('its default export is not a function (program, ctx) => void');
      await (mod.default as PluginCli)(program, ctx);
      if (typeof mod.status === 'function') statusHooks.set(basename(folder), mod.status as PluginStatus);
    } catch (err) {
      (program.commands as Command[]).splice(before);
      problems.push(`commands of ${file} are unavailable: ${(err as Error)?.message ?? String(err)}`);
    }
  }
  return problems;
}
