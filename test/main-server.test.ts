// The test "main server" (helpers/main-server.ts): docker-registry with Docker
// token auth, tokens from the Katello double, driven by real clients.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { buildImage, inspectImage, layoutManifest, pushImage, skopeo } from './helpers/images.ts';
import { decodeJwt } from './helpers/katello-double.ts';
import { startMainServer } from './helpers/main-server.ts';

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** `Bearer realm="...",service="...",scope="..."` → its parameters. */
function challenge(header: string | string[] | undefined): Record<string, string> {
  const h = String(header ?? '');
  const out: Record<string, string> = {};
  for (const m of h.replace(/^Bearer\s+/i, '').matchAll(/(\w+)="([^"]*)"/g)) out[m[1]!] = m[2]!;
  return out;
}

const work = mkdtempSync(join(tmpdir(), 'proxyd-main-server-test-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const main = await startMainServer({
  users: {
    pusher: { password: 'pw', repositories: [], push: true },
    reader: { password: 'rpw', repositories: ['acme/test/hello'] },
    cataloger: { password: 'cpw', repositories: [], catalog: true },
  },
});
t.teardown(() => main.stop());

const img = await buildImage(work, { name: 'hello', files: { '/etc/hello.txt': 'hello from the main server\n' } });
const built = layoutManifest(img.layout);
const ref = `${main.registry.host}/acme/test/hello:v1`;

t.test('the registry asks for a token from the Katello double', async (t) => {
  t.equal(main.mainRegistryUrl, `${main.registry.url}/v2/`);
  t.equal(main.foremanUrl, main.katello.url);
  const r = await request(main.mainRegistryUrl);
  t.equal(r.status, 401, 'anonymous /v2/ is 401');
  const c = challenge(r.headers['www-authenticate']);
  t.equal(c.realm, `${main.foremanUrl}v2/token`, 'realm is the double');
  t.equal(c.service, 'test-registry');
});

t.test('skopeo pushes with --dest-creds and reads the image back', async (t) => {
  const before = main.katello.requestsTo('/v2/token').length;
  await pushImage(img.ref, ref, { creds: 'pusher:pw' });
  const tokenRequests = main.katello.requestsTo('/v2/token').slice(before);
  t.ok(
    tokenRequests.some((r) => r.query.account === 'pusher' && /^repository:acme\/test\/hello:(pull,push|push,pull)$/.test(r.query.scope ?? '')),
    'skopeo followed the realm to the double with account and a push scope',
  );
  const jwt = main.katello.tokenOf('pusher');
  t.ok(jwt, 'a JWT was issued');
  const { header, claims } = decodeJwt(jwt!);
  t.match(header, { typ: 'JWT', alg: 'RS256', x5c: [String] });
  t.match(claims, { iss: 'test-issuer', sub: 'pusher', aud: 'test-registry' });
  t.same(claims.access.find((a) => a.name === 'acme/test/hello')?.actions.sort(), ['pull', 'push']);

  const info = await inspectImage(ref, { creds: 'pusher:pw' });
  t.equal(info.Digest, built.digest, 'same manifest digest as the layout');
  t.same(info.Layers, built.manifest.layers.map((l) => l.digest), 'same layers');
  const asReader = await inspectImage(ref, { creds: 'reader:rpw' });
  t.equal(asReader.Digest, built.digest, 'a user with the repository can read it');

  const anonymous = await skopeo(['inspect', '--tls-verify=false', `docker://${ref}`]);
  t.not(anonymous.code, 0, 'anonymous inspect fails');
  t.match(anonymous.stderr, /unauthorized|authentication required|401/i);
  const wrongPassword = await skopeo(['inspect', '--tls-verify=false', '--creds', 'pusher:nope', `docker://${ref}`]);
  t.not(wrongPassword.code, 0, 'a wrong password fails');
  t.match(wrongPassword.stderr, /unauthorized|authentication required|401/i);
});

t.test('a user without push cannot push', async (t) => {
  const denied = await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'reader:rpw', img.ref, `docker://${main.registry.host}/acme/test/hello:v2`]);
  t.not(denied.code, 0, 'skopeo copy fails');
  t.match(denied.stderr, /denied|unauthorized|authentication required/i, 'with an auth error');
  t.notMatch(denied.stderr, /connection refused|manifest invalid/i);
  const tags = await skopeo(['list-tags', '--tls-verify=false', '--creds', 'pusher:pw', `docker://${main.registry.host}/acme/test/hello`]);
  t.equal(tags.code, 0, tags.stderr);
  t.same(JSON.parse(tags.stdout).Tags, ['v1'], 'no v2 tag appeared');

  const other = await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'reader:rpw', img.ref, `docker://${main.registry.host}/test/other:v1`]);
  t.not(other.code, 0, 'nor to a repository it cannot read');
  t.match(other.stderr, /denied|unauthorized|authentication required/i);
});

