// Finds plugin folders (plugins/ of the app, plus plugin_directories) and
// imports each one's index. A folder that fails to import is reported as a
// failed plugin under its folder name; the others load normally.
import { existsSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { checkDefinition, type PluginDefinition } from './types.ts';
import { ensureTypeScript } from './typescript.ts';

export interface DiscoveredPlugin {
  folder: string;
  definition?: PluginDefinition;
  /** Why the folder could not be loaded as a plugin. */
  error?: string;
}

// Compiled plugins (dist/) have index.js; source plugins index.ts.
const ENTRY_FILES = ['index.js', 'index.ts'];

function entryOf(folder: string): string | undefined {
  return ENTRY_FILES.map((f) => join(folder, f)).find((f) => existsSync(f));
}

export function listPluginFolders(directories: readonly string[]): string[] {
  const folders: string[] = [];
  for (const dir of directories) {
    if (!existsSync(dir)) continue;
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (entry.isDirectory() && entryOf(join(dir, entry.name))) folders.push(join(dir, entry.name));
    }
  }
  return folders;
}

export async function discoverPlugins(directories: readonly string[]): Promise<DiscoveredPlugin[]> {
  const found: DiscoveredPlugin[] = [];
  for (const folder of listPluginFolders(directories)) {
    try {
      const entry = entryOf(folder)!;
      if (entry.endsWith('.ts')) await ensureTypeScript();
      const mod = (await import(pathToFileURL(entry).href)) as { default?: unknown };
      const problem = checkDefinition(mod.default);
      if (problem) found.push({ folder, error: `Plugin in ${folder} ${problem}` });
      else found.push({ folder, definition: mod.default as PluginDefinition });
    } catch (err) {
      found.push({ folder, error: `Plugin in ${folder} could not be loaded: ${(err as Error).message}` });
    }
  }
  const byName = new Map<string, string>();
  for (const p of found) {
    const name = p.definition?.name ?? basename(p.folder);
    const other = byName.get(name);
    if (other) {
      p.definition = undefined;
      p.error = `Plugin '${name}' in ${p.folder} clashes with the plugin of the same name in ${other}`;
    } else byName.set(name, p.folder);
  }
  return found;
}
