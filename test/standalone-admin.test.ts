// The admin API of standalone mode (routes/admin.ts) in a bare express app on
// 127.0.0.1 over an in-memory AdminAccounts, then `proxyctl users` / `proxyctl
// repos` end to end against that same app (bin/proxyctl, as users run it).
import type { AddressInfo } from 'node:net';
import express from 'express';
import t from 'tap';
import { verifyPassword } from '../plugins/container_gateway/auth/passwords.ts';
import { adminRouter, type AdminAccounts, type AdminRepository } from '../plugins/container_gateway/routes/admin.ts';
import { freePort, PROXYCTL, run } from './helpers/proxyd.ts';

class MemoryAdmin implements AdminAccounts {
  readonly users = new Map<string, string>();
  readonly repos = new Map<string, AdminRepository>();
  failing = false;
  listUsers() {
    if (this.failing) throw new Error('database is locked');
    return [...this.users.keys()].sort();
  }
  addUser(name: string, passwordHash: string) {
    if (this.users.has(name)) return 'exists' as const;
    this.users.set(name, passwordHash);
    return 'created' as const;
  }
  readonly namespaceGrants = new Map<string, Set<string>>();
  removeUser(name: string) {
    if (!this.users.delete(name)) return undefined;
    this.namespaceGrants.delete(name);
    const orphaned = [...this.repos.values()].filter((r) => r.owner === name).map((r) => r.name).sort();
    for (const r of this.repos.values()) if (r.owner === name) delete r.owner;
    return { orphaned };
  }
  namespaces(user: string) {
    return this.users.has(user) ? [...(this.namespaceGrants.get(user) ?? [])].sort() : undefined;
  }
  grantNamespace(user: string, namespace: string) {
    if (!this.users.has(user)) return false;
    this.namespaceGrants.set(user, new Set([...(this.namespaceGrants.get(user) ?? []), namespace]));
    return true;
  }
  revokeNamespace(user: string, namespace: string) {
    return this.namespaceGrants.get(user)?.delete(namespace) ?? false;
  }
  async listRepositories() {
    return [...this.repos.values()].sort((a, b) => a.name.localeCompare(b.name));
  }
  setPublic(name: string, isPublic: boolean) {
    const repo = this.repos.get(name);
    if (!repo) return false;
    repo.public = isPublic;
    return true;
  }
}

const accounts = new MemoryAdmin();
let trusted = true;
const app = express();
app.use('/container_gateway', adminRouter({
  trustedClient: (_req, res, next) => (trusted ? next() : void res.status(403).json({ error: 'Untrusted client 127.0.0.1 attempted to access /container_gateway/admin' })),
  accounts,
}));
// As the daemon answers unknown routes and failures (lib/http/errors.ts).
app.use((_req, res) => void res.status(404).json({ error: 'Requested url was not found' }));
const onError: express.ErrorRequestHandler = (_err, _req, res, _next) => void res.status(500).json({ error: 'Internal server error' });
app.use(onError);
const server = app.listen(0, '127.0.0.1');
await new Promise((res) => server.once('listening', res));
t.teardown(() => new Promise((res) => server.close(res)));
const BASE = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const ADMIN = `${BASE}/container_gateway/admin`;

function reset(): void {
  accounts.users.clear();
  accounts.repos.clear();
  accounts.namespaceGrants.clear();
  accounts.failing = false;
  trusted = true;
  for (const r of [{ name: 'alice/app', public: false, owner: 'alice' }, { name: 'library/base', public: true }, { name: 'team/tools', public: false, owner: 'bob' }]) accounts.repos.set(r.name, { ...r });
}

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown; type: string }> {
  const init: RequestInit = { method, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers } };
  if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
  const res = await fetch(`${ADMIN}${path}`, init);
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed, type: res.headers.get('content-type') ?? '' };
}

// --- the router ---------------------------------------------------------------

