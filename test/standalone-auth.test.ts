// Standalone mode's authority, without a daemon: scrypt password hashes and
// their bounded queue, the scope grammar of Docker's token specification, and
// GET /v2/token's decisions (issueToken) over an in-memory StandaloneAccounts.
import { createHash, randomBytes, scryptSync } from 'node:crypto';
import t from 'tap';
import { HashingBusy, hashPassword, PasswordHasher, verifyPassword } from '../plugins/container_gateway/auth/passwords.ts';
import {
  allowedActions,
  issueToken,
  mayCreateRepository,
  parseScopes,
  scopeQuery,
  tokenAllows,
  tokenAllowsCatalog,
  type GrantedScope,
  type StandaloneAccounts,
  type TokenRequest,
} from '../plugins/container_gateway/auth/standalone.ts';

// --- passwords ---------------------------------------------------------------

t.test('a hasher runs a bounded number of derivations and refuses beyond its queue', async (t) => {
  const small = new PasswordHasher({ concurrency: 1, queue: 1 });
  const running = small.hash('one');
  const waiting = small.hash('two');
  await t.rejects(small.hash('three'), HashingBusy, 'a third at once: busy');
  const [a, b] = await Promise.all([running, waiting]);
  t.equal(await small.verify('one', a), true);
  t.equal(await small.verify('two', b), true, 'the queue drained: hashing again works');
  t.equal(await small.verifyUnknown('anything'), false, 'an unknown user is never let in');
  const other = new PasswordHasher({ concurrency: 1, queue: 0 });
  const busy = small.hash('four');
  t.ok(await other.hash('five'), 'another hasher has a queue of its own');
  await busy;
});

t.test('passwords: scrypt hashes in the documented encoding', async (t) => {
  const hash = await hashPassword('correct horse battery staple');
  t.match(hash, /^scrypt\$32768\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/, 'scrypt$N$r$p$salt$hash, 16-byte salt, 32-byte key');
  const [, , , , salt, key] = hash.split('$');
  t.equal(Buffer.from(salt!, 'base64').length, 16);
  t.equal(Buffer.from(key!, 'base64').length, 32);

  t.equal(await verifyPassword('correct horse battery staple', hash), true, 'round trip');
  t.equal(await verifyPassword('correct horse battery stapl', hash), false, 'wrong password');
  t.equal(await verifyPassword('Correct horse battery staple', hash), false, 'case matters');
  t.equal(await verifyPassword('', hash), false, 'an empty password never matches');

  const again = await hashPassword('correct horse battery staple');
  t.not(again, hash, 'a fresh salt each time');
  t.not(again.split('$')[4], salt, 'distinct salts');
  t.equal(await verifyPassword('correct horse battery staple', again), true);
});

t.test('passwords: empty refused, malformed or tampered hashes never match', async (t) => {
  await t.rejects(hashPassword(''), /must not be empty/);
  const hash = await hashPassword('pw');
  const parts = hash.split('$');
  const withN = (n: string) => [parts[0], n, ...parts.slice(2)].join('$');
  for (const stored of [
    '',
    'pw',
    hash.replace(/^scrypt/, 'bcrypt'),
    hash.slice(0, -4), // a truncated key
    withN('1000'), // not a power of two
    withN(String(2 ** 20)), // more memory than allowed: refused, not attempted
    withN('16384'), // other parameters than the hash was made with
    parts.slice(0, 5).join('$'),
  ]) {
    t.equal(await verifyPassword('pw', stored), false, `refused: ${stored.slice(0, 40)}`);
  }
  t.equal(await verifyPassword('pw', hash), true);
  // A hash made with other (valid) parameters still verifies: they are read from it.
  const salt = randomBytes(16);
  const older = `scrypt$16384$8$1$${salt.toString('base64')}$${scryptSync('pw', salt, 32, { N: 16384, r: 8, p: 1 }).toString('base64')}`;
  t.equal(await verifyPassword('pw', older), true, 'N=2^14 read from the hash');
  t.equal(await verifyPassword('px', older), false);
});

