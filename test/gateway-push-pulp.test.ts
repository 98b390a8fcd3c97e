// Pushes through a smart proxy whose content comes from Pulp (content_backend:
// pulp): the push lands in the main server, and with push_sync_trigger:
// capsule_sync the proxy then asks Katello for a capsule sync
// (POST /katello/api/capsules/:id/content/sync, katello-api.md §6), once per
// burst of pushes, with the sync credentials.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { buildImage, inspectImage, layoutManifest, pushImage } from './helpers/images.ts';
import { startMainServer } from './helpers/main-server.ts';
import { request } from './helpers/http.ts';
import { startProxyd } from './helpers/proxyd.ts';
import { startRegistry } from './helpers/registry.ts';

const work = mkdtempSync(join(tmpdir(), 'gw-push-pulp-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

t.test('pulp backend: the push reaches the main server, then one capsule sync is requested', async (t) => {
  const main = await startMainServer({
    users: {
      pusher: { password: 'pusher-pw', repositories: ['acme/web/app'], push: true },
      capsule: { password: 'capsule-pw', repositories: [], catalog: true },
    },
  });
  t.teardown(() => main.stop());
  const pulp = await startRegistry();
  t.teardown(() => pulp.stop());
  main.katello.override((req, res, rec) => {
    if (req.method !== 'POST' || !/^\/katello\/api\/capsules\/\d+\/content\/sync$/.test(rec.path)) return false;
    res.writeHead(202, { 'Content-Type': 'application/json' }).end(JSON.stringify({ id: 'task-1', state: 'planned' }));
    return true;
  });
  const proxy = await startProxyd({
    fixtures: false,
    settings: { foreman_url: main.foremanUrl, log_level: 'INFO' },
    plugins: {
      container_gateway: {
        enabled: true,
        pulp_endpoint: pulp.url,
        pulp_registry_path: '/v2/',
        main_registry_url: main.mainRegistryUrl,
        sqlite_db_path: join(work, 'gw.db'),
        push_sync_trigger: 'capsule_sync',
        capsule_id: 7,
        sync_username: 'capsule',
        sync_password: 'capsule-pw',
      },
    },
  });
  t.teardown(() => proxy.stop());

  const img = await buildImage(join(work, 'src'), { name: 'app', files: { '/etc/app.txt': 'pulp backend push\n' }, layers: 2 });
  const gw = new URL(proxy.httpUrl).host;
  await pushImage(img.ref, `${gw}/acme/web/app:v1`, { creds: 'pusher:pusher-pw' });
  t.equal((await inspectImage(`${main.registry.host}/acme/web/app:v1`, { creds: 'pusher:pusher-pw' })).Digest, layoutManifest(img.layout).digest, 'the main server has the push');

  const syncs = () => main.katello.requests.filter((r) => r.method === 'POST' && r.path.startsWith('/katello/api/capsules/'));
  const waitFor = async (n: number) => {
    for (let i = 0; i < 100 && syncs().length < n; i++) await new Promise((r) => setTimeout(r, 100));
  };
  await waitFor(1);
  t.equal(syncs().length, 1, 'a capsule sync is requested after the push');
  t.equal(syncs()[0]?.path, '/katello/api/capsules/7/content/sync', 'for this capsule');
  t.equal(syncs()[0]?.headers.authorization, `Basic ${Buffer.from('capsule:capsule-pw').toString('base64')}`, 'with the sync credentials');

  // A burst: three tags pushed back to back give one more sync, not three.
  const login = await request(`${proxy.httpUrl}/v2/token?account=pusher&scope=${encodeURIComponent('repository:acme/web/app:pull,push')}`, { headers: { Authorization: `Basic ${Buffer.from('pusher:pusher-pw').toString('base64')}` } });
  const token = login.json().token as string;
  const image = layoutManifest(img.layout);
  for (const tag of ['v2', 'v3', 'v4']) {
    const put = await request(`${proxy.httpUrl}/v2/acme/web/app/manifests/${tag}`, { method: 'PUT', headers: { Authorization: `Bearer ${token}`, 'Content-Type': image.mediaType }, body: image.raw.toString('utf8') });
    t.equal(put.status, 201, `manifest PUT ${tag} through the proxy`);
  }
  await waitFor(2);
  // The proxy says how many pushes its request covers: the burst's three, folded into one.
  await proxy.waitForLog(/asked the main server to sync capsule 7 after 3 pushes/, 15_000);
  t.equal(syncs().length, 2, 'one capsule sync for the burst');
});
