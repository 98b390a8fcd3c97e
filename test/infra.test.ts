// The test infrastructure itself, against the real tools: docker-registry,
// umoci, skopeo, podman, and the Katello double.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import {
  buildImage,
  fileDigest,
  inspectImage,
  layoutBlobPath,
  layoutBlobs,
  layoutManifest,
  podman,
  pullImage,
  pushImage,
  skopeo,
} from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { makePki } from './helpers/pki.ts';
import { startRegistry } from './helpers/registry.ts';

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

t.test('registry, umoci, skopeo and podman', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'proxyd-infra-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  t.not(reg.port, 5000, 'never port 5000');
  t.match(reg.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const ping = await request(`${reg.url}/v2/`);
  t.equal(ping.status, 200, 'registry answers /v2/');

  const img = await buildImage(work, {
    name: 'hello',
    files: { '/etc/hello.txt': 'hello\n', '/hello.sh': '#!/bin/sh\necho hello\n' },
    layers: 2,
    randomBytes: 256 * 1024,
  });
  t.equal(img.ref, `oci:${img.layout}:latest`);
  const built = layoutManifest(img.layout, 'latest');
  t.equal(built.manifest.layers.length, 2, 'layout has 2 layers');
  t.ok(built.manifest.layers[0]!.size > 256 * 1024, 'the random bytes make the first layer big');
  for (const d of layoutBlobs(img.layout)) t.equal(await fileDigest(layoutBlobPath(img.layout, d)), d, `blob ${d.slice(0, 19)} matches its digest`);

  const ref = `${reg.host}/test/hello:v1`;
  await pushImage(img.ref, ref);
  const info = await inspectImage(ref);
  t.equal(info.Layers.length, 2, 'skopeo inspect shows 2 layers');
  t.same(info.Layers, built.manifest.layers.map((l) => l.digest), 'same layer digests as the layout');
  const raw = await skopeo(['inspect', '--tls-verify=false', '--raw', `docker://${ref}`]);
  t.equal(raw.code, 0, raw.stderr);
  // umoci writes OCI manifests without the optional top-level mediaType.
  t.equal(JSON.parse(raw.stdout).config.mediaType, 'application/vnd.oci.image.config.v1+json', 'pushed as OCI');

  // Back to another layout: every blob byte for byte.
  const back = join(work, 'back');
  await pullImage(ref, `oci:${back}:v1`);
  t.same(layoutBlobs(back), layoutBlobs(img.layout), 'copied back: same blob digests');
  t.equal(layoutManifest(back, 'v1').digest, built.digest, 'same manifest digest');
  for (const d of layoutBlobs(back)) t.equal(await fileDigest(layoutBlobPath(back, d)), d, `copied blob ${d.slice(0, 19)} intact`);

  // Docker v2s2.
  await pushImage(img.ref, `docker://${reg.host}/test/hello:v2s2`, { format: 'v2s2' });
  const v2 = await inspectImage(`${reg.host}/test/hello:v2s2`, { raw: true });
  t.equal(v2.mediaType, 'application/vnd.docker.distribution.manifest.v2+json', 'pushed as Docker v2s2');
  t.same(v2.layers.map((l: { digest: string }) => l.digest), info.Layers, 'v2s2 keeps the layer blobs');

  // A failure carries skopeo's stderr.
  await t.rejects(pushImage(`oci:${join(work, 'missing')}:x`, `${reg.host}/test/nope:v1`), /skopeo copy .* failed[\s\S]*\S/, 'skopeo errors are reported');

  // podman with private storage.
  const store = join(work, 'podman');
  const pull = await podman(store, ['pull', '--tls-verify=false', ref]);
  t.equal(pull.code, 0, `podman pull: ${pull.stderr}`);
  const images = await podman(store, ['images', '--format', '{{.Repository}}:{{.Tag}}']);
  t.equal(images.code, 0, images.stderr);
  t.match(images.stdout, `${reg.host}/test/hello:v1`, 'podman images lists the pulled image');
  const push = await podman(store, ['push', '--tls-verify=false', ref, `${reg.host}/test/pushed:v1`]);
  t.equal(push.code, 0, `podman push: ${push.stderr}`);
  const pushed = await inspectImage(`${reg.host}/test/pushed:v1`);
  t.equal(pushed.Layers.length, 2, 'podman push: the image is in the registry');
  const tags = await skopeo(['list-tags', '--tls-verify=false', `docker://${reg.host}/test/hello`]);
  t.same(JSON.parse(tags.stdout).Tags.sort(), ['v1', 'v2s2']);
});

