// Section 4 of `npm run bench`: on-demand pull-through. A gateway in
// smart-proxy mode (foreman_url: the Katello double; main_registry_url: the
// benchmark's docker-registry; embedded store, download_policy: on_demand)
// starts with an EMPTY store, and skopeo pulls the image (one 1 GiB layer)
// through it: the proxy fetches each blob from the registry while it relays
// it. Measured in one run, alternating sides, a fresh gateway and store for
// each cold pull:
// - cold: `skopeo copy docker://… dir:…` through the proxy vs straight from the
//   registry (target: >= 0.9x), with proxyd's CPU seconds per GiB and skopeo's
//   own CPU time (what the client costs on this machine whichever side);
// - warm: the same pull again, now from the proxy's store, vs the registry
//   (target: >= 1.0x);
// - time to the first body byte of the cold layer (node:http GET, a fresh
//   proxy), through the proxy vs straight (target: within 50 ms);
// - 20 concurrent cold pulls through one fresh proxy whose main server is
//   reached through a counting relay: body bytes fetched upstream / image size
//   (target: 1.0, every blob fetched once).
//
// Runs inside `npm run bench` (after section 3), or alone, building its own
// registry and image:
//
//   npm run build && tsx test/bench/on-demand.ts [--blob-mib N] [--runs N] [--cpu-prof DIR]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildImage, layoutManifest, pushImage } from '../helpers/images.ts';
import { KatelloDouble } from '../helpers/katello-double.ts';
import { startRegistry, type RunningRegistry } from '../helpers/registry.ts';
import { startGateway, type RunningGateway } from './gateway.ts';
import { cpuDetailOf, fetchHashed, median, memoryOf, request, ticksPerSecond, type Row } from './measure.ts';
import { concurrentColdPulls, machineCpu, skopeoPull, timedGet, waitForStored } from './on-demand-tools.ts';
import { formatProfile, summarizeProfile } from './profile.ts';

export { timedGet, type TimedGet } from './on-demand-tools.ts';

export const ON_DEMAND_TARGETS = { ttfbExtraMs: 50, coldMin: 0.9, warmMin: 1.0, upstreamPerImageMax: 1.0, concurrentClients: 20 };

export interface OnDemandInput {
  registry: RunningRegistry;
  repository: string;
  tag: string;
  manifestDigest: string;
  manifestType: string;
  /** Size of the manifest's bytes (its part of the image size). */
  manifestSize: number;
  config: { digest: string; size: number };
  layers: Array<{ digest: string; size: number }>;
  runs: number;
  /** A directory for the gateways' databases and stores and skopeo's copies (removed by the caller). */
  dataDir: string;
  /** When set, the cold-pull gateways run with `node --cpu-prof` writing here, and a summary is printed. */
  cpuProfileDir?: string;
  progress(msg: string): void;
  /** Register a gateway for cleanup on failure. */
  adopt(gw: RunningGateway): void;
}