t.test('a catalog user lists the registry through the token dance', async (t) => {
  const catalogUrl = `${main.registry.url}/v2/_catalog`;
  const first = await request(catalogUrl);
  t.equal(first.status, 401, 'anonymous catalog is 401');
  const c = challenge(first.headers['www-authenticate']);
  t.equal(c.scope, 'registry:catalog:*', 'the challenge names the catalog scope');

  const tokenFor = async (user: string, password: string) => {
    const u = new URL(c.realm!);
    u.searchParams.set('service', c.service!);
    u.searchParams.set('scope', c.scope!);
    const r = await request(u.href, { headers: { Authorization: basic(user, password) } });
    t.equal(r.status, 200, `token for ${user}`);
    const body = r.json();
    t.match(body, { token: String, expires_in: 3600, issued_at: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$/ }, 'Katello response shape');
    return body.token as string;
  };

  const token = await tokenFor('cataloger', 'cpw');
  const listed = await request(catalogUrl, { headers: { Authorization: `Bearer ${token}` } });
  t.equal(listed.status, 200, listed.body);
  t.same(listed.json().repositories, ['acme/test/hello']);

  const noCatalog = await tokenFor('pusher', 'pw');
  t.same(decodeJwt(noCatalog).claims.access, [], 'nothing granted without catalog: true');
  const refused = await request(catalogUrl, { headers: { Authorization: `Bearer ${noCatalog}` } });
  t.equal(refused.status, 401, 'the registry refuses a token without the catalog grant');
  t.match(String(refused.headers['www-authenticate']), /error="insufficient_scope"/);

  const badCreds = await request(`${c.realm}?service=${c.service}&scope=${c.scope}`, { headers: { Authorization: basic('cataloger', 'wrong') } });
  t.equal(badCreds.status, 401, 'bad credentials get no token');
});

t.test('the access log shows the push', async (t) => {
  const log = await main.flushAccessLog();
  const blobs = [built.manifest.config.digest, ...built.manifest.layers.map((l) => l.digest)];
  for (const d of blobs) {
    t.ok(log.some((e) => e.method === 'HEAD' && e.path === `/v2/acme/test/hello/blobs/${d}` && e.status === 404), `HEAD ${d.slice(0, 19)} → 404 before the upload`);
    t.ok(
      log.some((e) => e.method === 'PUT' && e.path.startsWith('/v2/acme/test/hello/blobs/uploads/') && e.status === 201 && new URL(e.url, 'http://x').searchParams.get('digest') === d),
      `PUT upload ?digest=${d.slice(0, 19)} → 201`,
    );
  }
  t.ok(log.some((e) => e.method === 'PUT' && e.path === '/v2/acme/test/hello/manifests/v1' && e.status === 201), 'manifest PUT → 201');
  t.ok(log.some((e) => e.method === 'GET' && e.path === '/v2/_catalog' && e.status === 200), 'the catalog GET');
  t.notOk(log.some((e) => e.url.includes('proxyd-accesslog-flush')), 'flush markers are not listed');
  t.notOk(log.some((e) => e.path === '/v2/acme/test/hello/manifests/v2' && e.status === 201), 'the refused push stored nothing');
});

t.test('outage: stopRegistry, then startRegistry with the same content', async (t) => {
  await main.stopRegistry();
  t.equal(main.registry.running, false);
  const err = await request(main.mainRegistryUrl, { timeoutMs: 3000 }).then(
    () => undefined,
    (e: NodeJS.ErrnoException) => e,
  );
  t.equal(err?.code, 'ECONNREFUSED', 'connection refused while down');
  const down = await skopeo(['inspect', '--tls-verify=false', '--creds', 'pusher:pw', `docker://${ref}`]);
  t.not(down.code, 0, 'skopeo fails while down');
  t.match(down.stderr, /connection refused/i);

  await main.startRegistry();
  t.equal(main.registry.running, true);
  const r = await request(main.mainRegistryUrl);
  t.equal(r.status, 401, 'back on the same port');
  const info = await inspectImage(ref, { creds: 'reader:rpw' });
  t.equal(info.Digest, built.digest, 'the image is still there');
  const log = await main.flushAccessLog();
  t.ok(log.some((e) => e.method === 'PUT' && e.path === '/v2/acme/test/hello/manifests/v1'), 'the access log keeps lines from before the restart');
  t.ok(log.filter((e) => e.path === '/v2/acme/test/hello/manifests/v1' && e.method === 'GET' && e.status === 200).length >= 3, 'and has the new ones');
});
