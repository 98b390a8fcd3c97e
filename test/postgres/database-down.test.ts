// A node whose PostgreSQL server stops answering: /readyz says not ready
// (a load balancer then takes it out), `proxyctl status` says unreachable;
// once the server is back the node is ready again and serves what it stored.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from '../helpers/http.ts';
import { startPostgres } from '../helpers/postgres.ts';
import { PROXYCTL, run } from '../helpers/proxyd.ts';
import { StandaloneGateway } from '../helpers/standalone-gateway.ts';

const cluster = await startPostgres(t);
const work = mkdtempSync(join(tmpdir(), 'gw-down-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

async function readyz(gw: StandaloneGateway) {
  const res = await request(`${gw.base}/readyz`);
  return { status: res.status, body: res.json() };
}

t.test('database down: not ready and unreachable; back: ready, nothing lost', async (t) => {
  const gw = await StandaloneGateway.start(work, { settings: { db_connection_string: await cluster.createDatabase('node'), db_pool_timeout: 1 } });
  t.teardown(() => gw.stop());
  await gw.addUser('alice');
  const token = await gw.tokenOf('alice', 'pull,push', 'alice/app');
  const image = await gw.pushImage('alice/app', token, 'v1');
  t.same(await readyz(gw), { status: 200, body: { ready: true, not_running: [] } }, 'ready while the database answers');

  cluster.stop();
  const down = await readyz(gw);
  t.equal(down.status, 503, 'not ready: a load balancer takes the node out');
  t.match(down.body, { ready: false, not_running: [], not_ready: { container_gateway: /^database postgresql postgres@127\.0\.0\.1:\d+\/node does not answer: / } });
  const status = await run([PROXYCTL, '--url', gw.base, 'status']);
  t.match(status.stdout, /database: postgresql postgres@127\.0\.0\.1:\d+\/node, UNREACHABLE: /, 'proxyctl status says the database is unreachable');

  cluster.start();
  let back = await readyz(gw);
  for (let i = 0; i < 50 && back.status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
    back = await readyz(gw);
  }
  t.equal(back.status, 200, 'ready again once the server is back');
  const pulled = await gw.call('GET', '/v2/alice/app/manifests/v1', { token, headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  t.equal(pulled.headers['docker-content-digest'], image.digest, 'and serves what it stored');
});
