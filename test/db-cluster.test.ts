// The single-process cluster (db/cluster.ts LocalCluster) that SQLite
// gateways use: the same answers as the PostgreSQL one for one process.
import t from 'tap';
import { LocalCluster } from '../plugins/container_gateway/db/cluster.ts';

t.test('a lock is held by one caller at a time; refused at once, free again after', async (t) => {
  const cluster = new LocalCluster();
  let finish!: () => void;
  const held = cluster.withAdvisoryLock('gc', () => new Promise<string>((r) => (finish = () => r('first'))));
  t.same(await cluster.withAdvisoryLock('gc', async () => 'second'), { locked: false }, 'refused while held');
  t.same(await cluster.withAdvisoryLock('sync', async () => 'sync'), { locked: true, value: 'sync' }, 'another key is free');
  finish();
  t.same(await held, { locked: true, value: 'first' });
  await t.rejects(cluster.withAdvisoryLock('gc', async () => Promise.reject(new Error('boom'))), /boom/);
  t.same(await cluster.withAdvisoryLock('gc', async () => 'third'), { locked: true, value: 'third' }, 'released after a throw');
});

t.test('notifications reach the listeners of their channel until they unlisten', async (t) => {
  const cluster = new LocalCluster();
  const seen: string[] = [];
  const unlisten = await cluster.listen('cache', { onPayload: (p) => seen.push(p), onMissed: () => seen.push('missed') });
  await cluster.listen('other', { onPayload: (p) => seen.push(`other:${p}`), onMissed: () => undefined });
  await cluster.notify('cache', 'a');
  await new Promise((r) => setImmediate(r));
  t.same(seen, ['a']);
  await unlisten();
  await cluster.notify('cache', 'b');
  await cluster.notify('other', 'c');
  await new Promise((r) => setImmediate(r));
  t.same(seen, ['a', 'other:c']);
  await cluster.close();
});

t.test('the barrier resolves after every notification sent before it was asked for has been delivered', async (t) => {
  const cluster = new LocalCluster();
  const seen: string[] = [];
  await cluster.listen('cache', { onPayload: (p) => seen.push(p), onMissed: () => undefined });
  void cluster.notify('cache', 'a');
  void cluster.notify('cache', 'b');
  t.equal(await cluster.barrier(), 0, 'one process: nothing is ever missed');
  t.same(seen, ['a', 'b']);
  await cluster.close();
});