function check(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

export async function onDemandSection(o: OnDemandInput): Promise<{ rows: Row[]; notes: string[]; json: Record<string, unknown> }> {
  const layer = [...o.layers].sort((a, b) => b.size - a.size)[0]!;
  const imageBytes = o.manifestSize + o.config.size + o.layers.reduce((n, l) => n + l.size, 0);
  const gib = layer.size / 2 ** 30;
  const mib = (layer.size / 2 ** 20).toFixed(0);
  const ticks = await ticksPerSecond();
  const direct = { ttfb: [] as number[], head: [] as number[], getMBs: [] as number[], cold: [] as number[], warm: [] as number[], skopeoCpu: [] as number[], registryCpu: [] as number[], machineBusy: [] as number[] };
  const proxy = { ttfb: [] as number[], head: [] as number[], getMBs: [] as number[], cold: [] as number[], warm: [] as number[], skopeoCpu: [] as number[], cpuPerGiB: [] as number[], hwmMiB: [] as number[], registryCpu: [] as number[], machineBusy: [] as number[] };
  const directRef = `${o.registry.host}/${o.repository}:${o.tag}`;
  const directUrl = `${o.registry.url}/v2/${o.repository}/blobs/${layer.digest}`;
  const v = await fetchHashed(directUrl, {});
  check(v.status === 200 && v.digest === layer.digest, `the registry's layer: ${v.status}, ${v.digest}`);
  const copies = join(o.dataDir, 'copies');
  // The proxies' Katello: the repository is public, as the anonymous pulls measured here need.
  const katello = new KatelloDouble({ users: {}, publicRepositories: [o.repository] });
  await katello.start();
  try {
    return await measure();
  } finally {
    await katello.stop();
  }

  async function measure(): Promise<{ rows: Row[]; notes: string[]; json: Record<string, unknown> }> {

    const freshProxy = async (dir: string, mainUrl = o.registry.url, nodeArgs?: string[]) => {
      const gw = await startGateway({
        settings: { log_level: 'WARN', foreman_url: katello.url },
        plugins: {
          container_gateway: {
            enabled: true,
            content_backend: 'local',
            main_registry_url: `${mainUrl}/v2/`,
            download_policy: 'on_demand',
            sqlite_db_path: join(dir, 'gw.db'),
            storage_path: join(dir, 'storage'),
          },
        },
        ...(nodeArgs ? { nodeArgs } : {}),
      });
      o.adopt(gw);
      const list = await request('PUT', `${gw.httpUrl}/container_gateway/repository_list`, { 'Content-Type': 'application/json' }, JSON.stringify({ repositories: [{ repository: o.repository, auth_required: false }] }));
      check(list.status === 200, `repository_list answered ${list.status}: ${list.text}`);
      return gw;
    };
    const registryCpu = () => {
      const c = cpuDetailOf(o.registry.proc.pid!, ticks);
      return c ? c.user + c.sys : NaN;
    };
    /** A timed skopeo pull, with the registry's CPU seconds and the machine's busy cores (of all, everyone's) meanwhile. */
    const pull = async (ref: string, what: string) => {
      const r0 = registryCpu();
      const m0 = machineCpu(ticks);
      const p = await skopeoPull(ref, join(copies, `${what}-${Date.now()}`), layer);
      const m1 = machineCpu(ticks);
      const registry = registryCpu() - r0;
      const busyCores = ((m1.busy - m0.busy) / (m1.total - m0.total)) * cpus().length;
      o.progress(`${what}: ${p.seconds.toFixed(2)} s, ${(imageBytes / p.seconds / 1e6).toFixed(0)} MB/s, skopeo CPU ${p.cpuSeconds.toFixed(2)} s, registry CPU ${registry.toFixed(2)} s, machine busy ${busyCores.toFixed(2)} of ${cpus().length} cores`);
      return { ...p, registry, busyCores };
    };
    let profile = '';

    for (let i = 1; i <= o.runs; i++) {
      // Cold, alternating which side goes first. Straight from the registry, its files in the page cache as for the proxy's upstream GET.
      const dir = join(o.dataDir, `run-${i}`);
      const gw = await freshProxy(dir, o.registry.url, o.cpuProfileDir ? ['--cpu-prof', '--cpu-prof-dir', o.cpuProfileDir] : undefined);
      const proxyRef = `${gw.httpUrl.replace('http://', '')}/${o.repository}:${o.tag}`;
      const coldDirect = async () => {
        const d = await pull(directRef, `run ${i} cold direct`);
        direct.cold.push(imageBytes / d.seconds / 1e6);
        direct.skopeoCpu.push(d.cpuSeconds);
        direct.registryCpu.push(d.registry);
        direct.machineBusy.push(d.busyCores);
      };
      if (i % 2 === 1) await coldDirect();
      const before = cpuDetailOf(gw.pid, ticks)!;
      const p = await pull(proxyRef, `run ${i} cold proxy`);
      check(await waitForStored(join(dir, 'storage'), layer), `run ${i}: the proxy's store has no ${layer.size}-byte copy of the layer 30 s after the pull`);
      const after = cpuDetailOf(gw.pid, ticks)!;
      const cpu = after.user + after.sys - before.user - before.sys;
      proxy.cold.push(imageBytes / p.seconds / 1e6);
      proxy.skopeoCpu.push(p.cpuSeconds);
      proxy.registryCpu.push(p.registry);
      proxy.machineBusy.push(p.busyCores);
      proxy.cpuPerGiB.push(cpu / gib);
      proxy.hwmMiB.push((memoryOf(gw.pid)?.hwmKb ?? 0) / 1024);
      o.progress(`run ${i} proxyd CPU for the cold pull: ${cpu.toFixed(2)} s (user ${(after.user - before.user).toFixed(2)}, sys ${(after.sys - before.sys).toFixed(2)}), ${(cpu / gib).toFixed(2)} s/GiB`);
      if (i % 2 === 0) await coldDirect();

      // Warm: the image is in the proxy's store now.
      const warmProxy = async () => proxy.warm.push(imageBytes / (await pull(proxyRef, `run ${i} warm proxy`)).seconds / 1e6);
      const warmDirect = async () => direct.warm.push(imageBytes / (await pull(directRef, `run ${i} warm direct`)).seconds / 1e6);
      if (i % 2 === 1) await warmProxy().then(warmDirect);
      else await warmDirect().then(warmProxy);
      const code = await gw.stop();
      if (code !== 0) o.progress(`proxyd (run ${i}) exited with code ${code}`);
      if (o.cpuProfileDir && i === 1) profile = formatProfile(summarizeProfile(o.cpuProfileDir, process.cwd(), gw.pid)!);
      rmSync(dir, { recursive: true, force: true });

      // Time to first byte of the cold layer: node:http GET through another fresh proxy vs straight.
      const d = await timedGet(directUrl);
      check(d.status === 200 && d.bytes === layer.size, `direct layer GET (run ${i}): ${d.status}, ${d.bytes} bytes`);
      direct.ttfb.push(d.firstByteMs);
      direct.head.push(d.headMs);
      direct.getMBs.push(layer.size / 1e6 / d.seconds);
      const tdir = join(o.dataDir, `ttfb-${i}`);
      const tgw = await freshProxy(tdir);
      const m = await fetchHashed(`${tgw.httpUrl}/v2/${o.repository}/manifests/${o.tag}`, { Accept: o.manifestType });
      check(m.status === 200 && m.digest === o.manifestDigest, `manifest through the proxy (run ${i}): ${m.status}, ${m.digest}`);
      const t = await timedGet(`${tgw.httpUrl}/v2/${o.repository}/blobs/${layer.digest}`);
      check(t.status === 200 && t.bytes === layer.size, `cold layer GET through the proxy (run ${i}): ${t.status}, ${t.bytes} bytes`);
      proxy.ttfb.push(t.firstByteMs);
      proxy.head.push(t.headMs);
      proxy.getMBs.push(layer.size / 1e6 / t.seconds);
      o.progress(`run ${i} first byte of the cold layer: direct ${d.firstByteMs.toFixed(1)} ms, proxy ${t.firstByteMs.toFixed(1)} ms`);
      check(await waitForStored(join(tdir, 'storage'), layer), `run ${i}: the proxy's store has no copy of the layer after the timed GET`);
      await tgw.stop();
      rmSync(tdir, { recursive: true, force: true });
    }

    // 20 concurrent cold pulls through one fresh proxy; its main server behind a counting relay.
    const cdir = join(o.dataDir, 'concurrent');
    const conc = await concurrentColdPulls({
      registryUrl: o.registry.url,
      clients: ON_DEMAND_TARGETS.concurrentClients,
      startProxy: (mainUrl) => freshProxy(cdir, mainUrl),
      repository: o.repository,
      tag: o.tag,
      manifestType: o.manifestType,
    });
    const upstreamRatio = conc.upstreamBodyBytes / imageBytes;
    o.progress(`${ON_DEMAND_TARGETS.concurrentClients} concurrent cold pulls: ${conc.upstreamBodyBytes} body bytes from upstream for a ${imageBytes}-byte image (${upstreamRatio.toFixed(4)}), ${conc.seconds.toFixed(1)} s`);
    rmSync(cdir, { recursive: true, force: true });

    const ttfb = { direct: median(direct.ttfb), proxy: median(proxy.ttfb) };
    const extra = ttfb.proxy - ttfb.direct;
    const cold = { direct: median(direct.cold), proxy: median(proxy.cold) };
    const warm = { direct: median(direct.warm), proxy: median(proxy.warm) };
    const ratios = { cold: cold.proxy / cold.direct, warm: warm.proxy / warm.direct };
    const rows: Row[] = [
      { metric: `cold skopeo pull, ${mib} MiB layer, median of ${o.runs}`, unit: 'MB/s', direct: cold.direct, gateway: cold.proxy, ratio: ratios.cold, target: `>= ${ON_DEMAND_TARGETS.coldMin}x`, pass: ratios.cold >= ON_DEMAND_TARGETS.coldMin },
      { metric: `warm skopeo pull, ${mib} MiB layer, median of ${o.runs}`, unit: 'MB/s', direct: warm.direct, gateway: warm.proxy, ratio: ratios.warm, target: `>= ${ON_DEMAND_TARGETS.warmMin}x`, pass: ratios.warm >= ON_DEMAND_TARGETS.warmMin },
      { metric: `cold ${mib} MiB layer, time to first byte, median of ${o.runs}`, unit: 'ms', direct: ttfb.direct, gateway: ttfb.proxy, ratio: ttfb.proxy / ttfb.direct, target: `<= direct + ${ON_DEMAND_TARGETS.ttfbExtraMs} ms`, pass: extra <= ON_DEMAND_TARGETS.ttfbExtraMs },
      { metric: `${ON_DEMAND_TARGETS.concurrentClients} concurrent cold pulls: bytes fetched upstream / image size`, unit: 'x', gateway: upstreamRatio, target: `= ${ON_DEMAND_TARGETS.upstreamPerImageMax.toFixed(1)}`, pass: conc.upstreamBodyBytes === imageBytes },
      { metric: 'cold pull, proxyd CPU per GiB of layer (info)', unit: 's', gateway: median(proxy.cpuPerGiB) },
      { metric: 'cold pull, skopeo CPU (info)', unit: 's', direct: median(direct.skopeoCpu), gateway: median(proxy.skopeoCpu), ratio: median(proxy.skopeoCpu) / median(direct.skopeoCpu) },
      { metric: 'cold pull, registry CPU (info)', unit: 's', direct: median(direct.registryCpu), gateway: median(proxy.registryCpu), ratio: median(proxy.registryCpu) / median(direct.registryCpu) },
      { metric: `cold pull, busy cores of ${cpus().length}, every process of the machine (info)`, unit: 'cores', direct: median(direct.machineBusy), gateway: median(proxy.machineBusy) },
      { metric: 'cold pull, proxyd peak RSS (info)', unit: 'MiB', gateway: median(proxy.hwmMiB) },
      // Without skopeo's own hashing and writing competing for the cores: what the proxy alone delivers.
      { metric: 'cold layer GET, node:http, body discarded (info)', unit: 'MB/s', direct: median(direct.getMBs), gateway: median(proxy.getMBs), ratio: median(proxy.getMBs) / median(direct.getMBs) },
      { metric: 'cold layer, time to response head (info)', unit: 'ms', direct: median(direct.head), gateway: median(proxy.head), ratio: median(proxy.head) / median(direct.head) },
    ];
    const notes = [
      `cold: skopeo copy --src-tls-verify=false docker://… dir:… (a fresh destination each time) of the whole image (${imageBytes} bytes), a fresh proxy with an empty store each run (download_policy: on_demand, workers: 1), alternating which side goes first; MB/s = image bytes / skopeo's wall time; the layer checked in the proxy's store after each run`,
      `proxyd CPU: user + system seconds of the daemon (/proc/<pid>/stat) from before the cold pull to the layer's commit, per GiB of layer; skopeo CPU: its user + system seconds (the client's own cost, paid on either side); registry CPU: docker-registry's, during the pull; busy cores: of the whole machine (/proc/stat, other processes included) during the pull`,
      `warm: the same skopeo pull again from the proxy (now in its store) and from the registry, alternating`,
      `time to first byte: another fresh proxy, the manifest GET first (not timed), then the layer GET with node:http, body discarded; through the proxy ${extra >= 0 ? '+' : ''}${extra.toFixed(1)} ms vs direct (target: within ${ON_DEMAND_TARGETS.ttfbExtraMs} ms)`,
      `concurrent: ${ON_DEMAND_TARGETS.concurrentClients} node:http clients at once (manifest, then config and layers, sizes checked), one fresh proxy whose main server is reached through a relay counting response body bytes; ${conc.blobGets} blob GETs reached the registry for ${1 + o.layers.length} blobs`,
    ];
    return {
      rows,
      notes: profile ? [...notes, '', profile] : notes,
      json: {
        runs: o.runs,
        image_bytes: imageBytes,
        layer_bytes: layer.size,
        cold_skopeo_mb_per_sec: { direct: direct.cold, proxy: proxy.cold, median_direct: cold.direct, median_proxy: cold.proxy, ratio: ratios.cold, target_min: ON_DEMAND_TARGETS.coldMin },
        warm_skopeo_mb_per_sec: { direct: direct.warm, proxy: proxy.warm, median_direct: warm.direct, median_proxy: warm.proxy, ratio: ratios.warm, target_min: ON_DEMAND_TARGETS.warmMin },
        proxyd_cpu_s_per_gib: proxy.cpuPerGiB,
        skopeo_cpu_s: { direct: direct.skopeoCpu, proxy: proxy.skopeoCpu },
        registry_cpu_s: { direct: direct.registryCpu, proxy: proxy.registryCpu },
        machine_busy_cores: { direct: direct.machineBusy, proxy: proxy.machineBusy },
        proxyd_peak_rss_mib: proxy.hwmMiB,
        ttfb_ms: { direct: direct.ttfb, proxy: proxy.ttfb, median_direct: ttfb.direct, median_proxy: ttfb.proxy, extra_ms: extra, target_extra_ms_max: ON_DEMAND_TARGETS.ttfbExtraMs },
        head_ms: { direct: direct.head, proxy: proxy.head },
        cold_get_mb_per_sec: { direct: direct.getMBs, proxy: proxy.getMBs },
        concurrent: { clients: ON_DEMAND_TARGETS.concurrentClients, upstream_body_bytes: conc.upstreamBodyBytes, image_bytes: imageBytes, ratio: upstreamRatio, blob_gets: conc.blobGets, seconds: conc.seconds },
      },
    };
  }
}

// ---------------------------------------------------------------------------
// Alone: tsx test/bench/on-demand.ts [--blob-mib N] [--runs N] [--cpu-prof DIR]
// ---------------------------------------------------------------------------

async function alone(): Promise<void> {
  const { values } = parseArgs({ options: { 'blob-mib': { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' }, 'cpu-prof': { type: 'string' } } });
  const blobBytes = Number(values['blob-mib']) * 2 ** 20;
  const runs = Number(values.runs);
  const started = Date.now();
  const progress = (msg: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
  const gateways: RunningGateway[] = [];
  const work = mkdtempSync(join(tmpdir(), 'proxyd-bench-on-demand-'));
  let registry: RunningRegistry | undefined;
  try {
    progress(`machine: ${cpus().length} CPUs, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}, node ${process.version}`);
    registry = await startRegistry();
    progress(`building an image with one ${values['blob-mib']} MiB layer of random bytes, pushing it to ${registry.host}...`);
    const img = await buildImage(work, { name: 'bench-app', tag: 'v1', files: { '/etc/bench.txt': 'proxyd benchmark\n' }, randomBytes: blobBytes, cmd: ['/bin/true'], timeoutMs: 600_000 });
    await pushImage(img.ref, `${registry.host}/bench/app:v1`, { timeoutMs: 600_000 });
    const local = layoutManifest(img.layout, 'v1');
    const r = await onDemandSection({
      registry, repository: 'bench/app', tag: 'v1', manifestDigest: local.digest, manifestType: local.mediaType,
      manifestSize: local.raw.length, config: local.manifest.config, layers: local.manifest.layers, runs,
      dataDir: join(work, 'data'), ...(values['cpu-prof'] ? { cpuProfileDir: values['cpu-prof'] } : {}), progress, adopt: (gw) => gateways.push(gw),
    });
    const fmt = (x: number | undefined, d: number) => (x === undefined ? '-' : x.toFixed(d));
    const lines = r.rows.map((row) => `${row.metric} (${row.unit}): direct ${fmt(row.direct, 2)}, proxy ${fmt(row.gateway, 2)}, ratio ${fmt(row.ratio, 2)}x${row.target ? `, target ${row.target}: ${row.pass ? 'PASS' : 'FAIL'}` : ''}`);
    process.stdout.write(`\n== 4. on-demand pull-through vs straight from docker-registry\n${lines.join('\n')}\n${r.notes.join('\n')}\n${JSON.stringify(r.json)}\n`);
    writeFileSync(join(tmpdir(), 'proxyd-bench-on-demand-last.json'), JSON.stringify(r.json, null, 2));
  } finally {
    for (const gw of gateways) await gw.stop();
    await registry?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  alone().catch((err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