t.test('admin API: users', async (t) => {
  reset();
  t.same(await call('GET', '/users'), { status: 200, body: { users: [] }, type: 'application/json; charset=utf-8' });
  t.match(await call('POST', '/users', { name: 'bob', password: 's3cret pass' }), { status: 201, body: { user: 'bob' } });
  const stored = accounts.users.get('bob')!;
  t.match(stored, /^scrypt\$32768\$8\$1\$/, 'only a scrypt hash reaches the accounts');
  t.equal(await verifyPassword('s3cret pass', stored), true);
  t.match(await call('POST', '/users', { name: 'bob', password: 'other' }), { status: 409, body: { error: "user 'bob' already exists" } });
  t.equal(accounts.users.get('bob'), stored, 'an existing user keeps its password');
  t.match(await call('POST', '/users', { name: 'alice.smith@example-1_x', password: 'pw' }), { status: 201 });
  t.same((await call('GET', '/users')).body, { users: ['alice.smith@example-1_x', 'bob'] });

  t.match(await call('DELETE', '/users/bob'), { status: 200, body: { user: 'bob', removed: true } });
  t.match(await call('DELETE', '/users/bob'), { status: 404, body: { error: "user 'bob' not found" } });
  t.match(await call('DELETE', '/users/bad%20name'), { status: 400, body: { error: /invalid user name "bad name"/ } });
  t.same((await call('GET', '/users')).body, { users: ['alice.smith@example-1_x'] });
});

t.test('admin API: bodies and names are validated, errors are JSON', async (t) => {
  reset();
  const bad: Array<[string, unknown, Record<string, string>?, RegExp?]> = [
    ['not JSON', '{"name":', undefined, /not valid JSON/],
    ['an array', '[]', undefined, /must be a JSON object/],
    ['null', 'null', undefined, /must be a JSON object/],
    ['no password', { name: 'bob' }, undefined, /'password' must be a string/],
    ['a number as password', { name: 'bob', password: 42 }, undefined, /'password' must be a string/],
    ['an empty password', { name: 'bob', password: '' }, undefined, /must not be empty/],
    ['a long password', { name: 'bob', password: 'x'.repeat(1025) }, undefined, /longer than 1024 bytes/],
    ['an unknown key', { name: 'bob', password: 'pw', admin: true }, undefined, /unknown key "admin"/],
    ['a bad name', { name: 'bob smith', password: 'pw' }, undefined, /invalid user name/],
    ['a long name', { name: 'b'.repeat(65), password: 'pw' }, undefined, /invalid user name/],
    ['an empty name', { name: '', password: 'pw' }, undefined, /invalid user name/],
    ['a form body', 'name=bob&password=pw', { 'content-type': 'application/x-www-form-urlencoded' }, /unsupported Content-Type 'application\/x-www-form-urlencoded'/],
  ];
  for (const [what, body, headers, message] of bad) {
    const r = await call('POST', '/users', body, headers);
    t.equal(r.status, 400, what);
    t.match(r.body, { error: message }, what);
  }
  const noType = await fetch(`${ADMIN}/users`, { method: 'POST', body: '{"name":"bob","password":"pw"}', headers: { 'content-type': '' } });
  t.equal(noType.status, 400);
  t.match(await noType.json(), { error: /unsupported Content-Type '\(none\)'/ });
  const huge = await call('POST', '/users', { name: 'bob', password: 'x'.repeat(20_000) });
  t.match(huge, { status: 413, body: { error: /larger than 16384 bytes/ }, type: /application\/json/ });
  t.equal(accounts.users.size, 0, 'nothing was added');
});

t.test('admin API: repositories and their visibility', async (t) => {
  reset();
  t.same((await call('GET', '/repositories')).body, {
    repositories: [
      { name: 'alice/app', public: false, owner: 'alice' },
      { name: 'library/base', public: true },
      { name: 'team/tools', public: false, owner: 'bob' },
    ],
  });
  t.same(await call('PUT', '/repositories/alice/app/visibility', { public: true }), { status: 200, body: { name: 'alice/app', public: true }, type: 'application/json; charset=utf-8' });
  t.equal(accounts.repos.get('alice/app')!.public, true);
  t.match(await call('PUT', '/repositories/alice%2Fapp/visibility', { public: false }), { status: 200, body: { name: 'alice/app', public: false } }, "'/' percent-encoded");
  t.equal(accounts.repos.get('alice/app')!.public, false);
  t.match(await call('PUT', '/repositories/no/such/visibility', { public: true }), { status: 404, body: { error: "repository 'no/such' not found" } });
  t.match(await call('PUT', '/repositories/Alice/App/visibility', { public: true }), { status: 400, body: { error: /invalid repository name "Alice\/App"/ } });
  t.match(await call('PUT', '/repositories/a%2F..%2Fb/visibility', { public: true }), { status: 400, body: { error: /invalid repository name/ } });
  t.match(await call('PUT', '/repositories/alice/app/visibility', { public: 'yes' }), { status: 400, body: { error: "'public' must be a boolean" } });
  t.match(await call('PUT', '/repositories/alice/app/visibility', {}), { status: 400 });
  t.match(await call('PUT', '/repositories/alice/app/visibility', { public: true, owner: 'x' }), { status: 400, body: { error: /unknown key "owner"/ } });
  t.equal(accounts.repos.get('alice/app')!.public, false, 'refused requests change nothing');
});

