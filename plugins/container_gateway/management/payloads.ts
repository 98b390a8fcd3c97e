// The bodies of Katello's management calls, validated and normalised before
// anything changes: Katello sends them as Rack forms (booleans as strings,
// empty arrays as a bare key) or as JSON of the same shape. A violation
// throws PayloadError naming the offending field's path, so the operator sees
// which entry of a long list is wrong.
//
// Rules:
//   - a missing top-level key, `null`, `""` or `[]` is an empty list; the same
//     holds for the per-user and per-host lists;
//   - unknown keys (at the top level or in an entry) are ignored;
//   - `auth_required` is strict: true/false, or "true"/"false" in any case and
//     nothing else (no whitespace: `"true\n"` is an error, not a silent
//     false); missing or `null` means true (fail closed);
//   - repository names follow the OCI name grammar, at most 255 characters;
//   - a repository named twice in one list: the last entry wins (its
//     `auth_required` is kept, at the position of the first occurrence);
//   - a user or host named in several elements of the list (possible in JSON,
//     never in Rack form) has its lists concatenated, then the rule above.

/** One repository of a list, normalised. */
export type RepositoryEntry = { name: string; authRequired: boolean };

/** An invalid management body; answer 400 with `message`. */
export class PayloadError extends Error {
  override readonly name = 'PayloadError';
  readonly status = 400;
  constructor(
    /** Path of the offending field, e.g. `repositories[3].auth_required`. */
    readonly path: string,
    /** What is wrong with it. */
    readonly reason: string,
  ) {
    super(`${path}: ${reason}`);
  }
}

export const MAX_NAME_LENGTH = 255;

/** OCI distribution-spec repository name grammar (anchored). */
const REPOSITORY_NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const BOOLEAN = /^(?:true|false)$/i;
const WHITESPACE_OR_CONTROL = /[\s\u0000-\u001f\u007f]/;
const PLAIN_KEY = /^[A-Za-z0-9_-]+$/;

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A value shown in an error message: strings JSON-quoted and shortened. */
function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') {
    return v.length > 80 ? `${JSON.stringify(v.slice(0, 80))}…` : JSON.stringify(v);
  }
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return String(v);
}

