// Parser for `application/x-www-form-urlencoded` bodies with Rack nested-key
// semantics, as `Rack::QueryParser#parse_nested_query` / `normalize_params`
// (Rack 2.x and 3.x) builds them. Foreman's `ProxyAPI::Resource` (RestClient)
// sends the container gateway's management PUT bodies in this shape:
//
//   a=1                         -> { a: '1' }
//   a[b]=1                      -> { a: { b: '1' } }
//   a[]=1&a[]=2                 -> { a: ['1', '2'] }
//   a[][b]=1&a[][c]=2&a[][b]=3  -> { a: [{ b: '1', c: '2' }, { b: '3' }] }
//       (a new hash element starts only when the last element already has the
//       key being set; a key path containing `[]` never counts as "already
//       there", which is why `users[][admin][]…` and `users[][bob][]…` end up
//       in ONE hash)
//   a                           -> { a: null }     (RestClient's empty collection)
//   a[]                         -> { a: [] }       (see deviations)
//
// `+` is a space; `%XX` is percent-decoding of UTF-8 bytes. Pairs are split on
// `&` followed by optional spaces (Rack's DEFAULT_SEP `/[&] */`); `;` is not a
// separator (older Racks also split on it). Empty pairs and pairs whose name is
// empty (`&&`, `=x`) are ignored, as Rack does.
//
// Deliberate deviations from Rack, all on input Foreman never sends, chosen so
// that an ambiguous body is rejected (400) rather than guessed at:
//   - names must be `base` followed by `[segment]` groups; anything Rack would
//     reinterpret leniently (`a[b`, `a]`, `[a]`, `a[b]c`, `a[[b]]`) is an
//     "unbalanced brackets"/"malformed name" error;
//   - an array directly inside an array (`a[][]`, `a[][][b]`) is rejected:
//     Rack 2 and Rack 3 disagree on it and Rack 3 can silently drop values;
//   - a value-less `a[]` yields an empty array instead of Rack's `[nil]`;
//   - a plain value replacing an existing Array/Hash (`a[b]=1&a=2`) is a type
//     error instead of a silent overwrite (Rack does raise for the opposite
//     order, `a=2&a[b]=1`);
//   - decoded bytes must be valid UTF-8;
//   - limits: body <= 4 MiB, <= 10,000 parameters (counted as Rack does, from
//     the separators), <= 32 bracket groups per name.
//
// Hashes are created with a null prototype, so names such as `__proto__`,
// `constructor` or `prototype` are ordinary own keys and cannot reach
// `Object.prototype`. Use `Object.hasOwn`/`Object.keys` on the result.

/** Largest accepted body, in bytes (UTF-8): a repository list of ~400,000 entries. */
export const MAX_FORM_BYTES = 64 * 1024 * 1024;
/** Largest accepted number of `name=value` pairs (two per repository in repository_list). */
export const MAX_FORM_PARAMS = 1_000_000;
/** Largest accepted number of `[...]` groups in one parameter name. */
export const MAX_FORM_DEPTH = 32;

/** A malformed form body; answer 400 with `message`. */
export class FormParseError extends Error {
  override readonly name = 'FormParseError';
  readonly status = 400;
  /** The parameter name concerned, when there is one (as written, possibly truncated). */
  readonly param: string | undefined;
  constructor(message: string, param?: string) {
    super(message);
    this.param = param;
  }
}

/** A parsed value: a string, `null` for a name without `=`, a list or a (null-prototype) hash. */
export type FormValue = string | null | FormValue[] | FormHash;
export interface FormHash {
  [key: string]: FormValue;
}

const SEPARATOR = /&[ ]*/;
const BAD_PERCENT = /%(?![0-9A-Fa-f]{2})/;

function newHash(): FormHash {
  return Object.create(null) as FormHash;
}

function isHash(v: FormValue | undefined): v is FormHash {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Ruby's class name of a parsed value, for Rack-style messages. */
function rubyClass(v: FormValue | undefined): string {
  if (v === null || v === undefined) return 'NilClass';
  if (typeof v === 'string') return 'String';
  return Array.isArray(v) ? 'Array' : 'Hash';
}

/** A parameter name made safe and short enough for an error message. */
function show(name: string): string {
  const cut = name.length > 120 ? `${name.slice(0, 120)}…` : name;
  return cut.replace(/[\u0000-\u001f\u007f]/g, (c) => JSON.stringify(c).slice(1, -1));
}

/** `application/x-www-form-urlencoded` component decoding, strict. */
function unescape(raw: string, what: () => string): string {
  if (BAD_PERCENT.test(raw)) {
    throw new FormParseError(`invalid %-encoding in ${what()}`);
  }
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    throw new FormParseError(`invalid UTF-8 in ${what()}`);
  }
}

