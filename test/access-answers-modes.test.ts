// The 401-versus-404 answers of registry-clients.md §4 in the modes and
// backends test/access-answers.test.ts (standalone, embedded store) does not
// cover: smart-proxy mode (a Katello double as the main server) with the
// embedded store, and standalone mode with the pulp backend (Debian's
// docker-registry at pulp_endpoint). Smart-proxy mode with the pulp backend is
// in test/gateway-pull.test.ts. Without credentials a private and an unknown
// repository both answer 401 with a challenge naming the repository; to an
// identified client (a user, a content host) that may not read them, 404
// NAME_UNKNOWN. Nothing in the database changes.
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request, type Reply } from './helpers/http.ts';
import { buildImage, layoutManifest, pushImage, skopeo } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { makePki } from './helpers/pki.ts';
import { startProxyd, type RunningProxyd } from './helpers/proxyd.ts';
import { gatewayRows } from './helpers/test-database.ts';
import { startRegistry } from './helpers/registry.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const HOST_UUID = '7a1e0c3d-3333-4e5f-8a9b-445566778899';
const OTHER_HOST = '7a1e0c3d-4444-4e5f-8a9b-445566778899';
const DIGEST = `sha256:${'ab'.repeat(32)}`;
const work = mkdtempSync(join(tmpdir(), 'gw-answers-modes-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const pki = makePki();

const registry = await startRegistry();
t.teardown(() => registry.stop());
const katello = new KatelloDouble({
  users: { admin: { password: 'changeme', repositories: ['org/prod/priv'] }, bob: { password: 'bobpw', repositories: [] } },
  publicRepositories: ['org/prod/app'],
  hosts: { [HOST_UUID]: ['org/prod/priv'], [OTHER_HOST]: [] },
});
const foremanUrl = await katello.start();
t.teardown(() => katello.stop());

async function gateway(name: string, settings: Record<string, unknown>, plugin: Record<string, unknown>): Promise<{ proxyd: RunningProxyd; db: string }> {
  const db = join(work, `${name}.db`);
  const proxyd = await startProxyd({
    fixtures: false,
    https: true,
    settings: { log_level: 'WARN', ssl_certificate: pki.server.cert, ssl_private_key: pki.server.key, ssl_ca_file: pki.ca, ...settings },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: db, ...plugin } },
  });
  t.teardown(() => proxyd.stop());
  const repositories = [{ repository: 'org/prod/app', auth_required: false }, { repository: 'org/prod/priv', auth_required: true }];
  if (settings.foreman_url === undefined) {
    // Standalone mode has no Katello management routes (they answer 404): the rows are written as
    // Katello's repository_list would have written them.
    const conn = await gatewayRows(db);
    try {
      for (const r of repositories) await conn.run('INSERT INTO repositories (name, auth_required) VALUES (?, ?)', [r.repository, r.auth_required ? 1 : 0]);
    } finally {
      await conn.close();
    }
    return { proxyd, db };
  }
  // As Katello syncs a proxy: one public, one private repository.
  const listed = await request(`${proxyd.httpUrl}/container_gateway/repository_list/`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ repositories }),
  });
  if (listed.status !== 200) throw new Error(`repository_list: ${listed.status} ${listed.body}`);
  return { proxyd, db };
}

async function snapshot(db: string): Promise<unknown> {
  const conn = await gatewayRows(db);
  try {
    const tables = [];
    for (const table of ['repositories', 'repositories_users', 'hosts_repositories', 'users']) tables.push(await conn.all(`SELECT * FROM ${table} ORDER BY 1, 2`));
    return tables;
  } finally {
    await conn.close();
  }
}

function answer(res: Reply): { status: number; code?: string; challenge?: string } {
  let code: string | undefined;
  try {
    code = res.json<{ errors: Array<{ code: string }> }>().errors[0]?.code;
  } catch {
    // HEAD: no body
  }
  return { status: res.status, ...(code ? { code } : {}), ...(res.headers['www-authenticate'] ? { challenge: String(res.headers['www-authenticate']) } : {}) };
}

const READS: Array<[string, (name: string) => string]> = [
  ['GET', (n) => `/v2/${n}/manifests/v1`],
  ['HEAD', (n) => `/v2/${n}/manifests/v1`],
  ['GET', (n) => `/v2/${n}/blobs/${DIGEST}`],
  ['GET', (n) => `/v2/${n}/tags/list`],
];

/**
 * Each read of a private and an unknown repository by `who`: the same status
 * and code for both, and a challenge naming each repository.
 */
async function expectRefused(t: Tap, origin: string, who: string, opts: { headers?: Record<string, string>; client?: { cert: string; key: string } }, status: 401 | 404): Promise<void> {
  const code = status === 401 ? 'UNAUTHORIZED' : 'NAME_UNKNOWN';
  const host = new URL(origin).host;
  for (const [method, path] of READS) {
    for (const name of ['org/prod/priv', 'org/prod/absent']) {
      const res = await request(`${origin}${path(name)}`, { method, ...opts, ...(opts.client ? { ca: pki.ca } : {}) });
      t.same(answer(res), {
        status,
        ...(method === 'HEAD' ? {} : { code }),
        challenge: `Bearer realm="${origin}/v2/token",service="${host}",scope="repository:${name}:pull"`,
      }, `${who}: ${method} ${path(name)}`);
    }
  }
}

const NO_CREDENTIALS = [
  ['no Authorization', {}],
  ['the unauthenticated token', { headers: { Authorization: 'Bearer unauthenticated' } }],
] as const;