t.test('admin API: behind the trusted client check', async (t) => {
  reset();
  trusted = false;
  for (const [method, path, body] of [['GET', '/users'], ['POST', '/users', { name: 'x', password: 'y' }], ['DELETE', '/users/x'], ['GET', '/repositories'], ['PUT', '/repositories/alice/app/visibility', { public: true }]] as const) {
    t.match(await call(method, path, body), { status: 403, body: { error: /Untrusted client/ } }, `${method} ${path}`);
  }
  t.equal(accounts.users.size, 0);
  t.equal(accounts.repos.get('alice/app')!.public, false);
});

// --- proxyctl users / repos, end to end -------------------------------------

const ctl = (args: string[], input?: string) => run([PROXYCTL, '--url', BASE, ...args], {}, undefined, input);

t.test('proxyctl users add / list / remove', async (t) => {
  reset();
  const add = await ctl(['users', 'add', 'bob', '--password-stdin'], 'hunter2 with spaces\n');
  t.equal(add.code, 0, add.stderr);
  t.equal(add.stdout, "user 'bob' added\n");
  t.equal(await verifyPassword('hunter2 with spaces', accounts.users.get('bob')!), true, 'the line read from stdin is the password');

  const piped = await ctl(['users', 'add', 'carol'], 'carol-pw\r\nignored second line\n');
  t.equal(piped.code, 0, `stdin not a terminal: one line is read without --password-stdin: ${piped.stderr}`);
  t.equal(await verifyPassword('carol-pw', accounts.users.get('carol')!), true, 'only the first line, without CR LF');
  const noNewline = await ctl(['users', 'add', 'dave', '--password-stdin'], 'dave-pw');
  t.equal(noNewline.code, 0, noNewline.stderr);
  t.equal(await verifyPassword('dave-pw', accounts.users.get('dave')!), true, 'a last line without newline');

  const again = await ctl(['users', 'add', 'bob', '--password-stdin'], 'x\n');
  t.equal(again.code, 1, 'refused: exit 1');
  t.match(again.stderr, /proxyctl: user 'bob' already exists/);

  const list = await ctl(['users', 'list']);
  t.same([list.code, list.stdout], [0, 'bob\ncarol\ndave\n']);
  const json = await ctl(['users', 'list', '--json']);
  t.same(JSON.parse(json.stdout), ['bob', 'carol', 'dave']);
  const globalJson = await ctl(['--json', 'users', 'list']);
  t.same(JSON.parse(globalJson.stdout), ['bob', 'carol', 'dave'], 'the global --json works too');

  const remove = await ctl(['users', 'remove', 'bob']);
  t.equal(remove.code, 0, remove.stderr);
  t.equal(remove.stdout, [
    "user 'bob' removed; the repositories it owned now have no owner: team/tools",
    'Their content and visibility are unchanged: public ones stay public, private ones are readable only by mapped',
    "users; nobody can push to them. A user added later as 'bob' does not get them.",
    '',
  ].join('\n'), 'says what happens to the repositories bob owned');
  t.equal(accounts.repos.get('team/tools')!.owner, undefined, 'team/tools is ownerless');
  const carolGone = await ctl(['users', 'remove', 'carol']);
  t.same([carolGone.code, carolGone.stdout], [0, "user 'carol' removed\n"], 'a user who owned nothing: one line');
  const gone = await ctl(['users', 'remove', 'bob']);
  t.equal(gone.code, 1, 'not found: exit 1');
  t.match(gone.stderr, /proxyctl: user 'bob' not found/);
  t.same(accounts.listUsers(), ['dave']);

  reset();
  const empty = await ctl(['users', 'list']);
  t.same([empty.code, empty.stdout], [0, '(no users)\n']);
});