/** `path.key`, or `path["odd key"]` for keys that are not plain words. */
function child(path: string, key: string): string {
  const shown = key.length > 80 ? `${key.slice(0, 80)}…` : key;
  return PLAIN_KEY.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(shown)}]`;
}

function own(obj: Obj, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

function topLevel(body: unknown, key: string): unknown[] {
  if (!isObject(body)) throw new PayloadError('body', `expected an object, got ${describe(body)}`);
  return list(own(body, key), key);
}

/** A list field: absent, `null`, `""` and `[]` are empty. */
function list(v: unknown, path: string): unknown[] {
  if (v === undefined || v === null || v === '') return [];
  if (Array.isArray(v)) return v;
  throw new PayloadError(path, `expected a list, got ${describe(v)}`);
}

function element(v: unknown, path: string, what: string): Obj {
  if (!isObject(v)) throw new PayloadError(path, `expected ${what}, got ${describe(v)}`);
  return v;
}

function authRequired(v: unknown, path: string): boolean {
  if (v === undefined || v === null) return true; // fail closed
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && BOOLEAN.test(v)) return v.toLowerCase() === 'true';
  throw new PayloadError(path, `expected true or false, got ${describe(v)}`);
}

function repositoryName(v: unknown, path: string): string {
  if (v === undefined || v === null || v === '') throw new PayloadError(path, 'a repository name is required');
  if (typeof v !== 'string') throw new PayloadError(path, `expected a repository name, got ${describe(v)}`);
  if (v.length > MAX_NAME_LENGTH) throw new PayloadError(path, `repository name longer than ${MAX_NAME_LENGTH} characters`);
  if (!REPOSITORY_NAME.test(v)) throw new PayloadError(path, `invalid repository name ${describe(v)}`);
  return v;
}

/** `[{repository, auth_required}, …]` at `path`, duplicates merged (last wins). */
function repositoryEntries(items: unknown[], path: string, into = new Map<string, boolean>()): Map<string, boolean> {
  items.forEach((item, i) => {
    const at = `${path}[${i}]`;
    const entry = element(item, at, 'an object with "repository" and "auth_required"');
    const name = repositoryName(own(entry, 'repository'), `${at}.repository`);
    into.set(name, authRequired(own(entry, 'auth_required'), `${at}.auth_required`));
  });
  return into;
}

function toEntries(map: Map<string, boolean>): RepositoryEntry[] {
  return [...map].map(([name, required]) => ({ name, authRequired: required }));
}

/** A user name or host UUID used as a key. */
function checkKey(key: string, path: string, what: 'user name' | 'host UUID'): void {
  if (key === '') throw new PayloadError(path, `empty ${what}`);
  if (key.length > MAX_NAME_LENGTH) throw new PayloadError(path, `${what} longer than ${MAX_NAME_LENGTH} characters`);
  if (what === 'host UUID' && WHITESPACE_OR_CONTROL.test(key)) {
    throw new PayloadError(path, `host UUID ${describe(key)} contains whitespace or control characters`);
  }
}

/** `{<key>: [entries]}` elements of `items`, every key of every element. */
function keyedLists(items: unknown[], top: string, what: 'user name' | 'host UUID'): Map<string, Map<string, boolean>> {
  const result = new Map<string, Map<string, boolean>>();
  items.forEach((item, i) => {
    const at = `${top}[${i}]`;
    const obj = element(item, at, `an object of ${what}s to repository lists`);
    for (const key of Object.keys(obj)) {
      const path = child(at, key);
      checkKey(key, path, what);
      const entries = list(obj[key], path);
      result.set(key, repositoryEntries(entries, path, result.get(key)));
    }
  });
  return result;
}

/** `PUT repository_list`: `{repositories: [{repository, auth_required}]}`. */
export function parseRepositoryList(body: unknown): RepositoryEntry[] {
  return toEntries(repositoryEntries(topLevel(body, 'repositories'), 'repositories'));
}

/**
 * `PUT user_repository_mapping`: `{users: [{<user>: [{repository, auth_required}]}]}`.
 * Users with an empty list are kept (mapped to `[]`).
 */
export function parseUserRepositoryMapping(body: unknown): Map<string, RepositoryEntry[]> {
  const users = keyedLists(topLevel(body, 'users'), 'users', 'user name');
  return new Map([...users].map(([user, repos]) => [user, toEntries(repos)]));
}

/** `PUT update_hosts`: `{hosts: [{uuid}]}`; blank UUIDs are skipped, duplicates dropped. */
export function parseHosts(body: unknown): string[] {
  const seen = new Set<string>();
  topLevel(body, 'hosts').forEach((item, i) => {
    const at = `hosts[${i}]`;
    const uuid = own(element(item, at, 'an object with "uuid"'), 'uuid');
    const path = `${at}.uuid`;
    if (uuid === undefined || uuid === null) return;
    if (typeof uuid !== 'string') throw new PayloadError(path, `expected a host UUID, got ${describe(uuid)}`);
    if (uuid.trim() === '') return; // Ruby's `blank?`
    checkKey(uuid, path, 'host UUID');
    seen.add(uuid);
  });
  return [...seen];
}

/**
 * `PUT host_repository_mapping` and `PUT update_host_repositories`:
 * `{hosts: [{<uuid>: [{repository, auth_required}]}]}`. Hosts whose list is
 * empty are left out of the result.
 */
export function parseHostRepositoryMapping(body: unknown): Map<string, RepositoryEntry[]> {
  const hosts = keyedLists(topLevel(body, 'hosts'), 'hosts', 'host UUID');
  const result = new Map<string, RepositoryEntry[]>();
  for (const [uuid, repos] of hosts) {
    if (repos.size > 0) result.set(uuid, toEntries(repos));
  }
  return result;
}
