// Writes that race: many logins of one user at once, one blob pushed by many
// clients at once into a repository that does not exist yet, many tags put on
// one manifest at once, over two worker processes. Each must succeed exactly
// as it would alone (no 500 from a unique key two inserts both claimed) and
// leave one row per thing. On SQLite writes take turns; on PostgreSQL
// (test/postgres/concurrent-writes.test.ts) they really run in parallel.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { OCI_MANIFEST, sha256, StandaloneGateway } from './helpers/standalone-gateway.ts';
import { queryGateway } from './helpers/test-database.ts';

const work = mkdtempSync(join(tmpdir(), 'gw-race-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const gw = await StandaloneGateway.start(work, { global: { workers: 2 } });
t.teardown(() => gw.stop());
await gw.addUser('alice');
const N = 12;

t.test('logins of one user at once: every one gets a token that works', async (t) => {
  const tokens = await Promise.all(Array.from({ length: N }, () => gw.tokenOf('alice', 'pull,push', 'alice/race')));
  t.equal(new Set(tokens).size, N, 'distinct tokens');
  const answers = await Promise.all(tokens.map((token) => gw.call('GET', '/v2/', { token })));
  t.same(answers.map((a) => a.status), Array(N).fill(200), 'each accepted');
});

t.test('one blob pushed by many clients at once into a new repository, then many tags at once', async (t) => {
  const token = await gw.tokenOf('alice', 'pull,push', 'alice/race');
  const bytes = 'the same layer, pushed by everyone\n'.repeat(50);
  const pushes = await Promise.all(Array.from({ length: N }, () => gw.pushBlob('alice/race', token, bytes)));
  t.same(pushes.map((p) => p.res.status), Array(N).fill(201), 'each push: 201');
  const config = await gw.pushBlob('alice/race', token, '{"architecture":"amd64","os":"linux"}');
  t.equal(config.res.status, 201);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.blob.digest, size: config.blob.size },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: pushes[0]!.blob.digest, size: pushes[0]!.blob.size }],
  });
  const tags = Array.from({ length: N }, (_, i) => `t${String(i).padStart(2, '0')}`);
  const puts = await Promise.all(tags.map((tag) => gw.call('PUT', `/v2/alice/race/manifests/${tag}`, { token, body: manifest, headers: { 'Content-Type': OCI_MANIFEST } })));
  t.same(puts.map((p) => p.status), Array(N).fill(201), 'each tag: 201');
  t.same((await gw.call('GET', '/v2/alice/race/tags/list', { token })).json().tags, tags, 'every tag listed');
  const rows = await queryGateway<{ repositories: number; blobs: number; manifests: number }>(
    gw.dbPath,
    "SELECT (SELECT count(*) FROM repositories WHERE name = 'alice/race') AS repositories, (SELECT count(*) FROM repository_blobs WHERE digest = ?) AS blobs, (SELECT count(*) FROM manifests WHERE digest = ?) AS manifests",
    [pushes[0]!.blob.digest, sha256(manifest)],
  );
  t.same(rows, [{ repositories: 1, blobs: 1, manifests: 1 }], 'one repository, one blob link, one manifest');
});