/** Splits `base[s1][][s3]` into `base` and `['s1', '', 's3']` ('' is `[]`). */
function splitName(name: string): { base: string; segs: string[] } {
  const open = name.indexOf('[');
  const base = open === -1 ? name : name.slice(0, open);
  if (base === '') {
    throw new FormParseError(`malformed parameter name \`${show(name)}': it must not start with a bracket`, show(name));
  }
  if (base.includes(']')) {
    throw new FormParseError(`malformed parameter name \`${show(name)}': unbalanced brackets`, show(name));
  }
  const segs: string[] = [];
  let i = open;
  while (i !== -1 && i < name.length) {
    if (name[i] === ']') {
      throw new FormParseError(`malformed parameter name \`${show(name)}': unbalanced brackets`, show(name));
    }
    if (name[i] !== '[') {
      throw new FormParseError(`malformed parameter name \`${show(name)}': unexpected text after \`]'`, show(name));
    }
    const close = name.indexOf(']', i + 1);
    if (close === -1) {
      throw new FormParseError(`malformed parameter name \`${show(name)}': unbalanced brackets`, show(name));
    }
    const seg = name.slice(i + 1, close);
    if (seg.includes('[')) {
      throw new FormParseError(`malformed parameter name \`${show(name)}': unbalanced brackets`, show(name));
    }
    if (seg === '' && segs.length > 0 && segs[segs.length - 1] === '') {
      throw new FormParseError(`unsupported parameter name \`${show(name)}': nested arrays (\`[][]') are not accepted`, show(name));
    }
    segs.push(seg);
    if (segs.length > MAX_FORM_DEPTH) {
      throw new FormParseError(`parameter \`${show(name)}' is nested deeper than ${MAX_FORM_DEPTH} levels`, show(name));
    }
    i = close + 1;
  }
  return { base, segs };
}

/** Rack's `params_hash_has_key?`: does `hash` already hold the key path `segs`? */
function hasKeyPath(hash: FormHash, segs: readonly string[]): boolean {
  if (segs.includes('')) return false;
  let cur: FormValue | undefined = hash;
  for (const part of segs) {
    if (!isHash(cur) || !Object.hasOwn(cur, part)) return false;
    cur = cur[part];
  }
  return true;
}

function typeError(expected: string, got: FormValue | undefined, path: string): FormParseError {
  return new FormParseError(`expected ${expected} (got ${rubyClass(got)}) for param \`${show(path)}'`, show(path));
}

/**
 * Rack's `normalize_params`: stores `v` under key `k` of `params`, then the
 * bracket groups `after`. `path` is the name up to and including `k`.
 */
function assign(params: FormHash, k: string, after: readonly string[], v: string | null, path: string): void {
  const existing = Object.hasOwn(params, k) ? params[k] : undefined;
  const absent = existing === undefined || existing === null; // Ruby's `||=`

  if (after.length === 0) {
    if (!absent && typeof existing !== 'string') {
      throw typeError(v === null ? 'nil' : 'String', existing, path);
    }
    params[k] = v;
    return;
  }

  if (after[0] === '') {
    let list: FormValue[];
    if (absent) {
      list = [];
      params[k] = list;
    } else if (Array.isArray(existing)) {
      list = existing;
    } else {
      throw typeError('Array', existing, path);
    }
    if (after.length === 1) {
      // `a[]=v` appends; a value-less `a[]` only makes sure the list exists.
      if (v !== null) list.push(v);
      return;
    }
    // `a[][child…]`: fill the last hash unless it already holds that key path.
    const child = after.slice(1);
    const childKey = child[0] as string; // non-empty: `[][]` was rejected in splitName
    const childPath = `${path}[][${childKey}]`;
    const last = list[list.length - 1];
    if (isHash(last) && !hasKeyPath(last, child)) {
      assign(last, childKey, child.slice(1), v, childPath);
    } else {
      const fresh = newHash();
      assign(fresh, childKey, child.slice(1), v, childPath);
      list.push(fresh);
    }
    return;
  }

  let hash: FormHash;
  if (absent) {
    hash = newHash();
    params[k] = hash;
  } else if (isHash(existing)) {
    hash = existing;
  } else {
    throw typeError('Hash', existing, path);
  }
  const next = after[0] as string;
  assign(hash, next, after.slice(1), v, `${path}[${next}]`);
}

/**
 * Parses a form body into nested values (null-prototype hashes, arrays,
 * strings and `null`). Throws `FormParseError` on malformed input.
 */
export function parseRackForm(body: string): Record<string, unknown> {
  const params = newHash();
  if (body.length === 0) return params;

  const bytes = Buffer.byteLength(body, 'utf8');
  if (bytes > MAX_FORM_BYTES) {
    throw new FormParseError(`form body too large (${bytes} bytes, limit ${MAX_FORM_BYTES})`);
  }
  let separators = 0;
  for (let i = body.indexOf('&'); i !== -1; i = body.indexOf('&', i + 1)) {
    separators++;
    if (separators >= MAX_FORM_PARAMS) {
      throw new FormParseError(`too many parameters in form body (limit ${MAX_FORM_PARAMS})`);
    }
  }

  body.split(SEPARATOR).forEach((pair, index) => {
    if (pair === '') return;
    const eq = pair.indexOf('=');
    const rawName = eq === -1 ? pair : pair.slice(0, eq);
    const rawValue = eq === -1 ? null : pair.slice(eq + 1);
    const name = unescape(rawName, () => `the name of parameter #${index + 1} \`${show(rawName)}'`);
    const value = rawValue === null ? null : unescape(rawValue, () => `the value of parameter \`${show(name)}'`);
    if (name === '') return; // Rack ignores pairs without a name
    const { base, segs } = splitName(name);
    assign(params, base, segs, value, base);
  });
  return params;
}
