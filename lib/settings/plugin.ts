// Per-plugin settings: settings_directory/<plugin>.yml merged over the
// plugin's defaults. `enabled` is read first; the rest is validated only for
// enabled plugins, as smart-proxy does. Errors fail the plugin, never the daemon.
import { join } from 'node:path';
import type { Enabled, PluginDefinition, PluginSettings } from '../plugins/types.ts';
import type { GlobalSettings } from './global.ts';
import { SettingsError } from './errors.ts';
import { validateSettings } from './schema.ts';
import { readSettingsFile, type RawSettings } from './yaml-file.ts';

export interface LoadedPluginSettings {
  file: string;
  fileFound: boolean;
  enabled: Enabled;
  http: boolean;
  https: boolean;
  /** Present only for enabled plugins. */
  settings?: PluginSettings;
}

const ENABLED_VALUES: readonly unknown[] = [true, false, 'http', 'https'];

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

export function loadPluginSettings(def: PluginDefinition, global: GlobalSettings): LoadedPluginSettings {
  const file = join(global.settings_directory, `${def.name}.yml`);
  let raw: RawSettings = {};
  let fileFound = true;
  try {
    raw = readSettingsFile(file);
  } catch (err) {
    if (!(err instanceof SettingsError) || err.code !== 'ENOENT') throw err;
    fileFound = false;
  }
  const { enabled: enabledRaw = def.defaultEnabled ?? false, ...rest } = raw;
  if (!ENABLED_VALUES.includes(enabledRaw)) {
    throw new SettingsError(file, 'enabled', `must be one of true, false, http, https, got ${JSON.stringify(enabledRaw)}`);
  }
  const enabled = enabledRaw as Enabled;
  const http = enabled === true || enabled === 'http';
  const https = enabled === true || enabled === 'https';
  const result: LoadedPluginSettings = { file, fileFound, enabled, http, https };
  if (!http && !https) return result;

  const settings = validateSettings({ properties: def.settings ?? {}, required: def.required }, rest, file);
  try {
    def.validate?.(settings, global);
  } catch (err) {
    throw new SettingsError(file, undefined, (err as Error).message);
  }
  result.settings = deepFreeze(settings);
  return result;
}
