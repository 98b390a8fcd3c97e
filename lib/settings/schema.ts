// Strict settings validation with JSON Schema (ajv): unknown keys, wrong types
// and bad values are all reported at once, each naming the file, the key and
// what was expected. Property `description`s double as the expectation text.
import { accessSync, constants } from 'node:fs';
import { Ajv, type ErrorObject, type SchemaObject } from 'ajv';
import { SettingsError } from './errors.ts';
import type { RawSettings } from './yaml-file.ts';

export type PropertySchema = SchemaObject & { description?: string; default?: unknown };
export interface SettingsSchema {
  properties: Record<string, PropertySchema>;
  required?: string[];
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true });
// smart-proxy's `file_readable`: the path must exist and be readable by us.
ajv.addKeyword({
  keyword: 'fileReadable',
  type: 'string',
  schemaType: 'boolean',
  validate: (wanted: boolean, path: string) => !wanted || isReadable(path),
  error: { message: 'file unreadable' },
});
// smart-proxy's `url`: parses, and has a scheme (http or https for us).
ajv.addFormat('url', (value: string) => {
  try {
    return ['http:', 'https:'].includes(new URL(value).protocol);
  } catch {
    return false;
  }
});

function isReadable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

const compiled = new WeakMap<SettingsSchema, ReturnType<Ajv['compile']>>();

/** Edit distance, for "did you mean" on misspelt keys. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const next = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = row[j]!;
      row[j] = next;
    }
  }
  return row[b.length]!;
}

export function suggestKey(key: string, known: string[]): string | undefined {
  const best = known
    .map((k) => ({ k, d: distance(key, k) }))
    .sort((x, y) => x.d - y.d)[0];
  return best && best.d <= Math.max(2, Math.floor(key.length / 4)) ? best.k : undefined;
}

function describeValue(value: unknown): string {
  return value === undefined ? 'nothing' : JSON.stringify(value);
}

function explain(error: ErrorObject, schema: SettingsSchema, data: RawSettings, extraHints: Record<string, string>): { key: string | undefined; problem: string } {
  const key = error.instancePath.split('/')[1] ?? (error.params as { missingProperty?: string }).missingProperty;
  const prop = key === undefined ? undefined : schema.properties[key];
  const value = key === undefined ? undefined : data[key];
  switch (error.keyword) {
    case 'additionalProperties': {
      const unknown = (error.params as { additionalProperty: string }).additionalProperty;
      const hint = extraHints[unknown];
      if (hint) return { key: unknown, problem: hint };
      const near = suggestKey(unknown, Object.keys(schema.properties));
      return { key: unknown, problem: `is not a known setting${near ? ` (did you mean '${near}'?)` : ''}` };
    }
    case 'required':
      return { key, problem: 'is expected to have a non-empty value' };
    case 'fileReadable':
      return { key, problem: `names a file that doesn't exist or is unreadable: '${String(value)}'` };
    case 'format':
      return { key, problem: `is expected to contain a url with an http or https scheme, got ${describeValue(value)}` };
    default:
      if (prop?.description) return { key, problem: `must be ${prop.description}, got ${describeValue(value)}` };
      return { key, problem: `${error.message ?? 'is invalid'}, got ${describeValue(value)}` };
  }
}

/**
 * Validate raw settings against a schema. Returns a new object with defaults
 * applied; nulls (`key:` with no value) count as unset, as in smart-proxy.
 * Throws one SettingsError listing every problem.
 */
export function validateSettings(
  schema: SettingsSchema,
  raw: RawSettings,
  file: string,
  extraHints: Record<string, string> = {},
): RawSettings {
  let validate = compiled.get(schema);
  if (!validate) {
    validate = ajv.compile({ type: 'object', additionalProperties: false, ...schema });
    compiled.set(schema, validate);
  }
  const data: RawSettings = {};
  for (const [key, value] of Object.entries(raw)) if (value !== null) data[key] = value;
  const original = { ...data };
  if (validate(data)) return data;
  const seen = new Set<string>();
  const problems = (validate.errors ?? [])
    .map((e) => explain(e, schema, original, extraHints))
    .filter(({ key, problem }) => {
      const id = `${key}:${problem}`;
      if (seen.has(id)) return false;
      seen.add(id);
      return true;
    });
  const first = problems[0]!;
  const error = new SettingsError(file, first.key, first.problem);
  if (problems.length > 1) {
    error.message = problems.map((p) => new SettingsError(file, p.key, p.problem).message).join('\n');
  }
  throw error;
}
