// Unit tests of the management-body parsers: Rack nested-key form parsing
// (rack-form.ts) and the validation of the five management payloads
// (payloads.ts), against the exact bodies Foreman sends (test/fixtures/katello).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import {
  FormParseError,
  MAX_FORM_BYTES,
  MAX_FORM_DEPTH,
  MAX_FORM_PARAMS,
  parseRackForm,
} from '../plugins/container_gateway/management/rack-form.ts';
import {
  parseHostRepositoryMapping,
  parseHosts,
  parseRepositoryList,
  parseUserRepositoryMapping,
  PayloadError,
  type RepositoryEntry,
} from '../plugins/container_gateway/management/payloads.ts';

/** The `t` a test callback receives. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'katello');
const fixture = (name: string): string => readFileSync(join(FIXTURES, name), 'utf8');

/** Parsed forms use null-prototype hashes; compare them as plain JSON values. */
const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v)) as unknown;

/** Asserts that `fn` throws an instance of `cls` whose message matches `message`. */
function throwsWith(tt: Test, fn: () => unknown, cls: typeof FormParseError | typeof PayloadError, message: RegExp | string): void {
  try {
    fn();
  } catch (err) {
    tt.ok(err instanceof cls, `throws ${cls.name} (got ${(err as Error)?.constructor?.name}: ${(err as Error)?.message})`);
    if (typeof message === 'string') tt.equal((err as Error).message, message);
    else tt.match((err as Error).message, message);
    return;
  }
  tt.fail(`expected ${cls.name} matching ${String(message)}, nothing thrown`);
}

const APP = 'default_organization/product/app';
const PRIV = 'default_organization/product/private';
const H1 = '6f2a1c3e-8b4d-4e5f-9a7b-1c2d3e4f5a6b';
const H2 = 'd3b07384-d9a0-4c5e-8f1b-2a3c4d5e6f70';
const pub = (name: string): RepositoryEntry => ({ name, authRequired: false });
const priv = (name: string): RepositoryEntry => ({ name, authRequired: true });

t.test('Rack nested keys', async (t) => {
  const cases: Array<[string, unknown]> = [
    ['', {}],
    ['a=1', { a: '1' }],
    ['a=1&b=2', { a: '1', b: '2' }],
    ['a=1&a=2', { a: '2' }],
    ['a[b]=1', { a: { b: '1' } }],
    ['a[b][c]=1&a[b][d]=2&a[e]=3', { a: { b: { c: '1', d: '2' }, e: '3' } }],
    ['a[]=1', { a: ['1'] }],
    ['a[]=1&a[]=2', { a: ['1', '2'] }],
    ['a[][b]=1&a[][c]=2', { a: [{ b: '1', c: '2' }] }],
    ['a[][b]=1&a[][c]=2&a[][b]=3&a[][c]=4', { a: [{ b: '1', c: '2' }, { b: '3', c: '4' }] }],
    ['a[][b][c]=1&a[][b][d]=2&a[][b][c]=3', { a: [{ b: { c: '1', d: '2' } }, { b: { c: '3' } }] }],
    ['a[b][]=1&a[b][]=2', { a: { b: ['1', '2'] } }],
    [
      'users[][admin][][repository]=x&users[][admin][][auth_required]=true&users[][bob][][repository]=y',
      { users: [{ admin: [{ repository: 'x', auth_required: 'true' }], bob: [{ repository: 'y' }] }] },
    ],
    [
      'users[][admin][][repository]=x&users[][admin][][auth_required]=true&users[][admin][][repository]=z&users[][admin][][auth_required]=false',
      { users: [{ admin: [{ repository: 'x', auth_required: 'true' }, { repository: 'z', auth_required: 'false' }] }] },
    ],
    // bare keys: RestClient's encoding of empty collections and nil
    ['repositories', { repositories: null }],
    ['repositories[]', { repositories: [] }],
    ['repositories=', { repositories: '' }],
    ['users[][bob]', { users: [{ bob: null }] }],
    ['users[][bob][]', { users: [{ bob: [] }] }],
    ['a&a[]=1', { a: ['1'] }],
    ['a&a[b]=1', { a: { b: '1' } }],
    // decoding
    ['a=hello+world', { a: 'hello world' }],
    ['a=1%2B1', { a: '1+1' }],
    ['a=default_organization%2Fproduct%2Fapp', { a: APP }],
    ['a=org/prod/app', { a: 'org/prod/app' }],
    ['a=%C3%A9t%C3%A9&%C3%A9=1', { a: 'été', é: '1' }],
    ['a%5Bb%5D=1', { a: { b: '1' } }],
    ['a[b+c]=1', { a: { 'b c': '1' } }],
    ['a=x%3Dy=z', { a: 'x=y=z' }],
    // separators and empty pairs, as Rack
    ['a=1&&b=2&', { a: '1', b: '2' }],
    ['a=1&  b=2', { a: '1', b: '2' }],
    ['a=1;b=2', { a: '1;b=2' }],
    ['=1&a=2', { a: '2' }],
  ];
  for (const [body, expected] of cases) {
    t.strictSame(plain(parseRackForm(body)), expected, JSON.stringify(body));
  }
  const parsed = parseRackForm('a[b]=1&c[][d]=2');
  t.equal(Object.getPrototypeOf(parsed), null, 'top-level hash has a null prototype');
  t.equal(Object.getPrototypeOf(parsed.a), null, 'nested hash has a null prototype');
  t.ok(Array.isArray(parsed.c), 'arrays are arrays');
});