t.test('proxyctl users: usage errors exit 64 and call nothing', async (t) => {
  reset();
  const cases: Array<[string[], string | undefined, RegExp]> = [
    [['users', 'add', 'bob', '--password-stdin'], '\n', /the password must not be empty/],
    [['users', 'add', 'bob', '--password-stdin'], undefined, /the password must not be empty/], // stdin is /dev/null
    [['users', 'add', 'bad name', '--password-stdin'], 'pw\n', /invalid user name 'bad name'/],
    [['users', 'add'], undefined, /missing required argument 'name'/],
    [['users', 'remove', 'x/y'], undefined, /invalid user name/],
    [['users'], undefined, /Usage: proxyctl users/],
    [['users', 'frobnicate'], undefined, /unknown command 'frobnicate'/],
    [['users', 'list', '--bogus'], undefined, /unknown option '--bogus'/],
  ];
  for (const [args, input, message] of cases) {
    const r = await ctl(args, input);
    t.equal(r.code, 64, args.join(' '));
    t.match(r.stderr, message, args.join(' '));
  }
  t.equal(accounts.users.size, 0);
});

t.test('proxyctl repos list / set-public / set-private', async (t) => {
  reset();
  const list = await ctl(['repos', 'list']);
  t.equal(list.code, 0, list.stderr);
  t.equal(list.stdout, ['REPOSITORY    VISIBILITY  OWNER', 'alice/app     private     alice', 'library/base  public      -', 'team/tools    private     bob', ''].join('\n'));
  const json = await ctl(['repos', 'list', '--json']);
  t.same(JSON.parse(json.stdout), [
    { name: 'alice/app', public: false, owner: 'alice' },
    { name: 'library/base', public: true },
    { name: 'team/tools', public: false, owner: 'bob' },
  ]);

  const pub = await ctl(['repos', 'set-public', 'alice/app']);
  t.same([pub.code, pub.stdout], [0, "repository 'alice/app' is now public\n"]);
  t.equal(accounts.repos.get('alice/app')!.public, true);
  const priv = await ctl(['repos', 'set-private', 'library/base']);
  t.same([priv.code, priv.stdout], [0, "repository 'library/base' is now private\n"]);
  t.equal(accounts.repos.get('library/base')!.public, false);

  const unknown = await ctl(['repos', 'set-public', 'no/such']);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /proxyctl: repository 'no\/such' not found/);
  const invalid = await ctl(['repos', 'set-public', 'Alice/App']);
  t.equal(invalid.code, 64);
  t.match(invalid.stderr, /invalid repository name 'Alice\/App'/);
  t.equal((await ctl(['repos', 'set-public'])).code, 64);

  accounts.repos.clear();
  const empty = await ctl(['repos', 'list']);
  t.same([empty.code, empty.stdout], [0, '(no repositories)\n']);
});

t.test('proxyctl users / repos: refused 1, unreachable or failing 2', async (t) => {
  reset();
  trusted = false;
  const refused = await ctl(['users', 'list']);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /proxyctl: Untrusted client 127\.0\.0\.1/, "the daemon's message");
  trusted = true;

  accounts.failing = true;
  const failing = await ctl(['users', 'list']);
  t.equal(failing.code, 2, 'a 500 is a failed request');
  t.match(failing.stderr, /proxyctl: GET \/container_gateway\/admin\/users answered 500: Internal server error/);
  accounts.failing = false;

  const elsewhere = await run([PROXYCTL, '--url', `${BASE}/not-a-proxy`, 'repos', 'list']);
  t.equal(elsewhere.code, 1);
  t.match(elsewhere.stderr, /has no container gateway admin API .*standalone mode/);

  const port = await freePort();
  const down = await run([PROXYCTL, '--url', `http://127.0.0.1:${port}`, 'users', 'add', 'bob', '--password-stdin'], {}, undefined, 'pw\n');
  t.equal(down.code, 2);
  t.match(down.stderr, new RegExp(`proxyctl: http://127\\.0\\.0\\.1:${port} is unreachable: connect ECONNREFUSED`));
});

t.test('proxyctl --help lists the plugin commands; its own commands are unchanged', async (t) => {
  const help = await run([PROXYCTL, '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /^ {2}users\b/m);
  t.match(help.stdout, /^ {2}repos\b/m);
  t.match(help.stdout, /^ {2}status\b/m);
  t.notMatch(help.stderr, /warning/, 'the plugin cli loads cleanly');
  const repos = await run([PROXYCTL, 'repos', '--help']);
  t.match(repos.stdout, /set-public \[options\] <name>/);
  t.match(repos.stdout, /set-private \[options\] <name>/);
});