// --- scopes ------------------------------------------------------------------

t.test('parseScopes: the grammar of §4', async (t) => {
  t.same(parseScopes(['repository:team/app:pull,push']), [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]);
  t.same(parseScopes(['repository:a:pull repository:b:push', 'registry:catalog:*']), [
    { type: 'repository', name: 'a', actions: ['pull'] },
    { type: 'repository', name: 'b', actions: ['push'] },
    { type: 'registry', name: 'catalog', actions: ['*'] },
  ], 'several per string, separated by spaces, and repeated');
  t.same(parseScopes(['repository:localhost:5000/team/app:pull']), [{ type: 'repository', name: 'localhost:5000/team/app', actions: ['pull'] }], 'host:port/ kept in the name');
  t.same(parseScopes(['repository:reg.example.com:443/a:b:c:push,pull']), [{ type: 'repository', name: 'reg.example.com:443/a:b:c', actions: ['push', 'pull'] }], 'name between the first and the last colon');
  t.same(parseScopes(['repository:app:pull,bogus,pull,delete,*']), [{ type: 'repository', name: 'app', actions: ['pull', 'delete', '*'] }], 'unknown actions dropped, duplicates merged');
  t.same(parseScopes(['  repository:app:pull   ']), [{ type: 'repository', name: 'app', actions: ['pull'] }], 'extra spaces');
  t.same(
    parseScopes(['repository:app', 'repository::pull', ':app:pull', 'user:app:pull', 'repository:app:', 'repository:app:bogus', 'nonsense', '', 'repository(plugin):app:pull']),
    [],
    'invalid scopes are ignored',
  );
  t.same(scopeQuery(undefined), []);
  t.same(scopeQuery('repository:a:pull'), ['repository:a:pull']);
  t.same(scopeQuery(['repository:a:pull', { x: 1 }, 'registry:catalog:*']), ['repository:a:pull', 'registry:catalog:*']);
});

// --- the token service -------------------------------------------------------

interface StoredToken {
  checksum: string;
  expireAtMs: number;
  user: string | undefined;
  scopes: GrantedScope[];
}

class MemoryAccounts implements StandaloneAccounts {
  readonly users = new Map<string, string>();
  readonly repos = new Map<string, { authRequired: boolean; owner?: string }>();
  readonly mappings = new Set<string>();
  readonly namespaces = new Map<string, string[]>();
  openTopLevel = false;
  readonly tokens: StoredToken[] = [];
  mayCreate(user: string, name: string) {
    return mayCreateRepository(user, name, this.namespaces.get(user) ?? [], this.openTopLevel);
  }
  passwordHash(user: string) {
    return this.users.get(user);
  }
  repository(name: string) {
    return this.repos.get(name);
  }
  userMapped(user: string, repo: string) {
    return this.mappings.has(`${user}\n${repo}`);
  }
  storeToken(checksum: string, expireAtMs: number, user: string | undefined, scopes: GrantedScope[]) {
    this.tokens.push({ checksum, expireAtMs, user, scopes });
  }
}

const accounts = new MemoryAccounts();
accounts.users.set('alice', await hashPassword('alice-pw'));
accounts.users.set('bob', await hashPassword('bob-pw'));
accounts.users.set('carol', await hashPassword('carol-pw'));
accounts.repos.set('library/public', { authRequired: false });
accounts.repos.set('alice/private', { authRequired: true, owner: 'alice' });
accounts.repos.set('alice/shared', { authRequired: false, owner: 'alice' });
accounts.repos.set('katello/private', { authRequired: true });
accounts.mappings.add('carol\nalice/private');

const NOW = Date.parse('2026-11-22T10:00:00Z');
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const hasher = new PasswordHasher();
const ask = (o: Partial<TokenRequest> & { scopes: string[] }) => issueToken(accounts, { now: NOW, lifetimeSeconds: 300, ...o }, hasher);
const last = () => accounts.tokens[accounts.tokens.length - 1]!;