t.test('smart-proxy mode, embedded store: 401 without credentials, 404 for a user or host without access', async (t) => {
  const { proxyd, db } = await gateway('smart-local', { foreman_url: foremanUrl }, { content_backend: 'local', storage_path: join(work, 'smart-local-storage') });
  const before = await snapshot(db);
  for (const [who, opts] of NO_CREDENTIALS) await expectRefused(t, proxyd.httpUrl, who, opts, 401);
  t.same(await snapshot(db), before, 'the anonymous requests changed nothing');

  const login = await request(`${proxyd.httpUrl}/v2/token?account=bob&scope=repository:org/prod/priv:pull`, { headers: { Authorization: `Basic ${Buffer.from('bob:bobpw').toString('base64')}` } });
  t.equal(login.status, 200, login.body);
  const bob = { headers: { Authorization: `Bearer ${login.json().token as string}` } };
  // Those who may read get past the access check (there is no content here yet).
  // (The host's catalog is fetched from Katello on its first request.)
  const host = await request(`${proxyd.httpsUrl}/v2/org/prod/priv/manifests/v1`, { ca: pki.ca, client: pki.client(HOST_UUID) });
  t.same(answer(host), { status: 404, code: 'MANIFEST_UNKNOWN' }, 'the mapped host: the repository exists, the tag does not');
  // A login wins over a certificate: the mapped host's certificate with bob's token is bob.
  const both = await request(`${proxyd.httpsUrl}/v2/org/prod/priv/manifests/v1`, { ca: pki.ca, client: pki.client(HOST_UUID), ...bob });
  t.same(answer(both), { status: 404, code: 'NAME_UNKNOWN', challenge: `Bearer realm="${proxyd.httpsUrl}/v2/token",service="${new URL(proxyd.httpsUrl).host}",scope="repository:org/prod/priv:pull"` }, "the mapped host's certificate with bob's token: bob, who may not read it");
  const hostAnon = await request(`${proxyd.httpsUrl}/v2/org/prod/priv/manifests/v1`, { ca: pki.ca, client: pki.client(HOST_UUID), headers: { Authorization: 'Bearer unauthenticated' } });
  t.same(answer(hostAnon), { status: 404, code: 'MANIFEST_UNKNOWN' }, 'with the anonymous token the certificate still identifies the host');
  const afterLogin = await snapshot(db);
  await expectRefused(t, proxyd.httpUrl, 'bob (logged in, no access)', bob, 404);
  await expectRefused(t, proxyd.httpsUrl, 'a content host without the repository', { client: pki.client(OTHER_HOST) }, 404);
  const anonPublic = await request(`${proxyd.httpUrl}/v2/org/prod/app/tags/list`);
  t.same([anonPublic.status, anonPublic.json()], [200, { name: 'org/prod/app', tags: [] }], 'a public repository answers anonymous clients');

  t.same(await snapshot(db), afterLogin, 'the refused requests changed nothing');
});

t.test('standalone mode, pulp backend: 401 without credentials, 404 for a user without access', async (t) => {
  const { proxyd, db } = await gateway('standalone-pulp', {}, { pulp_endpoint: registry.url, pulp_registry_path: '/v2/' });
  const added = await request(`${proxyd.httpUrl}/container_gateway/admin/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'alice', password: 'alice-pw' }) });
  t.equal(added.status, 201, added.body);
  const before = await snapshot(db);
  for (const [who, opts] of NO_CREDENTIALS) await expectRefused(t, proxyd.httpUrl, who, opts, 401);

  const login = await request(`${proxyd.httpUrl}/v2/token?scope=repository:org/prod/priv:pull`, { headers: { Authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` } });
  t.equal(login.status, 200, login.body);
  const alice = { headers: { Authorization: `Bearer ${login.json().token as string}` } };
  await expectRefused(t, proxyd.httpUrl, 'alice (logged in, not mapped)', alice, 404);
  const pub = await request(`${proxyd.httpUrl}/v2/org/prod/app/tags/list`, alice);
  t.equal(pub.status, 404, 'a public repository passes the access check and reaches the backend');
  t.equal(answer(pub).code, 'NAME_UNKNOWN', "the backend's own answer: it has no such repository");
  t.notOk(pub.headers['www-authenticate'], 'without a challenge: the gateway did not refuse it');
  t.same(await snapshot(db), before, 'the refused requests changed nothing');

  // A content host mapped to the private repository, with no credentials: the standalone ping
  // challenges its certificate, skopeo takes the anonymous token, and the certificate still reads.
  const img = await buildImage(work, { name: 'priv', files: { '/etc/priv.txt': 'for the host\n' } });
  await pushImage(img.ref, `${registry.host}/org/prod/priv:v1`);
  // Written as Katello's update_host_repositories would (standalone mode has no management routes).
  const conn = await gatewayRows(db);
  try {
    const [host] = await conn.all<{ id: number }>('INSERT INTO hosts (uuid) VALUES (?) RETURNING id', [HOST_UUID]);
    await conn.run("INSERT INTO hosts_repositories (host_id, repository_id) SELECT ?, id FROM repositories WHERE name = 'org/prod/priv'", [host!.id]);
  } finally {
    await conn.close();
  }
  const certDir = join(work, 'host-certs.d');
  mkdirSync(certDir, { recursive: true });
  cpSync(pki.client(HOST_UUID).cert, join(certDir, 'client.cert'));
  cpSync(pki.client(HOST_UUID).key, join(certDir, 'client.key'));
  cpSync(pki.ca, join(certDir, 'ca.crt'));
  const inspect = await skopeo(['inspect', '--cert-dir', certDir, `docker://${new URL(proxyd.httpsUrl).host}/org/prod/priv:v1`]);
  t.equal(inspect.code, 0, inspect.stderr);
  t.equal(JSON.parse(inspect.stdout || '{}').Digest, layoutManifest(img.layout).digest, 'the mapped host reads the private repository');
});
