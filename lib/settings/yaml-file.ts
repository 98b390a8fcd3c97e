// Reads a smart-proxy style YAML settings file. Keys may be written as Ruby
// symbols (`:http_port: 8000`) or plainly (`http_port: 8000`); the leading
// colon is stripped here, in one place, for every settings file we read.
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { SettingsError } from './errors.ts';

export type RawSettings = Record<string, unknown>;

/** Strip the Ruby symbol colon from a key (`:enabled` → `enabled`). */
export function normaliseKey(key: string): string {
  return key.startsWith(':') ? key.slice(1) : key;
}

function normaliseValue(value: unknown): unknown {
  // Ruby symbols as values (`:enabled: :https`) mean the plain string.
  if (typeof value === 'string' && /^:[a-z_]+$/i.test(value)) return value.slice(1);
  if (Array.isArray(value)) return value.map(normaliseValue);
  return value;
}

/** Parse YAML text into a flat settings object; errors name the file and line. */
export function parseSettings(text: string, file: string): RawSettings {
  // YAML 1.1, as Ruby's Psych reads smart-proxy's files: `yes`/`no` are booleans.
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true, version: '1.1' });
  if (doc.errors.length > 0) {
    const err = doc.errors[0]!;
    const line = err.linePos?.[0]?.line;
    throw new SettingsError(file, undefined, `is not valid YAML${line ? ` (line ${line})` : ''}: ${err.message.split('\n')[0]}`);
  }
  const data: unknown = doc.toJS();
  if (data === null || data === undefined) return {};
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new SettingsError(file, undefined, 'must be a YAML mapping of keys to values');
  }
  const out: RawSettings = {};
  for (const [rawKey, value] of Object.entries(data as Record<string, unknown>)) {
    const key = normaliseKey(rawKey);
    if (Object.hasOwn(out, key)) throw new SettingsError(file, key, 'is set twice (as :key: and key:)');
    out[key] = normaliseValue(value);
  }
  return out;
}

/** Read and parse a settings file; a missing or unreadable file is a SettingsError. */
export function readSettingsFile(file: string): RawSettings {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'does not exist'
      : code === 'EACCES' ? 'is not readable (permission denied)'
      : code === 'EISDIR' ? 'is a directory, not a settings file: it cannot be read'
      : `cannot be read (${code ?? String(err)})`;
    throw new SettingsError(file, undefined, why, code === 'ENOENT' ? 'ENOENT' : undefined);
  }
  return parseSettings(text, file);
}
