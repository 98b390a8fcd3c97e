// Section 4 of `npm run bench`: on-demand pull-through (issue #12). A gateway
// in smart-proxy mode (foreman_url: the Katello double; main_registry_url: the
// benchmark's docker-registry; embedded store, download_policy: on_demand)
// starts with an EMPTY store, and a client GETs the image's 1 GiB layer through
// it: the proxy fetches it from the registry while it relays it. Measured in
// one run, alternating sides, a fresh gateway and store for each cold run:
// time to the first body byte of the cold layer through the proxy vs straight
// from the registry (the target: within 50 ms), the whole cold download in
// MB/s both ways, and then the same layer warm (now in the proxy's store) with
// curl, proxy vs registry.
//
// Runs inside `npm run bench` (after section 3), or alone, building its own
// registry and image:
//
//   npm run build && tsx test/bench/on-demand.ts [--blob-mib N] [--runs N]
import http from 'node:http';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildImage, layoutManifest, pushImage } from '../helpers/images.ts';
import { KatelloDouble } from '../helpers/katello-double.ts';
import { startRegistry, type RunningRegistry } from '../helpers/registry.ts';
import { startGateway, type RunningGateway } from './gateway.ts';
import { curlDownload, fetchHashed, median, request, type Row } from './measure.ts';

export const ON_DEMAND_TARGETS = { ttfbExtraMs: 50 };

export interface OnDemandInput {
  registry: RunningRegistry;
  katello: KatelloDouble;
  repository: string;
  tag: string;
  manifestDigest: string;
  manifestType: string;
  layer: { digest: string; size: number };
  runs: number;
  /** A directory for the gateways' databases and stores (removed by the caller). */
  dataDir: string;
  progress(msg: string): void;
  /** Register a gateway for cleanup on failure. */
  adopt(gw: RunningGateway): void;
}

function check(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface TimedGet {
  status: number;
  bytes: number;
  /** From sending the request to the response head, and to the first body byte (ms). */
  headMs: number;
  firstByteMs: number;
  seconds: number;
}

/** GET with node:http, body discarded: when the head and the first body byte arrived, and the whole. */
export function timedGet(url: string, headers: Record<string, string> = {}): Promise<TimedGet> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
    const req = http.get(url, { headers, agent: false }, (res) => {
      const headMs = ms();
      let firstByteMs = -1;
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        if (firstByteMs < 0) firstByteMs = ms();
        bytes += c.length;
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`${url}: connection closed after ${bytes} bytes`)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, headMs, firstByteMs, seconds: ms() / 1000 }));
    });
    req.setTimeout(300_000, () => req.destroy(new Error(`${url}: no progress in 300 s`)));
    req.on('error', reject);
  });
}

/** The layer's file in the embedded store, once committed (the relay may end just before the commit). */
async function waitForStored(storage: string, layer: { digest: string; size: number }): Promise<boolean> {
  const hex = layer.digest.slice(7);
  const file = join(storage, 'blobs', 'sha256', hex.slice(0, 2), hex);
  for (let i = 0; i < 300; i++) {
    if (existsSync(file) && statSync(file).size === layer.size) return true;
    await sleep(100);
  }
  return false;
}