async function granted(o: Partial<TokenRequest> & { scopes: string[] }): Promise<GrantedScope[]> {
  const r = await ask(o);
  if (r.status !== 200) throw new Error(`expected 200, got ${r.status}: ${r.message}`);
  return r.granted;
}

t.test('a token: random, only its sha256 stored with the grants, Docker token body', async (t) => {
  const r = await ask({ authorization: basic('alice', 'alice-pw'), scopes: ['repository:alice/private:pull'] });
  if (r.status !== 200) throw new Error(r.message);
  t.match(r.body.token, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url');
  t.equal(r.body.access_token, r.body.token);
  t.equal(r.body.expires_in, 300);
  t.equal(r.body.issued_at, '2026-11-22T10:00:00.000Z', 'RFC 3339');
  t.same(Object.keys(r.body).sort(), ['access_token', 'expires_in', 'issued_at', 'token']);
  t.same(last(), {
    checksum: createHash('sha256').update(r.body.token).digest('hex'),
    expireAtMs: NOW + 300_000,
    user: 'alice',
    scopes: [{ type: 'repository', name: 'alice/private', actions: ['pull'] }],
  });
  t.notOk(JSON.stringify(accounts.tokens).includes(r.body.token), 'the token itself is never stored');

  const other = await ask({ authorization: basic('alice', 'alice-pw'), scopes: [] });
  t.not(other.status === 200 && other.body.token, r.body.token, 'a new token each time');

  const short = await ask({ scopes: [], lifetimeSeconds: 5 });
  t.equal(short.status === 200 && short.body.expires_in, 60, 'never less than 60 s');
  t.equal(last().expireAtMs, NOW + 60_000);
  const bogus = await ask({ scopes: [], lifetimeSeconds: Number.NaN });
  t.equal(bogus.status === 200 && bogus.body.expires_in, 60);
});

t.test('anonymous: pull of the requested public repositories only (and the catalog)', async (t) => {
  const scopes = [
    'repository:library/public:pull,push,delete',
    'repository:alice/private:pull',
    'repository:alice/shared:pull',
    'repository:katello/private:pull',
    'repository:nothing/here:pull,push',
    'registry:catalog:*',
  ];
  t.same(await granted({ scopes }), [
    { type: 'repository', name: 'library/public', actions: ['pull'] },
    { type: 'repository', name: 'alice/shared', actions: ['pull'] },
    { type: 'registry', name: 'catalog', actions: ['*'] },
  ]);
  t.equal(last().user, undefined, 'stored as anonymous');
  t.same(await granted({ scopes: [] }), [], 'nothing asked, nothing granted');
  t.same(await granted({ scopes: ['repository:library/public:*'] }), [{ type: 'repository', name: 'library/public', actions: ['pull'] }], '* is at most pull');
  t.same(await granted({ scopes: ['repository:library/public:pull'], account: 'alice' }), [{ type: 'repository', name: 'library/public', actions: ['pull'] }], 'an account without credentials proves nothing');
  t.same(await granted({ authorization: '', scopes: ['repository:alice/private:pull'] }), [], 'an empty Authorization is no credentials');
});

t.test('wrong credentials: 401, no token stored', async (t) => {
  const before = accounts.tokens.length;
  const cases: Array<[string | undefined, string, RegExp]> = [
    [basic('alice', 'wrong'), 'wrong password', /invalid username or password/],
    [basic('alice', ''), 'empty password', /invalid username or password/],
    [basic('mallory', 'alice-pw'), 'unknown user', /invalid username or password/],
    [basic('bad name!', 'x'), 'invalid user name', /invalid username or password/],
    [`Basic ${Buffer.from('no-colon').toString('base64')}`, 'no colon', /Basic credentials only/],
    ['Bearer abc', 'a Bearer token', /Basic credentials only/],
    ['Basic !!!', 'garbage', /Basic credentials only/],
  ];
  for (const [authorization, what, message] of cases) {
    const r = await ask({ authorization, scopes: ['repository:library/public:pull'] });
    t.equal(r.status, 401, what);
    t.match(r.status === 401 && r.message, message, what);
  }
  const mismatch = await ask({ authorization: basic('alice', 'alice-pw'), account: 'bob', scopes: [] });
  t.match(mismatch, { status: 401, message: /account 'bob' does not match/ });
  t.equal(accounts.tokens.length, before);
  t.equal((await ask({ authorization: basic('alice', 'alice-pw'), account: 'alice', scopes: [] })).status, 200, 'a matching account is fine');
});

t.test('authenticated: the intersection of requested and allowed, partial grants are not errors', async (t) => {
  const alice = basic('alice', 'alice-pw');
  const bob = basic('bob', 'bob-pw');
  const carol = basic('carol', 'carol-pw');

  t.same(await granted({ authorization: alice, scopes: ['repository:alice/private:*'] }), [{ type: 'repository', name: 'alice/private', actions: ['pull', 'push', 'delete'] }], 'the owner may do anything');
  t.same(await granted({ authorization: bob, scopes: ['repository:library/public:pull,push'] }), [{ type: 'repository', name: 'library/public', actions: ['pull'] }], 'partial: pull of a public repository, no push');
  t.same(await granted({ authorization: bob, scopes: ['repository:alice/private:pull,push'] }), [], "someone else's private repository: nothing, and still 200");
  t.same(await granted({ authorization: bob, scopes: ['repository:alice/shared:pull,push,delete'] }), [{ type: 'repository', name: 'alice/shared', actions: ['pull'] }], "someone else's public repository: pull only");
  t.same(await granted({ authorization: carol, scopes: ['repository:alice/private:pull,push'] }), [{ type: 'repository', name: 'alice/private', actions: ['pull', 'push'] }], 'a mapped user may push');
  t.same(await granted({ authorization: bob, scopes: ['repository:katello/private:pull'] }), [], 'a private repository without owner or mapping');
  t.same(await granted({ authorization: bob, scopes: ['registry:catalog:*'] }), [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
  t.same(await granted({ authorization: bob, scopes: ['registry:catalog:pull', 'registry:other:*'] }), [], 'only registry:catalog:*');

  t.same(
    await granted({ authorization: bob, scopes: ['repository:bob/new:pull', 'repository:bob/new:push library/public:pull'] }),
    [{ type: 'repository', name: 'bob/new', actions: ['pull', 'push'] }],
    'scopes of one repository merge; an invalid one among them is skipped',
  );
});

t.test('push to a repository that does not exist yet', async (t) => {
  const bob = basic('bob', 'bob-pw');
  t.same(await granted({ authorization: bob, scopes: ['repository:bob/app:pull,push'] }), [{ type: 'repository', name: 'bob/app', actions: ['pull', 'push'] }], 'any user: it will be created, private, theirs');
  t.same(last().user, 'bob');
  t.same(await granted({ scopes: ['repository:bob/app:pull,push'] }), [], 'not anonymously');
  // Now it exists (as the push route would create it): bob's, private.
  accounts.repos.set('bob/app', { authRequired: true, owner: 'bob' });
  t.teardown(() => accounts.repos.delete('bob/app'));
  t.same(await granted({ authorization: basic('alice', 'alice-pw'), scopes: ['repository:bob/app:pull,push'] }), [], 'then it is closed to others');
  t.same(await granted({ authorization: bob, scopes: ['repository:bob/app:push'] }), [{ type: 'repository', name: 'bob/app', actions: ['push'] }]);
  t.same([...(await allowedActions(accounts, 'alice', 'bob/app'))], [], 'allowedActions: the current decision a route re-checks');
  t.same([...(await allowedActions(accounts, 'bob', 'bob/app'))], ['pull', 'push', 'delete']);
});

t.test('scope names with host:port/ and colons are parsed, and granted nothing: they are not repository names', async (t) => {
  const bob = basic('bob', 'bob-pw');
  t.same(await granted({ authorization: bob, scopes: ['repository:localhost:5000/bob/app:pull,push'] }), []);
  t.same(await granted({ scopes: ['repository:localhost:5000/library/public:pull'] }), []);
  t.same(await granted({ authorization: bob, scopes: ['repository:bob/app:v1:push', 'repository:Bob/App:push', 'repository:../etc:push'] }), []);
  t.same(
    await granted({ authorization: bob, scopes: ['repository:reg.example.com:443/x:pull repository:library/public:pull'] }),
    [{ type: 'repository', name: 'library/public', actions: ['pull'] }],
    'the valid scope of the same string is still granted',
  );
});

t.test('tokenAllows / tokenAllowsCatalog', async (t) => {
  const grants: GrantedScope[] = [
    { type: 'repository', name: 'team/app', actions: ['pull', 'push'] },
    { type: 'repository', name: 'team/other', actions: ['pull'] },
  ];
  t.equal(tokenAllows(grants, 'team/app', 'pull'), true);
  t.equal(tokenAllows(grants, 'team/app', 'push'), true);
  t.equal(tokenAllows(grants, 'team/app', 'delete'), false);
  t.equal(tokenAllows(grants, 'team/other', 'push'), false);
  t.equal(tokenAllows(grants, 'team', 'pull'), false, 'no prefix matching');
  t.equal(tokenAllows(grants, 'team/app/sub', 'pull'), false);
  t.equal(tokenAllows([], 'team/app', 'pull'), false);
  t.equal(tokenAllowsCatalog(grants), false);
  t.equal(tokenAllowsCatalog([...grants, { type: 'registry', name: 'catalog', actions: ['*'] }]), true);
});

t.test('mayCreateRepository: own name, granted namespaces, top-level names only when open', async (t) => {
  t.equal(mayCreateRepository('bob', 'bob/app', [], false), true, 'under the own name');
  t.equal(mayCreateRepository('bob', 'bob/team/app', [], false), true, 'deeper under the own name');
  t.equal(mayCreateRepository('bob', 'alice/app', [], false), false, "under someone else's name");
  t.equal(mayCreateRepository('bob', 'bobby/app', [], false), false, 'a name that merely starts with the user name');
  t.equal(mayCreateRepository('bob', 'bob', [], false), false, 'the bare user name is a top-level name');
  t.equal(mayCreateRepository('bob', 'app', [], false), false, 'top-level: closed by default');
  t.equal(mayCreateRepository('bob', 'app', [], true), true, 'top-level: open when configured');
  t.equal(mayCreateRepository('bob', 'alice/app', [], true), false, 'opening top-level names opens no namespace');
  t.equal(mayCreateRepository('bob', 'team/app', ['team'], false), true, 'a granted namespace');
  t.equal(mayCreateRepository('bob', 'org/team/app', ['org/team'], false), true, 'a granted nested namespace');
  t.equal(mayCreateRepository('bob', 'org/other/app', ['org/team'], false), false, 'not its siblings');
  t.equal(mayCreateRepository('bob', 'team', ['team'], false), false, 'not the namespace name itself');

  // Through the token service: nothing granted where the user may not create.
  const bob = basic('bob', 'bob-pw');
  t.same(await granted({ authorization: bob, scopes: ['repository:alice/new:pull,push', 'repository:toplevel:pull,push'] }), [], 'no grant on a new name outside the own namespace');
  accounts.namespaces.set('bob', ['team']);
  accounts.openTopLevel = true;
  t.teardown(() => {
    accounts.namespaces.delete('bob');
    accounts.openTopLevel = false;
  });
  t.same(await granted({ authorization: bob, scopes: ['repository:team/new:push', 'repository:toplevel:push'] }), [
    { type: 'repository', name: 'team/new', actions: ['push'] },
    { type: 'repository', name: 'toplevel', actions: ['push'] },
  ], 'a granted namespace and an open top level');
});