t.test('Rack parsing errors', async (t) => {
  throwsWith(t, () => parseRackForm('a[]=1&a[b]=2'), FormParseError, "expected Hash (got Array) for param `a'");
  throwsWith(t, () => parseRackForm('a[b]=2&a[]=1'), FormParseError, "expected Array (got Hash) for param `a'");
  throwsWith(t, () => parseRackForm('a=1&a[b]=2'), FormParseError, "expected Hash (got String) for param `a'");
  throwsWith(t, () => parseRackForm('a=1&a[]=2'), FormParseError, "expected Array (got String) for param `a'");
  throwsWith(t, () => parseRackForm('a[b]=1&a=2'), FormParseError, "expected String (got Hash) for param `a'");
  throwsWith(t, () => parseRackForm('a[]=1&a'), FormParseError, "expected nil (got Array) for param `a'");
  throwsWith(
    t,
    () => parseRackForm('users[][admin][][repository]=x&users[][admin][repository]=y'),
    FormParseError,
    "expected Hash (got Array) for param `users[][admin]'",
  );
  throwsWith(t, () => parseRackForm('a[][b]=1&a[][b][c]=2'), FormParseError, "expected Hash (got String) for param `a[][b]'");

  for (const body of ['a[b=1', 'a]=1', 'a[b]]=1', 'a[[b]]=1', 'a[b][=1', 'a[=1']) {
    throwsWith(t, () => parseRackForm(body), FormParseError, /unbalanced brackets/);
  }
  throwsWith(t, () => parseRackForm('a[b]c=1'), FormParseError, /malformed parameter name `a\[b\]c': unexpected text/);
  throwsWith(t, () => parseRackForm('[a]=1'), FormParseError, /malformed parameter name `\[a\]'/);
  throwsWith(t, () => parseRackForm('[]=1'), FormParseError, /malformed parameter name `\[\]'/);
  throwsWith(t, () => parseRackForm('a[][]=1'), FormParseError, /nested arrays/);
  throwsWith(t, () => parseRackForm('a[][][b]=1'), FormParseError, /nested arrays/);

  throwsWith(t, () => parseRackForm('a=%'), FormParseError, "invalid %-encoding in the value of parameter `a'");
  throwsWith(t, () => parseRackForm('a=%4'), FormParseError, /invalid %-encoding in the value of parameter `a'/);
  throwsWith(t, () => parseRackForm('a[b]=1%2G'), FormParseError, /invalid %-encoding in the value of parameter `a\[b\]'/);
  throwsWith(t, () => parseRackForm('x=1&a%ZZ=1'), FormParseError, /invalid %-encoding in the name of parameter #2 `a%ZZ'/);
  throwsWith(t, () => parseRackForm('a=%FF'), FormParseError, /invalid UTF-8 in the value of parameter `a'/);
  throwsWith(t, () => parseRackForm('a=%C3'), FormParseError, /invalid UTF-8/);
});

t.test('limits', async (t) => {
  const deep = (n: number): string => `a${'[b]'.repeat(n)}=1`;
  t.ok(parseRackForm(deep(MAX_FORM_DEPTH)), `${MAX_FORM_DEPTH} bracket groups are accepted`);
  throwsWith(t, () => parseRackForm(deep(MAX_FORM_DEPTH + 1)), FormParseError, /nested deeper than 32 levels/);
  throwsWith(t, () => parseRackForm(`a${'[]'.repeat(2)}${'[b]'.repeat(40)}=1`), FormParseError, /nested arrays|deeper/);
  throwsWith(t, () => parseRackForm(`a${'[b]'.repeat(100_000)}=1`), FormParseError, /nested deeper than 32 levels/);

  const pairs = (n: number): string => Array.from({ length: n }, (_, i) => `a${i}=1`).join('&');
  t.equal(Object.keys(parseRackForm(pairs(MAX_FORM_PARAMS))).length, MAX_FORM_PARAMS, `${MAX_FORM_PARAMS} parameters are accepted`);
  throwsWith(t, () => parseRackForm(pairs(MAX_FORM_PARAMS + 1)), FormParseError, /too many parameters/);
  throwsWith(t, () => parseRackForm('&'.repeat(MAX_FORM_PARAMS)), FormParseError, /too many parameters/);

  const big = `a=${'x'.repeat(MAX_FORM_BYTES - 2)}`;
  t.equal((parseRackForm(big).a as string).length, MAX_FORM_BYTES - 2, 'a body of exactly MAX_FORM_BYTES is accepted');
  throwsWith(t, () => parseRackForm(`${big}x`), FormParseError, new RegExp(`form body too large \\(${MAX_FORM_BYTES + 1} bytes, limit ${MAX_FORM_BYTES}\\)`));
  throwsWith(t, () => parseRackForm(`a=${'é'.repeat(MAX_FORM_BYTES / 2)}`), FormParseError, /too large/);
});

t.test('no prototype pollution', async (t) => {
  const bodies = [
    '__proto__[x]=1',
    '__proto__[polluted]=yes',
    'constructor[prototype][x]=1',
    'constructor[prototype][polluted]=yes',
    'a[__proto__][polluted]=yes',
    'a[][__proto__][polluted]=yes',
    'a[constructor][prototype][polluted]=yes',
    '__proto__=x&prototype=y&constructor=z',
    'hasOwnProperty=1&a[hasOwnProperty]=2&a[b]=3',
    'users[][__proto__][][repository]=x&users[][__proto__][][auth_required]=true',
  ];
  for (const body of bodies) {
    const parsed = parseRackForm(body);
    t.equal(({} as Record<string, unknown>).x, undefined, `${body}: Object.prototype.x untouched`);
    t.equal(({} as Record<string, unknown>).polluted, undefined, `${body}: Object.prototype.polluted untouched`);
    t.equal(Object.getPrototypeOf({}), Object.prototype, `${body}: prototype chain intact`);
    t.ok(Object.keys(parsed).length > 0, `${body}: keys kept as own properties`);
  }
  const parsed = parseRackForm('__proto__[x]=1&constructor[prototype][y]=2');
  t.strictSame(Object.keys(parsed), ['__proto__', 'constructor']);
  t.strictSame(plain(parsed.constructor), { prototype: { y: '2' } });
  t.equal(Object.getPrototypeOf(parsed), null);

  // a user literally named __proto__ is just a user
  const users = parseUserRepositoryMapping(parseRackForm('users[][__proto__][][repository]=x&users[][__proto__][][auth_required]=true'));
  t.strictSame([...users], [['__proto__', [priv('x')]]]);
  t.equal(({} as Record<string, unknown>).x, undefined);
});

t.test('fixtures: form and JSON give the same payload', async (t) => {
  const calls: Array<[string, (body: unknown) => unknown, unknown]> = [
    ['repository_list', parseRepositoryList, [pub(APP), priv(PRIV)]],
    ['repository_list-empty', parseRepositoryList, []],
    [
      'user_repository_mapping',
      (b) => [...parseUserRepositoryMapping(b)],
      [
        ['admin', [pub(APP), priv(PRIV)]],
        ['bob', [priv(PRIV)]],
      ],
    ],
    ['update_hosts', parseHosts, [H1, H2]],
    [
      'host_repository_mapping',
      (b) => [...parseHostRepositoryMapping(b)],
      [
        [H1, [priv(PRIV)]],
        [H2, [priv(PRIV)]],
      ],
    ],
    ['update_host_repositories', (b) => [...parseHostRepositoryMapping(b)], [[H1, [priv(PRIV), pub(APP)]]]],
  ];
  for (const [name, parse, expected] of calls) {
    const formBody = fixture(`${name}.form`);
    t.notOk(/\s/.test(formBody), `${name}.form is a single line without a trailing newline`);
    const fromForm = parse(parseRackForm(formBody));
    const fromJson = parse(JSON.parse(fixture(`${name}.json`)) as unknown);
    t.strictSame(fromForm, expected, `${name}.form`);
    t.strictSame(fromJson, expected, `${name}.json`);
  }

  // Rack merges every user (and host) into one hash, as katello-api.md says.
  const users = plain(parseRackForm(fixture('user_repository_mapping.form'))) as { users: Array<Record<string, unknown>> };
  t.equal(users.users.length, 1, 'one hash for all users');
  t.strictSame(Object.keys(users.users[0] ?? {}), ['admin', 'bob']);
  const hosts = plain(parseRackForm(fixture('host_repository_mapping.form'))) as { hosts: Array<Record<string, unknown>> };
  t.strictSame(Object.keys(hosts.hosts[0] ?? {}), [H1, H2]);
  t.strictSame(plain(parseRackForm(fixture('repository_list.form'))), {
    repositories: [
      { repository: APP, auth_required: 'false' },
      { repository: PRIV, auth_required: 'true' },
    ],
  });
  // The unencoded form of katello-api.md's table parses the same way.
  t.strictSame(
    parseRepositoryList(parseRackForm(`repositories[][repository]=${APP}&repositories[][auth_required]=false&repositories[][repository]=${PRIV}&repositories[][auth_required]=true`)),
    [pub(APP), priv(PRIV)],
  );
});

t.test('fixtures: malformed bodies', async (t) => {
  throwsWith(
    t,
    () => parseRackForm(fixture('malformed-percent.form')),
    FormParseError,
    "invalid %-encoding in the value of parameter `repositories[][repository]'",
  );
  throwsWith(t, () => parseRackForm(fixture('malformed-type-mix.form')), FormParseError, "expected Hash (got Array) for param `repositories'");
  throwsWith(
    t,
    () => parseRepositoryList(parseRackForm(fixture('auth-required-newline.form'))),
    PayloadError,
    'repositories[1].auth_required: expected true or false, got "true\\n"',
  );
  try {
    parseRepositoryList(parseRackForm(fixture('auth-required-newline.form')));
  } catch (err) {
    t.equal((err as PayloadError).path, 'repositories[1].auth_required');
    t.equal((err as PayloadError).status, 400);
  }
});

t.test('empty lists', async (t) => {
  for (const body of [{}, { repositories: null }, { repositories: '' }, { repositories: [] }, parseRackForm(''), parseRackForm('repositories'), parseRackForm('repositories[]'), parseRackForm('repositories=')]) {
    t.strictSame(parseRepositoryList(body), [], JSON.stringify(body));
  }
  t.strictSame([...parseUserRepositoryMapping(parseRackForm('users'))], []);
  t.strictSame(parseHosts(parseRackForm('hosts')), []);
  t.strictSame([...parseHostRepositoryMapping(parseRackForm('hosts'))], []);
  // a user with an empty list is kept (it has no repositories); a host is skipped
  t.strictSame(
    [...parseUserRepositoryMapping(parseRackForm(`users[][admin][][repository]=${APP}&users[][admin][][auth_required]=true&users[][bob]`))],
    [
      ['admin', [priv(APP)]],
      ['bob', []],
    ],
  );
  t.strictSame([...parseUserRepositoryMapping({ users: [{ bob: [] }, { carol: '' }, { dave: null }] })], [
    ['bob', []],
    ['carol', []],
    ['dave', []],
  ]);
  t.strictSame([...parseHostRepositoryMapping(parseRackForm(`hosts[][${H1}]&hosts[][${H2}][][repository]=${APP}`))], [[H2, [priv(APP)]]]);
  t.strictSame([...parseHostRepositoryMapping({ hosts: [{ [H1]: [] }, { [H2]: null }] })], []);
});

t.test('auth_required is strict and fails closed', async (t) => {
  const one = (auth: unknown): boolean => {
    const entry: Record<string, unknown> = { repository: APP };
    if (auth !== undefined) entry.auth_required = auth;
    const [first] = parseRepositoryList({ repositories: [entry] });
    return first?.authRequired ?? false;
  };
  t.equal(one(true), true);
  t.equal(one(false), false);
  t.equal(one('true'), true);
  t.equal(one('false'), false);
  t.equal(one('TRUE'), true);
  t.equal(one('False'), false);
  t.equal(one(undefined), true, 'missing means true');
  t.equal(one(null), true, 'null (a bare Rack key) means true');
  t.equal(parseRepositoryList(parseRackForm(`repositories[][repository]=${APP}`))[0]?.authRequired, true, 'form without auth_required');
  t.equal(parseRepositoryList(parseRackForm(`repositories[][repository]=${APP}&repositories[][auth_required]`))[0]?.authRequired, true);
  for (const bad of ['true\n', ' true', 'false ', '', 'yes', '1', '0', 't', 'truee', 'ｔrue', 1, 0, [], {}, ['true']]) {
    throwsWith(t, () => one(bad), PayloadError, /^repositories\[0\]\.auth_required: expected true or false, got /);
  }
  throwsWith(
    t,
    () => parseRepositoryList(parseRackForm(`repositories[][repository]=${APP}&repositories[][auth_required]=false%0A`)),
    PayloadError,
    'repositories[0].auth_required: expected true or false, got "false\\n"',
  );
  throwsWith(
    t,
    () => parseUserRepositoryMapping(parseRackForm(`users[][admin][][repository]=${APP}&users[][admin][][auth_required]=on`)),
    PayloadError,
    'users[0].admin[0].auth_required: expected true or false, got "on"',
  );
  throwsWith(
    t,
    () => parseHostRepositoryMapping({ hosts: [{ [H1]: [{ repository: APP, auth_required: 'true ' }] }] }),
    PayloadError,
    `hosts[0].${H1}[0].auth_required: expected true or false, got "true "`,
  );
});

t.test('repository names', async (t) => {
  const ok = ['a', 'app', APP, 'a.b', 'a_b', 'a__b', 'a-b', 'a---b', 'a0/b1/c2', 'x'.repeat(255), 'library/busybox'];
  for (const name of ok) {
    t.strictSame(parseRepositoryList({ repositories: [{ repository: name, auth_required: 'true' }] }), [priv(name)], name);
  }
  const bad = ['App', 'a/', '/a', 'a//b', 'a..b', 'a___b', '-a', 'a-', 'a b', 'a\n', 'é', 'a:tag', 'a@sha256', 'x'.repeat(256)];
  for (const name of bad) {
    throwsWith(t, () => parseRepositoryList({ repositories: [{ repository: 'ok', auth_required: true }, { repository: name }] }), PayloadError, /^repositories\[1\]\.repository: /);
  }
  throwsWith(t, () => parseRepositoryList({ repositories: [{ auth_required: true }] }), PayloadError, 'repositories[0].repository: a repository name is required');
  throwsWith(t, () => parseRepositoryList(parseRackForm('repositories[][auth_required]=true')), PayloadError, 'repositories[0].repository: a repository name is required');
  throwsWith(t, () => parseRepositoryList({ repositories: [{ repository: 42 }] }), PayloadError, 'repositories[0].repository: expected a repository name, got 42');
  throwsWith(t, () => parseRepositoryList({ repositories: [{ repository: 'A/b' }] }), PayloadError, 'repositories[0].repository: invalid repository name "A/b"');
  throwsWith(t, () => parseRepositoryList({ repositories: [{ repository: 'x'.repeat(256) }] }), PayloadError, /longer than 255 characters/);
});

t.test('duplicates: last one wins', async (t) => {
  t.strictSame(
    parseRepositoryList(
      parseRackForm(
        `repositories[][repository]=${APP}&repositories[][auth_required]=false&repositories[][repository]=${PRIV}&repositories[][auth_required]=true&repositories[][repository]=${APP}&repositories[][auth_required]=true`,
      ),
    ),
    [priv(APP), priv(PRIV)],
  );
  // a user or host given in several JSON elements: lists concatenated, then last wins
  t.strictSame(
    [...parseUserRepositoryMapping({ users: [{ admin: [{ repository: APP, auth_required: true }] }, { admin: [{ repository: APP, auth_required: false }, { repository: PRIV }] }] })],
    [['admin', [pub(APP), priv(PRIV)]]],
  );
  t.strictSame([...parseHostRepositoryMapping({ hosts: [{ [H1]: [] }, { [H1]: [{ repository: APP }] }] })], [[H1, [priv(APP)]]]);
  t.strictSame(parseHosts({ hosts: [{ uuid: H1 }, { uuid: H2 }, { uuid: H1 }] }), [H1, H2]);
});

t.test('hosts', async (t) => {
  t.strictSame(parseHosts(parseRackForm(`hosts[][uuid]=${H1}&hosts[][uuid]=&hosts[][uuid]&hosts[][uuid]=+++&hosts[][uuid]=${H2}`)), [H1, H2], 'blank UUIDs skipped');
  t.strictSame(parseHosts({ hosts: [{ uuid: null }, { uuid: '' }, {}, { uuid: H1, name: 'host1.example.com' }] }), [H1]);
  throwsWith(t, () => parseHosts({ hosts: [{ uuid: `${H1}\n` }] }), PayloadError, /^hosts\[0\]\.uuid: host UUID .* contains whitespace/);
  throwsWith(t, () => parseHosts({ hosts: [{ uuid: ` ${H1}` }] }), PayloadError, /^hosts\[0\]\.uuid: /);
  throwsWith(t, () => parseHosts({ hosts: [{ uuid: 'x'.repeat(256) }] }), PayloadError, 'hosts[0].uuid: host UUID longer than 255 characters');
  throwsWith(t, () => parseHosts({ hosts: [{ uuid: 7 }] }), PayloadError, 'hosts[0].uuid: expected a host UUID, got 7');
  throwsWith(t, () => parseHosts({ hosts: [H1] }), PayloadError, /^hosts\[0\]: expected an object with "uuid", got "6f2a/);
  throwsWith(t, () => parseHosts(parseRackForm(`hosts[]=${H1}`)), PayloadError, /^hosts\[0\]: expected an object/);

  throwsWith(t, () => parseHostRepositoryMapping({ hosts: [{ '': [{ repository: APP }] }] }), PayloadError, 'hosts[0][""]: empty host UUID');
  throwsWith(t, () => parseHostRepositoryMapping(parseRackForm(`hosts[][a+b][][repository]=${APP}`)), PayloadError, 'hosts[0]["a b"]: host UUID "a b" contains whitespace or control characters');
  throwsWith(t, () => parseHostRepositoryMapping({ hosts: [{ ['x'.repeat(256)]: [] }] }), PayloadError, /host UUID longer than 255 characters/);
  throwsWith(t, () => parseHostRepositoryMapping({ hosts: [{ [H1]: { repository: APP } }] }), PayloadError, `hosts[0].${H1}: expected a list, got an object`);
  throwsWith(t, () => parseHostRepositoryMapping({ hosts: [{ [H1]: ['x'] }] }), PayloadError, /^hosts\[0\]\.6f2a[^[]*\[0\]: expected an object with "repository"/);
});

t.test('users', async (t) => {
  throwsWith(t, () => parseUserRepositoryMapping({ users: [{ '': [] }] }), PayloadError, 'users[0][""]: empty user name');
  throwsWith(t, () => parseUserRepositoryMapping({ users: [{ ['u'.repeat(256)]: [] }] }), PayloadError, /user name longer than 255 characters/);
  t.strictSame([...parseUserRepositoryMapping({ users: [{ 'Jane Doe@example.com': [{ repository: APP }] }] })], [['Jane Doe@example.com', [priv(APP)]]]);
  throwsWith(t, () => parseUserRepositoryMapping({ users: [{ 'Jane Doe': [{ repository: 'Bad' }] }] }), PayloadError, 'users[0]["Jane Doe"][0].repository: invalid repository name "Bad"');
  throwsWith(t, () => parseUserRepositoryMapping({ users: ['admin'] }), PayloadError, /^users\[0\]: expected an object/);
  throwsWith(t, () => parseUserRepositoryMapping({ users: { admin: [] } }), PayloadError, 'users: expected a list, got an object');
});

t.test('body shape', async (t) => {
  for (const body of [null, undefined, 'repositories', 42, []]) {
    throwsWith(t, () => parseRepositoryList(body), PayloadError, /^body: expected an object, got /);
  }
  throwsWith(t, () => parseRepositoryList({ repositories: 'x' }), PayloadError, 'repositories: expected a list, got "x"');
  throwsWith(t, () => parseRepositoryList(parseRackForm(`repositories[0][repository]=${APP}`)), PayloadError, 'repositories: expected a list, got an object');
  throwsWith(t, () => parseRepositoryList(parseRackForm(`repositories[]=${APP}`)), PayloadError, /^repositories\[0\]: expected an object/);
  throwsWith(t, () => parseRepositoryList({ repositories: [null] }), PayloadError, /^repositories\[0\]: expected an object with "repository" and "auth_required", got null/);
  t.strictSame(parseRepositoryList({ repositories: [{ repository: APP, auth_required: false, extra: 1 }], other: true }), [pub(APP)], 'unknown keys ignored');
});
