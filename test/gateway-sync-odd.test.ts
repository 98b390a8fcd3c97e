// proxyctl sync against a main server (docker-registry) holding repositories
// without tags: what a failed push leaves (listed in the catalog, tags/list
// answers 404: blobs only, no manifest; once pushed to a name, or with its
// manifests gone), and one whose manifests were deleted (tags/list: []). The
// run succeeds, each is synced as empty (tags synced earlier pruned here) and
// reported by name, the other repository is mirrored, and the main server is
// left as it was. A scripted main server whose tags/list fails otherwise (500,
// status then hang-up, silence) does not pass for "no tags": the run fails
// with the reason and the tags here stay.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { databaseRows } from './helpers/state.ts';
import { buildImage, pushImage } from './helpers/images.ts';
import { KatelloDouble } from './helpers/katello-double.ts';
import { PROXYCTL, run, startProxyd, lineLogged } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';

const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
const anon = { Authorization: 'Bearer unauthenticated' };
const work = mkdtempSync(join(tmpdir(), 'gw-sync-odd-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const upstream = await startRegistry();
t.teardown(() => upstream.stop());
const katello = new KatelloDouble({ publicRepositories: ['odd/app', 'odd/emptied', 'odd/stripped', 'odd/blobs-only', 'odd/kept'] });
const foremanUrl = await katello.start();
t.teardown(() => katello.stop());

/** A blob pushed to `repository` with nothing else: what a push that failed before its manifest leaves. */
async function pushBlobOnly(repository: string, text: string): Promise<void> {
  const bytes = Buffer.from(text);
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const start = await request(`${upstream.url}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`POST upload: ${start.status}`);
  const put = new URL(start.headers.location as string, upstream.url);
  put.searchParams.set('digest', digest);
  const done = await request(put.toString(), { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) }, body: text });
  if (done.status !== 201) throw new Error(`PUT upload: ${done.status}`);
}

/** What a push killed before its manifest leaves in docker-registry's storage: the blob links, no manifests, no tags. */
function stripManifests(repository: string): void {
  const manifests = join(upstream.dir, 'data', 'docker', 'registry', 'v2', 'repositories', repository, '_manifests');
  if (!existsSync(manifests)) throw new Error(`no ${manifests}`);
  rmSync(manifests, { recursive: true });
}

/** Delete every manifest of a repository on the main server (its blobs stay): tags/list then answers 404. */
async function deleteManifests(repository: string, tags: string[]): Promise<void> {
  const digests = new Set<string>();
  for (const tag of tags) digests.add((await request(`${upstream.url}/v2/${repository}/manifests/${tag}`, { method: 'HEAD', headers: { Accept: ACCEPT } })).headers['docker-content-digest'] as string);
  // Deleting a manifest by digest removes every tag pointing at it.
  for (const digest of digests) {
    const del = await request(`${upstream.url}/v2/${repository}/manifests/${digest}`, { method: 'DELETE' });
    if (del.status !== 202) throw new Error(`DELETE ${repository}@${digest}: ${del.status}`);
  }
}

t.test('a repository the catalog lists whose tags/list answers 404 is synced as empty, reported, and the run succeeds', async (t) => {
  const image = await buildImage(join(work, 'images'), { name: 'odd', tag: 'v1', files: { '/etc/odd.txt': 'odd\n' }, layers: 1 });
  for (const ref of ['odd/app:v1', 'odd/emptied:v1', 'odd/emptied:v2', 'odd/stripped:v1']) await pushImage(image.ref, `${upstream.host}/${ref}`);
  const p = await startProxyd({
    fixtures: false,
    settings: { foreman_url: foremanUrl, log_level: 'INFO' },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'gw.db'), storage_path: join(work, 'storage'), main_registry_url: `${upstream.url}/v2/`, sync_concurrency: 2, sync_retries: 1 } },
  });
  t.teardown(() => p.stop());
  const proxyctl = (...args: string[]) => run([PROXYCTL, '--url', p.httpUrl, ...args]);

  const first = await proxyctl('sync', '--wait');
  t.equal(first.code, 0, first.stderr);
  t.same((await request(`${p.httpUrl}/v2/odd/emptied/tags/list`, { headers: anon })).json().tags, ['v1', 'v2'], 'odd/emptied is mirrored with its tags');
  t.same((await request(`${p.httpUrl}/v2/odd/stripped/tags/list`, { headers: anon })).json().tags, ['v1'], 'odd/stripped is mirrored with its tag');

  // The main server now holds what failed pushes leave behind, and a repository emptied on purpose.
  await deleteManifests('odd/emptied', ['v1', 'v2']);
  stripManifests('odd/stripped');
  await pushBlobOnly('odd/blobs-only', 'a layer whose manifest never came');
  const catalog = (await request(`${upstream.url}/v2/_catalog`)).json().repositories as string[];
  t.same(catalog, ['odd/app', 'odd/blobs-only', 'odd/emptied', 'odd/stripped'], "docker-registry's catalog lists all four");
  for (const name of ['odd/blobs-only', 'odd/stripped']) {
    const tags = await request(`${upstream.url}/v2/${name}/tags/list`);
    t.equal(tags.status, 404, `the main server answers 404 for ${name}/tags/list`);
    t.match(tags.json(), { errors: [{ code: 'NAME_UNKNOWN' }] });
  }
  const emptied = await request(`${upstream.url}/v2/odd/emptied/tags/list`);
  t.equal(emptied.status, 200, 'odd/emptied/tags/list: 200');
  t.same(emptied.json().tags ?? [], [], 'with no tags');

  const second = await proxyctl('sync', '--wait', '--json');
  t.equal(second.code, 0, `the run succeeds: ${second.stderr}`);
  const lines = second.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
  const last = lines[lines.length - 1]!;
  t.match(last, { state: 'succeeded', final: true, progress: { repositories: { done: 4, total: 4 }, tags: { done: 1, total: 1 } } });
  t.same(last.progress.untagged, ['odd/blobs-only', 'odd/emptied', 'odd/stripped'], 'the repositories without tags, by name');
  t.notOk('error' in last, 'no error recorded');

  // Here: the stale tags are gone, the other repository is untouched.
  for (const name of ['odd/emptied', 'odd/stripped']) {
    t.same((await request(`${p.httpUrl}/v2/${name}/tags/list`, { headers: anon })).json().tags, [], `${name}'s tags are pruned here`);
    t.equal((await request(`${p.httpUrl}/v2/${name}/manifests/v1`, { headers: { ...anon, Accept: ACCEPT } })).status, 404, `${name}:v1 is no longer served`);
  }
  t.equal((await request(`${p.httpUrl}/v2/odd/app/manifests/v1`, { headers: { ...anon, Accept: ACCEPT } })).status, 200, 'odd/app:v1 is still served');
  t.same((await request(`${p.httpUrl}/v2/odd/blobs-only/tags/list`, { headers: anon })).json().tags, [], 'odd/blobs-only is here, empty');

  // What a user reads: the text summary and proxyctl status.
  const text = await proxyctl('sync', '--wait');
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, /sync #\d+ succeeded: 4\/4 repositories, 1\/1 tags, .*; 3 repositories without tags on the main server \(synced as empty\): odd\/blobs-only, odd\/emptied, odd\/stripped/);
  t.match((await proxyctl('status')).stdout, /last sync: #\d+ succeeded at \S+: 4\/4 repositories.*3 repositories without tags on the main server/);
  t.ok(await lineLogged(p, /sync: odd\/stripped: the main server lists it without tags \(tags\/list answered 404\): synced as empty/), 'the daemon log says so per repository');

  // Asked for by name, an unknown repository is still a failure (a typo must not pass for an empty repository).
  const named = await proxyctl('sync', 'odd/no-such-repo', '--wait');
  t.equal(named.code, 1, 'a repository asked for by name that the main server does not know fails the run');
  t.match(named.stderr, /1 of 1 repositories failed: odd\/no-such-repo: .*unknown to the main server \(404\)/);
  const unknown = await request(`${p.httpUrl}/v2/odd/no-such-repo/tags/list`, { headers: anon });
  t.same([unknown.status, unknown.json().errors?.[0]?.code], [401, 'UNAUTHORIZED'], 'anonymous: an unknown repository answers 401, as a private one would');
  t.notOk((await databaseRows(join(work, 'gw.db'), ['repositories'])).repositories!.some((row) => row.includes('"odd/no-such-repo"')), 'and nothing of that name was created here');

  // The main server is left as it was.
  t.same((await request(`${upstream.url}/v2/_catalog`)).json().repositories, catalog, "the main server's catalog is unchanged");
  t.same((await request(`${upstream.url}/v2/odd/app/tags/list`)).json().tags, ['v1']);
});

t.test('tags/list failing otherwise (500, status then hang-up, silence) is no empty repository: the run fails, the tags here stay', async (t) => {
  const image = await buildImage(join(work, 'images'), { name: 'kept', tag: 'v1', files: { '/etc/kept.txt': 'kept\n' }, layers: 1 });
  await pushImage(image.ref, `${upstream.host}/odd/kept:v1`);
  const settings = (mainRegistryUrl: string) => ({
    fixtures: false,
    settings: { foreman_url: foremanUrl, log_level: 'INFO' },
    plugins: { container_gateway: { enabled: true, sqlite_db_path: join(work, 'kept.db'), storage_path: join(work, 'kept-storage'), main_registry_url: mainRegistryUrl, sync_retries: 1, upstream_response_timeout: 1, download_policy: 'immediate' } },
  });
  const first = await startProxyd(settings(`${upstream.url}/v2/`));
  t.equal((await run([PROXYCTL, '--url', first.httpUrl, 'sync', 'odd/kept', '--wait'])).code, 0, 'odd/kept:v1 mirrored from docker-registry');
  await first.stop();

  // The main server, scripted: its catalog lists odd/kept, its tags/list misbehaves as `mode` says
  // (and it has no manifests: download_policy immediate, or on-demand would find the tag gone).
  let mode: '500' | 'hang-up' | 'silence' = '500';
  const tagRequests: string[] = [];
  const scripted = http.createServer((req, res) => {
    if (req.url === '/v2/' || req.url === '/v2') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    if (req.url?.startsWith('/v2/_catalog')) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"repositories":["odd/kept"]}');
    if (req.url?.startsWith('/v2/odd/kept/tags/list')) {
      tagRequests.push(mode);
      if (mode === '500') return void res.writeHead(500, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNKNOWN","message":"boom"}]}');
      if (mode === 'hang-up') {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
        res.write('{"name":"odd/kept","ta');
        return void setImmediate(() => res.destroy());
      }
      return; // silence: never answers
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => scripted.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { scripted.closeAllConnections(); scripted.close(() => r()); }));
  const p = await startProxyd(settings(`http://127.0.0.1:${(scripted.address() as AddressInfo).port}/v2/`));
  t.teardown(() => p.stop());

  t.same((await request(`${p.httpUrl}/v2/odd/kept/tags/list`, { headers: anon })).json().tags, ['v1'], 'odd/kept:v1 is here before');
  for (const [m, why] of [['500', /answered 500/], ['hang-up', /ended early|reset|socket hang up|aborted/i], ['silence', /time|unreachable|did not answer/i]] as const) {
    mode = m;
    const before = tagRequests.length;
    const r = await run([PROXYCTL, '--url', p.httpUrl, 'sync', '--wait', '--json']);
    t.equal(r.code, 1, `${m}: the run fails`);
    const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
    const last = lines[lines.length - 1]!;
    t.match(last, { state: 'failed', error: why }, `${m}: with the reason (${last.error})`);
    t.notOk(last.progress.untagged?.length, `${m}: nothing reported as without tags`);
    t.ok(tagRequests.length > before, `${m}: the main server was asked`);
    t.same((await request(`${p.httpUrl}/v2/odd/kept/tags/list`, { headers: anon })).json().tags, ['v1'], `${m}: the tag here stays`);
    t.equal((await request(`${p.httpUrl}/v2/odd/kept/manifests/v1`, { headers: { ...anon, Accept: ACCEPT } })).status, 200, `${m}: and is served`);
  }
});
