// The container gateway's management API (katello-api.md §4) through a real
// HTTPS daemon, called as Foreman calls it (its client certificate, its exact
// Rack form bodies, PUT with a trailing slash) and with the JSON equivalents.
// Every effect is checked the way a registry client sees it: the catalog, a
// manifest pulled from a real docker-registry behind the gateway, a host's
// view through a client certificate whose CN is the host UUID.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { buildImage, pushImage } from './helpers/images.ts';
import { startKatelloDouble } from './helpers/katello-double.ts';
import { makePki, type CertPair } from './helpers/pki.ts';
import { ROOT, startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const FIXTURES = join(ROOT, 'test/fixtures/katello');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');

const APP = 'default_organization/product/app';
const PRIV = 'default_organization/product/private';
const HOST_A = '6f2a1c3e-8b4d-4e5f-9a7b-1c2d3e4f5a6b';
const HOST_B = 'd3b07384-d9a0-4c5e-8f1b-2a3c4d5e6f70';
const HOST_UNKNOWN = '0e0e0e0e-1111-4222-8333-444444444444';
const FORM = 'application/x-www-form-urlencoded';
const JSON_TYPE = 'application/json';
const MANIFEST_ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

// --- the world: a PKI, a real registry with real images, one HTTPS daemon ---

const work = mkdtempSync(join(tmpdir(), 'proxyd-gw-mgmt-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();
t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));

const foreman = pki.client('foreman.example.com');
const stranger = pki.client('stranger.example.com');
const rogueForeman = pki.rogue('foreman.example.com');
const hostA = pki.client(HOST_A);
const hostB = pki.client(HOST_B);
const hostUnknown = pki.client(HOST_UNKNOWN);

const registry = await startRegistry();
t.teardown(() => registry.stop());
const image = await buildImage(join(work, 'images'), { name: 'mgmt', files: { '/etc/hello.txt': 'hello from the management test\n' } });
for (const name of [APP, PRIV]) await pushImage(image.ref, `${registry.host}/${name}:v1`);

// The management routes exist in smart-proxy mode only: foreman_url names a Katello (a double).
const katello = await startKatelloDouble();
t.teardown(() => katello.stop());
// Katello answers no host lookup here: what a host may read comes from the management calls alone.
katello.override((req, res) => {
  if (req.headers.hostuuid === undefined) return false;
  res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":{"message":"host not found"}}');
  return true;
});

const daemon: RunningProxyd = await startProxyd({
  https: true,
  http: false,
  fixtures: false,
  settings: { ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca, trusted_hosts: ['foreman.example.com'], foreman_url: katello.url, log_level: 'INFO' },
  plugins: {
    container_gateway: { enabled: true, pulp_endpoint: registry.url, pulp_registry_path: '/v2/', sqlite_db_path: join(work, 'gw.db') },
  },
});
t.teardown(async () => {
  await daemon.stop();
  rmSync(daemon.dir, { recursive: true, force: true });
});

// --- helpers ---

function brief(r: Reply): string {
  return `${r.status} ${r.body.length > 300 ? `${r.body.slice(0, 300)}...` : r.body}`;
}

interface Call {
  body: string;
  type?: string;
  /** PUT to `<path>/` as Foreman does (default) or to `<path>`. */
  slash?: boolean;
  /** Client certificate; default Foreman's, `null` for none. */
  client?: CertPair | null;
}

function put(route: string, c: Call): Promise<Reply> {
  const headers: Record<string, string> = { Accept: 'application/json', 'X-Request-Id': `mgmt-${route}` };
  if (c.type !== undefined) headers['Content-Type'] = c.type;
  const client = c.client === undefined ? foreman : c.client;
  return request(`${daemon.httpsUrl}/container_gateway/${route}${c.slash === false ? '' : '/'}`, {
    method: 'PUT',
    ca: pki.ca,
    headers,
    body: c.body,
    ...(client ? { client } : {}),
  });
}

/** A management PUT that must succeed (any 2xx, as Foreman accepts). */
async function manage(tt: Tap, route: string, c: Call): Promise<void> {
  const r = await put(route, c);
  tt.ok(r.status >= 200 && r.status < 300, `PUT ${route}${c.slash === false ? '' : '/'} (${c.type}): 2xx, got ${brief(r)}`);
}

function get(path: string, client?: CertPair, headers: Record<string, string> = {}): Promise<Reply> {
  return request(`${daemon.httpsUrl}${path}`, { ca: pki.ca, headers, ...(client ? { client } : {}) });
}

/** The full catalog as a viewer sees it: anonymous (the `unauthenticated` token) or a host certificate. */
async function catalog(tt: Tap, client?: CertPair): Promise<string[]> {
  const r = await get('/v2/_catalog', client, client ? {} : { Authorization: 'Bearer unauthenticated' });
  tt.equal(r.status, 200, `GET /v2/_catalog: ${brief(r)}`);
  return (r.json() as { repositories: string[] }).repositories;
}

async function users(tt: Tap): Promise<string[]> {
  const r = await get('/container_gateway/users', foreman);
  tt.equal(r.status, 200, `GET /container_gateway/users: ${brief(r)}`);
  tt.match(r.headers['content-type'], /application\/json/);
  const body = r.json() as { users: string[] };
  tt.ok(Array.isArray(body.users), 'users is a list');
  return body.users;
}

function manifestStatus(name: string, client?: CertPair): Promise<Reply> {
  return get(`/v2/${name}/manifests/v1`, client, { Accept: MANIFEST_ACCEPT });
}

/** Every view a test compares before/after a refused call. */
async function snapshot(tt: Tap): Promise<Record<string, unknown>> {
  return {
    anonymous: await catalog(tt),
    hostA: await catalog(tt, hostA),
    hostB: await catalog(tt, hostB),
    users: await users(tt),
  };
}

const json = (v: unknown) => JSON.stringify(v);
const repoForm = (entries: Array<[string, boolean]>) =>
  entries.length === 0 ? 'repositories' : entries.map(([n, a]) => `repositories[][repository]=${encodeURIComponent(n)}&repositories[][auth_required]=${a}`).join('&');
const repoJson = (entries: Array<[string, boolean]>) => json({ repositories: entries.map(([repository, auth_required]) => ({ repository, auth_required })) });
const hostsForm = (uuids: string[]) => (uuids.length === 0 ? 'hosts' : uuids.map((u) => `hosts[][uuid]=${u}`).join('&'));
const hostsJson = (uuids: string[]) => json({ hosts: uuids.map((uuid) => ({ uuid })) });

/** Back to nothing: no repositories (mappings cascade), no hosts. */
async function reset(tt: Tap): Promise<void> {
  await manage(tt, 'repository_list', { body: fixture('repository_list-empty.json'), type: JSON_TYPE });
  await manage(tt, 'update_hosts', { body: hostsJson([]), type: JSON_TYPE });
  await manage(tt, 'user_repository_mapping', { body: 'users', type: FORM });
}

// --- tests ---

t.test('a fresh gateway: empty catalog, no users; the catalog needs at least the unauthenticated token', async (t) => {
  t.same(await catalog(t), []);
  t.same(await users(t), []);
  const bare = await get('/v2/_catalog');
  t.equal(bare.status, 401, `no credentials: ${brief(bare)}`);
  const slash = await get('/container_gateway/users/', foreman);
  t.equal(slash.status, 200, `GET /container_gateway/users/ also answers: ${brief(slash)}`);
  t.same(slash.json(), { users: [] });
});

for (const encoding of ['form', 'json'] as const) {
  for (const slash of [true, false]) {
    t.test(`every management call, ${encoding} bodies, PUT ${slash ? 'with' : 'without'} a trailing slash`, async (t) => {
      const type = encoding === 'form' ? `${FORM}` : JSON_TYPE;
      const body = (name: string) => fixture(`${name}.${encoding}`);
      const call = (route: string, b: string) => manage(t, route, { body: b, type, slash });
      await reset(t);

      await call('repository_list', body('repository_list-empty'));
      t.same(await catalog(t), [], 'repository_list-empty: no repositories');

      await call('repository_list', body('repository_list'));
      t.same(await catalog(t), [APP], 'repository_list: only the public repository in the anonymous catalog');
      t.same(await catalog(t, hostA), [APP], 'a host without mappings sees the public one only');
      t.equal((await manifestStatus(APP)).status, 200, 'the public manifest is served anonymously');
      const hidden = await manifestStatus(PRIV);
      t.equal(hidden.status, 401, `the private manifest is hidden (no credentials: log in): ${brief(hidden)}`);
      t.match(hidden.json(), { errors: [{ code: 'UNAUTHORIZED' }] });

      await call('user_repository_mapping', body('user_repository_mapping'));
      t.same((await users(t)).sort(), ['admin', 'bob'], 'users appear after user_repository_mapping');
      t.same(await catalog(t), [APP], 'user mappings do not make anything public');

      // update_host_repositories creates host A (not yet known) with its list.
      await call('update_host_repositories', body('update_host_repositories'));
      t.same(await catalog(t, hostA), [APP, PRIV], 'update_host_repositories: host A sees public + its private repository');
      t.same(await catalog(t, hostB), [APP], 'host B is not mapped yet');
      t.equal((await manifestStatus(PRIV, hostA)).status, 200, 'host A pulls the private manifest');
      t.equal((await manifestStatus(PRIV, hostB)).status, 404, 'host B does not');

      await call('update_hosts', body('update_hosts'));
      t.same(await catalog(t, hostA), [APP, PRIV], 'update_hosts keeps the mapping of a host it keeps');

      await call('host_repository_mapping', body('host_repository_mapping'));
      t.same(await catalog(t, hostA), [APP, PRIV], 'host_repository_mapping: host A');
      t.same(await catalog(t, hostB), [APP, PRIV], 'host_repository_mapping: host B');
      t.equal((await manifestStatus(PRIV, hostB)).status, 200, 'host B pulls the private manifest');
      t.same(await catalog(t, hostUnknown), [APP], 'an unmapped host UUID sees the public repository only');
      t.same(await catalog(t), [APP], 'anonymous still sees the public repository only');

      // update_hosts is a full replacement: host A is forgotten, with its mapping.
      await call('update_hosts', encoding === 'form' ? hostsForm([HOST_B]) : hostsJson([HOST_B]));
      t.same(await catalog(t, hostA), [APP], 'a host dropped by update_hosts loses its private repositories');
      t.same(await catalog(t, hostB), [APP, PRIV], 'the kept host keeps them');
      // host_repository_mapping skips hosts that are not known.
      await call('host_repository_mapping', body('host_repository_mapping'));
      t.same(await catalog(t, hostA), [APP], 'host_repository_mapping skips an unknown host');
      t.same(await catalog(t, hostB), [APP, PRIV]);
    });
  }
}

t.test('repository_list is an atomic replacement that keeps the mappings of kept repositories', async (t) => {
  await reset(t);
  await manage(t, 'repository_list', { body: fixture('repository_list.form'), type: FORM });
  await manage(t, 'update_hosts', { body: fixture('update_hosts.form'), type: FORM });
  await manage(t, 'host_repository_mapping', { body: fixture('host_repository_mapping.form'), type: FORM });
  await manage(t, 'user_repository_mapping', { body: fixture('user_repository_mapping.form'), type: FORM });
  t.same(await catalog(t, hostA), [APP, PRIV]);
  t.equal((await manifestStatus(PRIV, hostA)).status, 200);

  // The next sync: app is gone, private stays (still private), a new public one appears.
  const NEW = 'default_organization/product/new';
  await manage(t, 'repository_list', { body: repoForm([[PRIV, true], [NEW, false]]), type: FORM });
  t.same(await catalog(t), [NEW], 'the removed repository left the catalog');
  const gone = await manifestStatus(APP);
  t.equal(gone.status, 401, `the removed repository is not served (to an anonymous client: 401, as any unknown one): ${brief(gone)}`);
  t.same(await catalog(t, hostA), [NEW, PRIV], 'host A keeps its private repository across the update (no access gap)');
  const kept = await manifestStatus(PRIV, hostA);
  t.equal(kept.status, 200, `host A still pulls the private manifest: ${brief(kept)}`);
  t.same(await catalog(t, hostB), [NEW, PRIV], 'so does host B');

  // Readers during a burst of updates never see the private repository missing.
  const updates = Array.from({ length: 10 }, (_, i) =>
    put('repository_list', { body: repoForm([[PRIV, true], [NEW, false], [`burst/repo-${i}`, false]]), type: FORM }));
  const reads = Array.from({ length: 30 }, () => get('/v2/_catalog', hostA));
  const [u, r] = await Promise.all([Promise.all(updates), Promise.all(reads)]);
  t.ok(u.every((x) => x.status === 200), 'every update answered 200');
  t.ok(r.every((x) => x.status === 200 && (x.json() as { repositories: string[] }).repositories.includes(PRIV)), 'every concurrent read by host A lists the private repository');
  t.equal((await manifestStatus(PRIV, hostA)).status, 200);

  // Turning a private repository public and back.
  await manage(t, 'repository_list', { body: repoJson([[PRIV, false]]), type: JSON_TYPE });
  t.same(await catalog(t), [PRIV], 'auth_required=false makes it public');
  await manage(t, 'repository_list', { body: repoJson([[PRIV, true]]), type: JSON_TYPE });
  t.same(await catalog(t), [], 'auth_required=true makes it private again');
  t.same(await catalog(t, hostA), [PRIV], 'host A kept its mapping through both changes');
});

t.test('malformed bodies: 400 with a JSON {error} naming the problem, nothing changed', async (t) => {
  await reset(t);
  await manage(t, 'repository_list', { body: repoJson([['base/line', false], [PRIV, true]]), type: JSON_TYPE });
  await manage(t, 'update_hosts', { body: hostsJson([HOST_A]), type: JSON_TYPE });
  await manage(t, 'host_repository_mapping', { body: fixture('host_repository_mapping.json'), type: JSON_TYPE });
  await manage(t, 'user_repository_mapping', { body: fixture('user_repository_mapping.json'), type: JSON_TYPE });
  const before = await snapshot(t);
  t.same(before, { anonymous: ['base/line'], hostA: ['base/line', PRIV], hostB: ['base/line'], users: ['admin', 'bob'] }, 'baseline');

  const upper = 'Default_Organization/product/app';
  const cases: Array<{ what: string; route: string; body: string; type?: string; error: RegExp[] }> = [
    { what: 'malformed-percent.form', route: 'repository_list', body: fixture('malformed-percent.form'), type: FORM, error: [/%-encoding|percent/i, /repositories\[\]\[repository\]/] },
    { what: 'malformed-type-mix.form', route: 'repository_list', body: fixture('malformed-type-mix.form'), type: FORM, error: [/repositories/, /Hash|Array|type/] },
    { what: 'auth-required-newline.form', route: 'repository_list', body: fixture('auth-required-newline.form'), type: FORM, error: [/repositories\[1\]\.auth_required/, /true\\n/] },
    { what: 'invalid JSON', route: 'repository_list', body: '{"repositories":[{"repository":"a/b","auth_required":false}', type: JSON_TYPE, error: [/JSON/] },
    { what: 'unknown Content-Type text/plain', route: 'repository_list', body: fixture('repository_list-empty.form'), type: 'text/plain', error: [/Content-Type/i, /text\/plain/] },
    { what: 'a JSON array body', route: 'repository_list', body: '[]', type: JSON_TYPE, error: [/body/, /expected an object/] },
    { what: 'no Content-Type with a form body', route: 'repository_list', body: fixture('repository_list.form'), error: [/Content-Type/i, /\(none\)/] },
    { what: 'uppercase repository name (JSON)', route: 'repository_list', body: repoJson([[upper, false]]), type: JSON_TYPE, error: [/repositories\[0\]\.repository/, /invalid repository name/, /Default_Organization/] },
    { what: 'uppercase repository name (form)', route: 'repository_list', body: repoForm([['ok/one', false], [upper, false]]), type: FORM, error: [/repositories\[1\]\.repository/, /Default_Organization/] },
    { what: 'uppercase repository name in a user mapping', route: 'user_repository_mapping', body: `users[][carol][][repository]=${encodeURIComponent(upper)}&users[][carol][][auth_required]=true`, type: FORM, error: [/users\[0\]\.carol\[0\]\.repository/, /Default_Organization/] },
    { what: 'uppercase repository name in a host mapping', route: 'host_repository_mapping', body: json({ hosts: [{ [HOST_B]: [{ repository: upper, auth_required: true }] }] }), type: JSON_TYPE, error: [/hosts\[0\]/, /Default_Organization/] },
    { what: 'auth_required "yes" in update_host_repositories', route: 'update_host_repositories', body: json({ hosts: [{ [HOST_B]: [{ repository: PRIV, auth_required: 'yes' }] }] }), type: JSON_TYPE, error: [/auth_required/, /"yes"/] },
  ];
  for (const route of ['repository_list', 'user_repository_mapping', 'update_hosts', 'host_repository_mapping', 'update_host_repositories']) {
    cases.push({ what: `invalid JSON to ${route}`, route, body: '{"oops": ', type: JSON_TYPE, error: [/JSON/] });
    cases.push({ what: `text/plain to ${route}`, route, body: '{}', type: 'text/plain', error: [/Content-Type/i, /text\/plain/] });
  }

  for (const c of cases) {
    for (const slash of [true, false]) {
      await t.test(`${c.what} → PUT ${c.route}${slash ? '/' : ''}`, async (t) => {
        const r = await put(c.route, { body: c.body, type: c.type, slash });
        t.equal(r.status, 400, brief(r));
        t.match(r.headers['content-type'], /application\/json/);
        let err = '';
        try {
          err = (r.json() as { error: string }).error;
        } catch {
          t.fail(`not JSON: ${r.body}`);
        }
        t.type(err, 'string', 'the body has an error message');
        for (const re of c.error) t.match(err, re, `the error names the problem (${re})`);
        t.same(await snapshot(t), before, 'nothing changed');
      });
    }
  }
});

t.test('without a trusted verified client certificate: 403 on every management route, nothing changed', async (t) => {
  await reset(t);
  await manage(t, 'repository_list', { body: fixture('repository_list.json'), type: JSON_TYPE });
  await manage(t, 'update_hosts', { body: fixture('update_hosts.json'), type: JSON_TYPE });
  await manage(t, 'host_repository_mapping', { body: fixture('host_repository_mapping.json'), type: JSON_TYPE });
  await manage(t, 'user_repository_mapping', { body: fixture('user_repository_mapping.json'), type: JSON_TYPE });
  const before = await snapshot(t);
  t.same(before, { anonymous: [APP], hostA: [APP, PRIV], hostB: [APP, PRIV], users: ['admin', 'bob'] }, 'baseline');

  // Bodies that would each change something if they were accepted.
  const puts: Array<[string, string]> = [
    ['repository_list', fixture('repository_list-empty.form')],
    ['user_repository_mapping', 'users[][mallory][][repository]=default_organization%2Fproduct%2Fprivate&users[][mallory][][auth_required]=true'],
    ['update_hosts', 'hosts'],
    ['host_repository_mapping', 'hosts'],
    ['update_host_repositories', `hosts[][${HOST_UNKNOWN}][][repository]=default_organization%2Fproduct%2Fprivate&hosts[][${HOST_UNKNOWN}][][auth_required]=true`],
  ];
  const clients: Array<[string, CertPair | null, RegExp]> = [
    ['no client certificate', null, /No client SSL certificate supplied/],
    ['a CA-signed certificate with an untrusted CN', stranger, /Untrusted client stranger\.example\.com/],
    ['a CA-signed host certificate', hostA, /Untrusted client/],
    ['a self-signed certificate whose CN is trusted', rogueForeman, /not verified/],
  ];
  for (const [who, client, reason] of clients) {
    await t.test(who, async (t) => {
      const check = (r: Reply, what: string) => {
        t.equal(r.status, 403, `${what}: ${brief(r)}`);
        t.match(r.headers['content-type'], /application\/json/, `${what}: JSON`);
        t.match((r.json() as { error: string }).error, reason, `${what}: says why`);
      };
      for (const path of ['/container_gateway/users', '/container_gateway/users/']) {
        check(await request(`${daemon.httpsUrl}${path}`, { ca: pki.ca, ...(client ? { client } : {}) }), `GET ${path}`);
      }
      for (const [route, body] of puts) {
        for (const slash of [true, false]) {
          check(await put(route, { body, type: FORM, slash, client }), `PUT ${route}${slash ? '/' : ''}`);
          check(await put(route, { body: '{}', type: JSON_TYPE, slash, client }), `PUT ${route}${slash ? '/' : ''} (JSON)`);
        }
      }
      t.same(await snapshot(t), before, 'nothing changed');
    });
  }
});

t.test('10,000 repositories in Foreman\'s form encoding, paged through the catalog', async (t) => {
  await reset(t);
  // Names whose lexical order differs from numeric order, sent shuffled.
  const names = Array.from({ length: 10_000 }, (_, i) => `default_organization/bulk-${i % 7}/repo-${i}`);
  const shuffled = [...names];
  let seed = 42;
  for (let i = shuffled.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const j = seed % (i + 1);
    [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
  }
  const body = shuffled.map((n) => `repositories[][repository]=${n.replaceAll('/', '%2F')}&repositories[][auth_required]=false`).join('&');
  t.match(body, /^repositories\[\]\[repository\]=default_organization%2Fbulk-/, 'Foreman encodes / as %2F');
  const r = await put('repository_list', { body, type: FORM });
  t.equal(r.status, 200, brief(r));

  const expected = [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const seen: string[] = [];
  let url: string | undefined = `${daemon.httpsUrl}/v2/_catalog?n=1000`;
  let pages = 0;
  while (url) {
    t.ok(pages < 20, 'paging terminates');
    if (pages >= 20) break;
    const page = await request(url, { ca: pki.ca, headers: { Authorization: 'Bearer unauthenticated' } });
    t.equal(page.status, 200, `${url}: ${page.status}`);
    const repos = (page.json() as { repositories: string[] }).repositories;
    t.ok(repos.length <= 1000, `page ${pages + 1}: at most n=1000 entries (${repos.length})`);
    seen.push(...repos);
    pages++;
    const link = page.headers.link;
    if (link === undefined) {
      url = undefined;
      break;
    }
    const m = /^<([^>]+)>;\s*rel="next"$/.exec(String(link));
    t.ok(m, `Link header shape: ${link}`);
    if (!m) break;
    const next = new URL(m[1]!);
    t.equal(next.origin, daemon.httpsUrl, 'the Link is an absolute URL on the gateway');
    t.equal(next.pathname, '/v2/_catalog');
    t.equal(next.searchParams.get('n'), '1000');
    t.equal(next.searchParams.get('last'), repos[repos.length - 1], 'last = the last name of this page');
    url = next.href;
  }
  t.equal(pages, 10, '10 pages of 1000');
  t.equal(seen.length, 10_000, 'every repository appears');
  t.equal(new Set(seen).size, 10_000, 'none twice');
  t.ok(seen.every((n, i) => n === expected[i]), 'in lexical order');

  const zero = await get('/v2/_catalog?n=0', undefined, { Authorization: 'Bearer unauthenticated' });
  t.equal(zero.status, 200, brief(zero));
  t.same(zero.json(), { repositories: [] }, 'n=0: an empty list');
  t.equal(zero.headers.link, undefined, 'n=0: no Link');

  // Back to a small list: the 10,000 are gone in one replacement.
  await manage(t, 'repository_list', { body: fixture('repository_list.form'), type: FORM });
  t.same(await catalog(t), [APP]);
});