export async function onDemandSection(o: OnDemandInput): Promise<{ rows: Row[]; notes: string[]; json: Record<string, unknown> }> {
  const direct = { ttfb: [] as number[], head: [] as number[], mbps: [] as number[], warm: [] as number[] };
  const proxy = { ttfb: [] as number[], head: [] as number[], mbps: [] as number[], warm: [] as number[] };
  const directUrl = `${o.registry.url}/v2/${o.repository}/blobs/${o.layer.digest}`;
  const mib = (o.layer.size / 2 ** 20).toFixed(0);
  const v = await fetchHashed(directUrl, {});
  check(v.status === 200 && v.digest === o.layer.digest, `the registry's layer: ${v.status}, ${v.digest}`);

  for (let i = 1; i <= o.runs; i++) {
    // Straight from the registry (its file in the page cache, as it is for the proxy's upstream GET).
    const d = await timedGet(directUrl);
    check(d.status === 200 && d.bytes === o.layer.size, `direct layer GET (run ${i}): ${d.status}, ${d.bytes} bytes`);
    direct.ttfb.push(d.firstByteMs);
    direct.head.push(d.headMs);
    direct.mbps.push(o.layer.size / d.seconds / 1e6);
    o.progress(`run ${i} direct: first byte after ${d.firstByteMs.toFixed(1)} ms, ${(o.layer.size / d.seconds / 1e6).toFixed(0)} MB/s`);

    // Through a fresh proxy with an empty store.
    const dir = join(o.dataDir, `run-${i}`);
    const storage = join(dir, 'storage');
    const gw = await startGateway({
      settings: { log_level: 'WARN', foreman_url: o.katello.url },
      plugins: {
        container_gateway: {
          enabled: true,
          content_backend: 'local',
          main_registry_url: `${o.registry.url}/v2/`,
          download_policy: 'on_demand',
          sqlite_db_path: join(dir, 'gw.db'),
          storage_path: storage,
        },
      },
    });
    o.adopt(gw);
    const list = await request('PUT', `${gw.httpUrl}/container_gateway/repository_list`, { 'Content-Type': 'application/json' }, JSON.stringify({ repositories: [{ repository: o.repository, auth_required: false }] }));
    check(list.status === 200, `repository_list answered ${list.status}: ${list.text}`);
    // A client reads the manifest first (fetched on demand too, not timed here).
    const m = await fetchHashed(`${gw.httpUrl}/v2/${o.repository}/manifests/${o.tag}`, { Accept: o.manifestType });
    check(m.status === 200 && m.digest === o.manifestDigest, `manifest through the proxy (run ${i}): ${m.status}, ${m.digest}`);
    const proxyUrl = `${gw.httpUrl}/v2/${o.repository}/blobs/${o.layer.digest}`;
    const p = await timedGet(proxyUrl);
    check(p.status === 200 && p.bytes === o.layer.size, `cold layer GET through the proxy (run ${i}): ${p.status}, ${p.bytes} bytes`);
    proxy.ttfb.push(p.firstByteMs);
    proxy.head.push(p.headMs);
    proxy.mbps.push(o.layer.size / p.seconds / 1e6);
    o.progress(`run ${i} proxy (cold, empty store): first byte after ${p.firstByteMs.toFixed(1)} ms, ${(o.layer.size / p.seconds / 1e6).toFixed(0)} MB/s`);
    check(await waitForStored(storage, o.layer), `run ${i}: the proxy's store has no ${o.layer.size}-byte copy of the layer 30 s after the download`);

    // Warm: the layer is in the proxy's store now. Verified once, then timed with curl both ways.
    const w = await fetchHashed(proxyUrl, {});
    check(w.status === 200 && w.digest === o.layer.digest, `warm layer GET through the proxy (run ${i}): ${w.status}, ${w.digest}`);
    const wp = await curlDownload(proxyUrl, {}, 300_000);
    const wd = await curlDownload(directUrl, {}, 300_000);
    check(wp.status === 200 && wp.bytes === o.layer.size && wd.status === 200 && wd.bytes === o.layer.size, `warm curl (run ${i}): proxy ${wp.status}/${wp.bytes}, direct ${wd.status}/${wd.bytes}`);
    proxy.warm.push(wp.mbPerSec);
    direct.warm.push(wd.mbPerSec);
    o.progress(`run ${i} warm (curl): proxy ${wp.mbPerSec.toFixed(0)} MB/s, direct ${wd.mbPerSec.toFixed(0)} MB/s`);
    const code = await gw.stop();
    if (code !== 0) o.progress(`proxyd (run ${i}) exited with code ${code}`);
    rmSync(dir, { recursive: true, force: true });
  }

  const ttfbDirect = median(direct.ttfb);
  const ttfbProxy = median(proxy.ttfb);
  const extra = ttfbProxy - ttfbDirect;
  const pass = extra <= ON_DEMAND_TARGETS.ttfbExtraMs;
  const cold = { direct: median(direct.mbps), proxy: median(proxy.mbps) };
  const warm = { direct: median(direct.warm), proxy: median(proxy.warm) };
  const rows: Row[] = [
    { metric: `cold ${mib} MiB layer, time to first byte, median of ${o.runs}`, unit: 'ms', direct: ttfbDirect, gateway: ttfbProxy, ratio: ttfbProxy / ttfbDirect, target: `<= direct + ${ON_DEMAND_TARGETS.ttfbExtraMs} ms`, pass },
    { metric: 'cold layer, time to response head (info)', unit: 'ms', direct: median(direct.head), gateway: median(proxy.head), ratio: median(proxy.head) / median(direct.head) },
    { metric: `cold ${mib} MiB layer, whole download (info)`, unit: 'MB/s', direct: cold.direct, gateway: cold.proxy, ratio: cold.proxy / cold.direct },
    { metric: `warm ${mib} MiB layer, curl (info)`, unit: 'MB/s', direct: warm.direct, gateway: warm.proxy, ratio: warm.proxy / warm.direct },
  ];
  const notes = [
    `cold: a fresh proxy with an empty store each run (download_policy: on_demand, workers: 1); the manifest GET first (not timed), then the layer GET with node:http, body discarded; first byte = the first body chunk; the layer checked in the proxy's store after each run`,
    `time to first byte through the proxy: ${extra >= 0 ? '+' : ''}${extra.toFixed(1)} ms vs direct (target: within ${ON_DEMAND_TARGETS.ttfbExtraMs} ms)`,
    `warm: the same layer from the proxy's store after the cold run, curl -o /dev/null, sha256 verified once per run`,
  ];
  return {
    rows,
    notes,
    json: {
      runs: o.runs,
      bytes: o.layer.size,
      ttfb_ms: { direct: direct.ttfb, proxy: proxy.ttfb, median_direct: ttfbDirect, median_proxy: ttfbProxy, extra_ms: extra, target_extra_ms_max: ON_DEMAND_TARGETS.ttfbExtraMs, pass },
      head_ms: { direct: direct.head, proxy: proxy.head },
      cold_mb_per_sec: { direct: direct.mbps, proxy: proxy.mbps, median_direct: cold.direct, median_proxy: cold.proxy, ratio: cold.proxy / cold.direct },
      warm_mb_per_sec: { direct: direct.warm, proxy: proxy.warm, median_direct: warm.direct, median_proxy: warm.proxy, ratio: warm.proxy / warm.direct },
    },
  };
}