t.test('Katello double', async (t) => {
  const k = new KatelloDouble({
    users: {
      alice: { password: 'secret', repositories: ['org/prod/private-a', 'org/prod/shared'] },
      bob: { password: 'pw', repositories: ['org/prod/shared'] },
    },
    publicRepositories: ['org/prod/public'],
    hosts: { '11111111-2222-3333-4444-555555555555': ['org/prod/host-only', 'org/prod/shared'] },
    revoked: new Set(['bob']),
  });
  const base = await k.start();
  t.teardown(() => k.stop());
  t.match(base, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const port = k.port;
  const challenge = `Bearer realm="http://127.0.0.1:${port}/v2/token",service="127.0.0.1",scope="repository:registry:pull,push"`;
  const issuedAt = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$/;

  let r = await request(`${base}v2/token`);
  t.equal(r.status, 200);
  t.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
  let body = r.json();
  t.same(Object.keys(body).sort(), ['expires_in', 'issued_at', 'token']);
  t.equal(body.token, 'unauthenticated');
  t.equal(body.expires_in, 180);
  t.match(body.issued_at, issuedAt);

  r = await request(`${base}v2/token?scope=repository:org/prod/public:pull&service=x`);
  t.equal(r.json().token, 'unauthenticated', 'public pull scope needs no credentials');

  r = await request(`${base}v2/token?scope=repository:org/prod/public:pull,push`);
  t.equal(r.status, 401, 'pull,push on a public repository needs credentials');

  r = await request(`${base}v2/token?scope=repository:org/prod/private-a:pull&account=alice`);
  t.equal(r.status, 401, 'private scope without credentials');
  t.equal(r.headers['www-authenticate'], challenge);
  t.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');

  r = await request(`${base}v2/token?account=alice&scope=repository:org/prod/private-a:pull&service=127.0.0.1`, {
    headers: { Authorization: basic('alice', 'wrong') },
  });
  t.equal(r.status, 401, 'bad password');
  t.same(r.json(), { error: { message: 'Unable to authenticate user alice' } });
  t.equal(r.headers['www-authenticate'], challenge);

  r = await request(`${base}v2/token?account=alice&scope=repository:org/prod/private-a:pull&service=127.0.0.1`, {
    headers: { Authorization: basic('alice', 'secret') },
  });
  t.equal(r.status, 200);
  body = r.json();
  t.same(Object.keys(body).sort(), ['expires_in', 'issued_at', 'token'], 'no access_token, no expires_at');
  t.not(body.token, 'unauthenticated');
  t.match(body.token, /[$/.]/, 'token has Katello-like characters');
  t.equal(body.expires_in, 3600);
  t.match(body.issued_at, issuedAt);
  const aliceToken = body.token as string;
  r = await request(`${base}v2/token?account=alice`, { headers: { Authorization: basic('alice', 'secret') } });
  t.equal(r.json().token, aliceToken, 'token is stable per user');
  t.ok(r.json().expires_in >= 3600, 'expiry pushed forward on reuse');

  // Revoked: scoped requests fail; an unscoped login replaces the token.
  r = await request(`${base}v2/token?account=bob&scope=repository:org/prod/shared:pull`, { headers: { Authorization: basic('bob', 'pw') } });
  t.equal(r.status, 401, 'revoked user: scoped token request fails');
  r = await request(`${base}v2/token?account=bob`, { headers: { Authorization: basic('bob', 'pw') } });
  t.equal(r.status, 200, 'revoked user: unscoped login gets a new token');
  r = await request(`${base}v2/token?account=bob&scope=repository:org/prod/shared:pull`, { headers: { Authorization: basic('bob', 'pw') } });
  t.equal(r.status, 200, 'then scoped requests work again');

  // Catalog.
  r = await request(`${base}v2/_catalog?account=alice`, { headers: { Authorization: basic('alice', 'secret') } });
  t.equal(r.status, 200);
  t.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
  t.same(r.json(), { repositories: ['org/prod/private-a', 'org/prod/public', 'org/prod/shared'] }, 'user catalog, sorted');
  r = await request(`${base}v2/_catalog?account=bob`, { headers: { Authorization: basic('bob', 'pw') } });
  t.same(r.json(), { repositories: ['org/prod/public', 'org/prod/shared'] });
  r = await request(`${base}v2/_catalog`, { headers: { HostUUID: '11111111-2222-3333-4444-555555555555' } });
  t.same(r.json(), { repositories: ['org/prod/host-only', 'org/prod/public', 'org/prod/shared'] }, 'host catalog');
  r = await request(`${base}v2/_catalog`);
  t.equal(r.status, 200, 'anonymous catalog: no 401');
  t.same(r.json(), { repositories: ['org/prod/public'] });
  r = await request(`${base}v2/_catalog`, { headers: { Authorization: `Bearer ${aliceToken}` } });
  t.same(r.json().repositories, ['org/prod/private-a', 'org/prod/public', 'org/prod/shared'], 'Bearer personal token');
  for (const auth of [basic('alice', 'wrong'), 'Bearer not-a-token']) {
    r = await request(`${base}v2/_catalog`, { headers: { Authorization: auth } });
    t.equal(r.status, 200, `bad credentials (${auth.split(' ')[0]}): the catalog never answers 401`);
    t.same(r.json(), { repositories: ['org/prod/public'] }, 'what anonymous sees');
  }

  // Pushes (katello-api.md §3): Katello's names, rights and answers; DELETE is not implemented.
  const push = (name: string, auth?: string) => request(`${base}v2/${name}/blobs/uploads/`, { method: 'POST', headers: auth ? { Authorization: auth } : {} });
  t.equal((await push('org/prod/new')).status, 401, 'push without a user: 401');
  t.equal((await push('org/prod/new', basic('alice', 'secret'))).json().errors[0].code, 'DENIED', 'a user without push rights: DENIED');
  k.users.alice!.push = true;
  for (const bad of ['org/new', 'org/prod/new/x', 'id/1/02/new', 'id/1/2']) {
    r = await push(bad, basic('alice', 'secret'));
    t.same([r.status, r.json().errors[0].code], [400, 'NAME_INVALID'], `${bad}: 400 NAME_INVALID`);
  }
  r = await push('id/1/2/new', `Bearer ${aliceToken}`);
  t.equal(r.status, 202, 'the id form, with the personal token');
  t.match(r.headers.location, /^\/v2\/id\/1\/2\/new\/blobs\/uploads\/[0-9a-f-]{36}$/, 'a relative Location');
  r = await request(`${base}v2/org/prod/shared/manifests/latest`, { method: 'DELETE', headers: { Authorization: basic('alice', 'secret') } });
  t.same([r.status, r.json()], [404, { error: { message: 'Route not found: DELETE /v2/org/prod/shared/manifests/latest' } }], 'DELETE: not implemented');

  // Recorded requests.
  const withService = k.requestsTo('/v2/token').filter((q) => q.query.service === '127.0.0.1' && q.headers.authorization === basic('alice', 'secret'));
  t.equal(withService.length, 1, 'requests are recorded with query and headers');
  t.equal(withService[0]!.query.account, 'alice');
  t.equal(k.requestsTo('/v2/_catalog').find((q) => q.headers.hostuuid)?.headers.authorization, undefined);

  // Overrides, e.g. a malformed token response.
  k.override((req, res) => {
    if (!req.url?.startsWith('/v2/token')) return false;
    res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"nope":1}');
    return true;
  });
  t.same((await request(`${base}v2/token`)).json(), { nope: 1 });
  k.override(null);
});

t.test('Katello double over HTTPS', async (t) => {
  const pki = makePki();
  t.teardown(() => rmSync(pki.dir, { recursive: true, force: true }));
  const k = new KatelloDouble({ publicRepositories: ['a/b/c'], tls: { key: pki.server.key, cert: pki.server.cert } });
  const base = await k.start();
  t.teardown(() => k.stop());
  t.match(base, /^https:\/\/127\.0\.0\.1:\d+\/$/);
  const r = await request(`${base}v2/_catalog`, { ca: pki.ca });
  t.same(r.json(), { repositories: ['a/b/c'] });
  const denied = await request(`${base}v2/token?account=x`, { ca: pki.ca });
  t.equal(denied.status, 401);
  t.match(denied.headers['www-authenticate'], `realm="https://127.0.0.1:${k.port}/v2/token"`);
});
