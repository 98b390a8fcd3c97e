// Section 3 of `npm run bench`: pushes through a smart proxy. A gateway in
// smart-proxy mode (foreman_url: the Katello double; main_registry_url: the
// benchmark's docker-registry; embedded store; node:cluster workers) takes a
// skopeo push of the image and streams it to the registry while it keeps a
// copy. Measured in one run, alternating sides: the push straight to the
// registry vs through the proxy (a fresh repository each time), and the time
// from a manifest PUT's 201 (through the proxy) to the tag being pullable from
// the proxy.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { layoutManifest, pushImage } from '../helpers/images.ts';
import type { KatelloDouble } from '../helpers/katello-double.ts';
import type { RunningRegistry } from '../helpers/registry.ts';
import { startGateway, type RunningGateway } from './gateway.ts';
import { exec, median, request, type Row } from './measure.ts';

export const PUSH_THROUGH_TARGETS = { pushRatio: 0.85 };

export interface PushThroughInput {
  registry: RunningRegistry;
  katello: KatelloDouble;
  user: string;
  password: string;
  /** `oci:<layout>:<tag>` of the benchmark image. */
  layout: string;
  layoutDir: string;
  tag: string;
  layer: { digest: string; size: number };
  runs: number;
  workers: number;
  /** A directory for the gateway's database and store (removed by the caller). */
  dataDir: string;
  progress(msg: string): void;
  /** Register the gateway for cleanup on failure. */
  adopt(gw: RunningGateway): void;
}


function check(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  await exec('sync', [], 300_000); // earlier writes are on disk: every push starts with no dirty pages
  const t = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

export async function pushThroughSection(o: PushThroughInput): Promise<{ rows: Row[]; notes: string[]; json: Record<string, unknown> }> {
  const storage = join(o.dataDir, 'storage');
  const gw = await startGateway({
    settings: { log_level: 'WARN', foreman_url: o.katello.url, workers: o.workers },
    plugins: {
      container_gateway: { enabled: true, content_backend: 'local', main_registry_url: `${o.registry.url}/v2/`, sqlite_db_path: join(o.dataDir, 'gw.db'), storage_path: storage },
    },
  });
  o.adopt(gw);
  const proxyHost = new URL(gw.httpUrl).host;
  o.progress(`smart-proxy-mode gateway on ${gw.httpUrl} (workers: ${o.workers}), pushing to ${o.registry.url}`);

  const seconds: Record<'direct' | 'proxy', number[]> = { direct: [], proxy: [] };
  for (let i = 1; i <= o.runs; i++) {
    for (const side of ['direct', 'proxy'] as const) {
      const repository = `bench/web/${side}-push-${i}`;
      const target = `${side === 'direct' ? o.registry.host : proxyHost}/${repository}:${o.tag}`;
      o.progress(`push ${i} ${side}: skopeo copy ${o.layout} docker://${target}...`);
      // Through the proxy as a user of the main server (Katello lets no one push anonymously).
      const s = await timed(() => pushImage(o.layout, target, { timeoutMs: 600_000, ...(side === 'proxy' ? { creds: `${o.user}:${o.password}` } : {}) }));
      seconds[side].push(s);
      o.progress(`push ${i} ${side}: ${s.toFixed(1)} s, ${(o.layer.size / s / 1e6).toFixed(0)} MB/s`);
      const link = join(o.registry.dir, 'data/docker/registry/v2/repositories', repository, '_layers/sha256', o.layer.digest.slice(7), 'link');
      check(existsSync(link), `after push ${i} ${side}, docker-registry has no layer link ${link}`);
      if (side === 'proxy') {
        const kept = join(storage, 'blobs', 'sha256', o.layer.digest.slice(7, 9), o.layer.digest.slice(7));
        check(existsSync(kept) && statSync(kept).size === o.layer.size, `after push ${i} through the proxy, its store has no ${o.layer.size}-byte copy of the layer at ${kept}`);
      }
    }
  }

  // From 201 to pullable: PUT the image's manifest under a new tag through the
  // proxy, then GET it from the proxy as a user of the main server.
  const image = layoutManifest(o.layoutDir, o.tag);
  const repository = 'bench/web/proxy-push-1';
  o.katello.users[o.user]!.repositories.push(repository);
  const put = await request('PUT', `${gw.httpUrl}/v2/${repository}/manifests/pullable`, { 'Content-Type': image.mediaType }, image.raw.toString('utf8'));
  const t201 = process.hrtime.bigint();
  check(put.status === 201, `manifest PUT through the proxy answered ${put.status}: ${put.text}`);
  const basic = `Basic ${Buffer.from(`${o.user}:${o.password}`).toString('base64')}`;
  const login = await request('GET', `${gw.httpUrl}/v2/token?account=${o.user}&scope=repository:${repository}:pull`, { Authorization: basic });
  check(login.status === 200, `login through the proxy answered ${login.status}: ${login.text}`);
  const token = (JSON.parse(login.text) as { token: string }).token;
  const tLogin = process.hrtime.bigint();
  let attempts = 0;
  let status = 0;
  while (status !== 200 && attempts < 1000) {
    attempts++;
    status = (await request('GET', `${gw.httpUrl}/v2/${repository}/manifests/pullable`, { Authorization: `Bearer ${token}`, Accept: image.mediaType })).status;
  }
  const tPullable = process.hrtime.bigint();
  check(status === 200, `the tag was not pullable from the proxy after ${attempts} GETs (last status ${status})`);
  const pullableMs = Number(tPullable - tLogin) / 1e6;
  const loginMs = Number(tLogin - t201) / 1e6;

  await gw.stop();
  const direct = median(seconds.direct);
  const proxy = median(seconds.proxy);
  const ratio = direct / proxy;
  const mib = (o.layer.size / 2 ** 20).toFixed(0);
  const rows: Row[] = [
    { metric: `push through the proxy, ${mib} MiB layer, median of ${o.runs}`, unit: 'MB/s', direct: o.layer.size / direct / 1e6, gateway: o.layer.size / proxy / 1e6, ratio, target: `>= ${PUSH_THROUGH_TARGETS.pushRatio.toFixed(2)}x`, pass: ratio >= PUSH_THROUGH_TARGETS.pushRatio },
    { metric: 'push time (info)', unit: 's', direct, gateway: proxy, ratio: proxy / direct },
    { metric: `manifest PUT 201 -> pullable from the proxy (GETs: ${attempts})`, unit: 'ms', gateway: pullableMs },
  ];
  const notes = [
    `push: skopeo copy ${o.layout} docker://..., a fresh repository each time, \`sync\` before each; through the proxy the layer streams to docker-registry and into the proxy's store (both checked on disk)`,
    `201 -> pullable: the first GET of the tag from the proxy after the PUT's 201 (a login through the proxy in between took ${loginMs.toFixed(1)} ms, not counted)`,
  ];
  return {
    rows,
    notes,
    json: { runs: o.runs, workers: o.workers, direct_seconds: seconds.direct, proxy_seconds: seconds.proxy, ratio, pass: ratio >= PUSH_THROUGH_TARGETS.pushRatio, pullable_ms: pullableMs, pullable_gets: attempts },
  };
}