// ---------------------------------------------------------------------------
// Alone: tsx test/bench/on-demand.ts [--blob-mib N] [--runs N]
// ---------------------------------------------------------------------------

async function alone(): Promise<void> {
  const { values } = parseArgs({ options: { 'blob-mib': { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' } } });
  const blobBytes = Number(values['blob-mib']) * 2 ** 20;
  const runs = Number(values.runs);
  const started = Date.now();
  const progress = (msg: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
  const gateways: RunningGateway[] = [];
  const work = mkdtempSync(join(tmpdir(), 'proxyd-bench-on-demand-'));
  const katello = new KatelloDouble({ users: {} });
  let registry: RunningRegistry | undefined;
  try {
    progress(`machine: ${cpus().length} CPUs, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}, node ${process.version}`);
    await katello.start();
    registry = await startRegistry();
    progress(`building an image with one ${values['blob-mib']} MiB layer of random bytes, pushing it to ${registry.host}...`);
    const img = await buildImage(work, { name: 'bench-app', tag: 'v1', files: { '/etc/bench.txt': 'proxyd benchmark\n' }, randomBytes: blobBytes, cmd: ['/bin/true'], timeoutMs: 600_000 });
    await pushImage(img.ref, `${registry.host}/bench/app:v1`, { timeoutMs: 600_000 });
    const local = layoutManifest(img.layout, 'v1');
    const layer = [...local.manifest.layers].sort((a, b) => b.size - a.size)[0]!;
    const r = await onDemandSection({
      registry, katello, repository: 'bench/app', tag: 'v1', manifestDigest: local.digest, manifestType: local.mediaType, layer, runs,
      dataDir: join(work, 'data'), progress, adopt: (gw) => gateways.push(gw),
    });
    const fmt = (x: number | undefined, d: number) => (x === undefined ? '-' : x.toFixed(d));
    const lines = r.rows.map((row) => `${row.metric} (${row.unit}): direct ${fmt(row.direct, 1)}, proxy ${fmt(row.gateway, 1)}, ratio ${fmt(row.ratio, 2)}x${row.target ? `, target ${row.target}: ${row.pass ? 'PASS' : 'FAIL'}` : ''}`);
    process.stdout.write(`\n== 4. on-demand pull-through, cold layer through the proxy vs straight from docker-registry\n${lines.join('\n')}\n${r.notes.join('\n')}\n${JSON.stringify(r.json)}\n`);
  } finally {
    for (const gw of gateways) await gw.stop();
    await registry?.stop();
    await katello.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  alone().catch((err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
