// `npm run bench`: the container gateway against a real docker-registry as its
// pulp backend, measured in one run. Manifest GET req/s (wrk, every gateway
// request carrying a real Bearer token, so the token check and the repository
// access check run each time) and 1 GiB blob GET MB/s (curl), direct vs
// through the gateway, plus the gateway's peak RSS. A measurement, not a test:
// exit 0 whatever the numbers; non-zero only when the benchmark itself failed.
//
//   npm run bench [-- --json FILE] [--blob-mib N] [--duration S] [--connections C]
//                 [--threads T] [--runs N] [--cpu-prof DIR]
//
// Progress goes to stderr; the table, then one line of JSON (the last line),
// go to stdout. MB = 10^6 bytes. --cpu-prof runs the daemon under
// `node --cpu-prof` (its numbers then include the profiler's overhead) and
// prints the top functions by self time.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildImage, layoutManifest, pushImage } from '../helpers/images.ts';
import { KatelloDouble } from '../helpers/katello-double.ts';
import { PROXYD, ROOT } from '../helpers/proxyd.ts';
import { startRegistry, type RunningRegistry } from '../helpers/registry.ts';
import { startGateway, type RunningGateway } from './gateway.ts';
import { curlDownload, exec, fetchHashed, median, memoryOf, ProcSampler, request, runWrk, type Download, type PhaseUsage, type WrkResult } from './measure.ts';
import { formatProfile, summarizeProfile, type ProfileSummary, type Window } from './profile.ts';

const TARGETS = { manifestRatio: 0.8, blobRatio: 0.6, rssMb: 150 };
const REPO = 'bench/app';
const TAG = 'v1';
const USER = 'bench';
const MANIFEST_ACCEPT = 'application/vnd.oci.image.manifest.v1+json';

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

function parseOptions() {
  try {
    return parseArgs({
      options: {
        json: { type: 'string' },
        'blob-mib': { type: 'string', default: '1024' },
        duration: { type: 'string', default: '10' },
        connections: { type: 'string', default: '32' },
        threads: { type: 'string', default: '2' },
        runs: { type: 'string', default: '3' },
        'cpu-prof': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message} (see --help)\n`);
    process.exit(64);
  }
}
const args = parseOptions();
if (args.help) {
  const lines = readFileSync(new URL(import.meta.url), 'utf8').split('\n');
  const header = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')));
  process.stdout.write(`${header.map((l) => l.slice(3)).join('\n')}\n`);
  process.exit(0);
}
function positiveInt(name: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`bench: --${name} must be a positive integer, got ${JSON.stringify(v)}\n`);
    process.exit(64);
  }
  return n;
}
const opt = {
  blobBytes: positiveInt('blob-mib', args['blob-mib']) * 1024 * 1024,
  seconds: positiveInt('duration', args.duration),
  connections: positiveInt('connections', args.connections),
  threads: positiveInt('threads', args.threads),
  runs: positiveInt('runs', args.runs),
  json: args.json ? resolve(args.json) : undefined,
  cpuProf: args['cpu-prof'] ? resolve(args['cpu-prof']) : undefined,
};

// ---------------------------------------------------------------------------
// Progress and cleanup
// ---------------------------------------------------------------------------

const started = Date.now();
const elapsed = () => (Date.now() - started) / 1000;
function progress(msg: string): void {
  process.stderr.write(`[${elapsed().toFixed(1).padStart(6)}s] ${msg}\n`);
}

/** Undo steps, run last-in first-out, once. */
const cleanups: Array<{ what: string; fn: () => Promise<unknown> | void }> = [];
/** Directories and processes that must not survive even a hard exit. */
const tempDirs = new Set<string>();
const children = new Set<{ kill(signal: NodeJS.Signals): unknown; exitCode: number | null; signalCode: NodeJS.Signals | null }>();
let cleaning: Promise<void> | undefined;
let interrupted: NodeJS.Signals | undefined;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of cleanups.reverse()) {
      try {
        await c.fn();
      } catch (err) {
        progress(`cleanup of ${c.what} failed: ${(err as Error).message}`);
      }
    }
  })();
  return cleaning;
}

process.once('exit', () => {
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    interrupted = sig;
    progress(`${sig}: stopping everything`);
    void cleanup().finally(() => process.exit(130));
  });
}

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(d);
  cleanups.push({ what: d, fn: () => { rmSync(d, { recursive: true, force: true }); tempDirs.delete(d); } });
  return d;
}

function check(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

interface Row {
  metric: string;
  unit: string;
  direct?: number;
  gateway: number;
  ratio?: number;
  target?: string;
  pass?: boolean;
}

/** Now, in microseconds of CLOCK_MONOTONIC (the clock of V8's profile samples). */
const monoUs = () => Number(process.hrtime.bigint() / 1000n);
/** Phases of the gateway, for the CPU profile. */
const windows: Window[] = [];
async function window<T>(name: string, work: () => Promise<T>): Promise<T> {
  const startUs = monoUs();
  try {
    return await work();
  } finally {
    windows.push({ name, startUs, endUs: monoUs() });
  }
}

const fmt = (v: number | undefined, digits = 0) => (v === undefined ? '-' : v.toFixed(digits));

function table(rows: Row[]): string {
  const cells = [
    ['metric', 'direct', 'gateway', 'ratio', 'target', 'result'],
    ...rows.map((r) => {
      const d = r.unit === 'ms' ? 1 : 0;
      return [
        `${r.metric} (${r.unit})`,
        fmt(r.direct, d),
        fmt(r.gateway, d),
        r.ratio === undefined ? '-' : `${r.ratio.toFixed(2)}x`,
        r.target ?? '-',
        r.pass === undefined ? 'info' : r.pass ? 'PASS' : 'FAIL',
      ];
    }),
  ];
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  const line = (row: string[]) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(cells[0]!), sep, ...cells.slice(1).map(line)].join('\n');
}

// ---------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  const load0 = loadavg();
  progress(`machine: ${cpus().length} CPUs, load average ${load0.map((l) => l.toFixed(2)).join(' ')}, node ${process.version}`);
  if (load0[0]! > 0.5) progress('note: the machine is not idle (load average > 0.5): numbers will be noisy');
  const wrkVersion = (await exec('wrk', ['-v'], 5000)).stdout.split('\n')[0]?.trim() ?? '?';

  // Main server double, with the user the benchmark logs in as.
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  const katello = new KatelloDouble({ users: { [USER]: { password, repositories: [REPO] } } });
  await katello.start();
  cleanups.push({ what: 'Katello double', fn: () => katello.stop() });
  progress(`Katello double on ${katello.url}`);

  // The registry: the pulp backend, and the direct baseline.
  const registry: RunningRegistry = await startRegistry();
  children.add(registry.proc);
  tempDirs.add(registry.dir);
  cleanups.push({ what: 'docker-registry', fn: async () => { await registry.stop(); tempDirs.delete(registry.dir); } });
  progress(`docker-registry on ${registry.url} (pid ${registry.proc.pid})`);

  // The image: one layer holding a big incompressible file.
  const work = tempDir('proxyd-bench-image-');
  progress(`building the image with umoci: one layer with ${(opt.blobBytes / 2 ** 20).toFixed(0)} MiB of random bytes...`);
  let t = Date.now();
  const img = await buildImage(work, { name: 'bench-app', tag: TAG, files: { '/etc/bench.txt': 'proxyd benchmark\n' }, randomBytes: opt.blobBytes, cmd: ['/bin/true'], timeoutMs: 600_000 });
  const buildSeconds = (Date.now() - t) / 1000;
  const local = layoutManifest(img.layout, TAG);
  const layer = [...local.manifest.layers].sort((a, b) => b.size - a.size)[0];
  check(layer, 'the built image has no layer');
  progress(`built in ${buildSeconds.toFixed(1)} s: manifest ${local.digest} (${local.raw.length} bytes), layer ${layer.digest} (${layer.size} bytes)`);
  progress(`pushing to ${registry.host}/${REPO}:${TAG} with skopeo...`);
  t = Date.now();
  await pushImage(img.ref, `${registry.host}/${REPO}:${TAG}`, { timeoutMs: 600_000 });
  const pushSeconds = (Date.now() - t) / 1000;
  rmSync(work, { recursive: true, force: true }); // the layout's copy of the blob is no longer needed
  progress(`pushed in ${pushSeconds.toFixed(1)} s`);

  // The gateway, the registry as its pulp backend.
  const stateDir = tempDir('proxyd-bench-state-');
  const nodeArgs: string[] = [];
  if (opt.cpuProf) {
    mkdirSync(opt.cpuProf, { recursive: true });
    nodeArgs.push('--cpu-prof', '--cpu-prof-dir', opt.cpuProf);
  }
  const gateway: RunningGateway = await startGateway({
    settings: { log_level: 'WARN', foreman_url: katello.url },
    plugins: {
      container_gateway: {
        enabled: true,
        pulp_endpoint: registry.url,
        pulp_registry_path: '/v2/',
        sqlite_db_path: join(stateDir, 'container_gateway.db'),
      },
    },
    nodeArgs,
  });
  children.add(gateway.proc);
  tempDirs.add(gateway.dir);
  cleanups.push({ what: 'proxyd', fn: async () => { const code = await gateway.stop(); tempDirs.delete(gateway.dir); if (code !== 0) progress(`proxyd exited with code ${code}`); } });
  progress(`proxyd on ${gateway.httpUrl}, pid ${gateway.pid}: ${gateway.cmdline}`);
  check(gateway.cmdline.startsWith(`${process.execPath} `) && gateway.cmdline.includes(PROXYD), `pid ${gateway.pid} is not the node process of proxyd: ${gateway.cmdline}`);

  const sampler = new ProcSampler(gateway.pid, { gateway: gateway.pid, registry: registry.proc.pid! });
  await sampler.start();
  const rssAtStartKb = memoryOf(gateway.pid)?.rssKb ?? 0;
  progress(`proxyd VmRSS when ready: ${rssAtStartKb} kB`);

  // Access: the repository is private, the user may read it (Katello says so at login).
  const mgmt = await request('PUT', `${gateway.httpUrl}/container_gateway/repository_list`, { 'Content-Type': 'application/json' }, JSON.stringify({ repositories: [{ repository: REPO, auth_required: true }] }));
  check(mgmt.status === 200, `PUT /container_gateway/repository_list answered ${mgmt.status}: ${mgmt.text}`);
  const gwManifestUrl = `${gateway.httpUrl}/v2/${REPO}/manifests/${TAG}`;
  const anonymous = await fetchHashed(gwManifestUrl, { Accept: MANIFEST_ACCEPT });
  check(anonymous.status === 401 || anonymous.status === 404, `an anonymous manifest GET through the gateway answered ${anonymous.status}: the repository is not private`);
  const basic = `Basic ${Buffer.from(`${USER}:${password}`).toString('base64')}`;
  const login = await request('GET', `${gateway.httpUrl}/v2/token?account=${USER}&scope=${encodeURIComponent(`repository:${REPO}:pull`)}`, { Authorization: basic });
  check(login.status === 200, `login through /v2/token answered ${login.status}: ${login.text}`);
  const token = (JSON.parse(login.text) as { token?: string }).token;
  check(typeof token === 'string' && token && token !== 'unauthenticated', `login gave no user token: ${login.text}`);
  const bearer = { Authorization: `Bearer ${token}` };
  const badToken = await fetchHashed(gwManifestUrl, { Accept: MANIFEST_ACCEPT, Authorization: 'Bearer not-a-token' });
  check(badToken.status === 401, `a manifest GET with an unknown token answered ${badToken.status}, not 401`);
  progress(`repository ${REPO} is private: anonymous GET ${anonymous.status}, unknown token ${badToken.status}; logged in as ${USER} through /v2/token`);

  // Same manifest both ways.
  const directManifestUrl = `${registry.url}/v2/${REPO}/manifests/${TAG}`;
  const mDirect = await fetchHashed(directManifestUrl, { Accept: MANIFEST_ACCEPT });
  const mGateway = await fetchHashed(gwManifestUrl, { Accept: MANIFEST_ACCEPT, ...bearer });
  check(mDirect.status === 200, `direct manifest GET answered ${mDirect.status}`);
  check(mGateway.status === 200, `gateway manifest GET answered ${mGateway.status}`);
  check(mDirect.digest === local.digest, `the registry's manifest ${mDirect.digest} is not the pushed one ${local.digest}`);
  check(mGateway.digest === mDirect.digest, `the gateway's manifest ${mGateway.digest} differs from the registry's ${mDirect.digest}`);
  check(mGateway.headers['docker-content-digest'] === mDirect.digest, `the gateway's Docker-Content-Digest is ${String(mGateway.headers['docker-content-digest'])}`);
  progress(`manifest verified: both answer 200 with ${mDirect.digest} (${mDirect.bytes} bytes)`);

  // Manifest GET req/s.
  const wrkOpts = { threads: opt.threads, connections: opt.connections, seconds: opt.seconds };
  const warm = { ...wrkOpts, seconds: 2 };
  const wrkUsage: Record<string, PhaseUsage> = {};
  const wrkRuns: Record<string, WrkResult> = {};
  for (const [side, url, headers] of [
    ['direct', directManifestUrl, { Accept: MANIFEST_ACCEPT }],
    ['gateway', gwManifestUrl, { Accept: MANIFEST_ACCEPT, ...bearer }],
  ] as const) {
    progress(`wrk ${side}: 2 s warm-up, then -t${wrkOpts.threads} -c${wrkOpts.connections} -d${wrkOpts.seconds}s ${url}`);
    const w0 = await runWrk(url, headers, warm);
    check(w0.non2xx === 0, `wrk warm-up ${side}: ${w0.non2xx} non-2xx answers`);
    const { result, usage } = await window(`manifest GET, wrk ${side}`, () => sampler.phase(() => runWrk(url, headers, wrkOpts)));
    check(result.non2xx === 0, `wrk ${side}: ${result.non2xx} of ${result.requests} answers were not 2xx:\n${result.raw}`);
    check(result.requests > 0, `wrk ${side}: no requests completed`);
    wrkRuns[side] = result;
    wrkUsage[side] = usage;
    progress(`  ${result.requestsPerSec.toFixed(0)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, socket errors ${result.socketErrors}; CPU s: ${Object.entries(usage.cpu).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
  }

  // The same, with the manifest cache off: every request goes to the backend.
  // A second daemon on the same SQLite file (WAL), so the same token works.
  const uncached: RunningGateway = await startGateway({
    settings: { log_level: 'WARN', foreman_url: katello.url },
    plugins: { container_gateway: { enabled: true, pulp_endpoint: registry.url, pulp_registry_path: '/v2/', sqlite_db_path: join(stateDir, 'container_gateway.db'), manifest_cache_ttl: 0 } },
  });
  children.add(uncached.proc);
  tempDirs.add(uncached.dir);
  {
    const url = `${uncached.httpUrl}/v2/${REPO}/manifests/${TAG}`;
    progress(`wrk gateway, manifest cache off: -t${wrkOpts.threads} -c${wrkOpts.connections} -d${wrkOpts.seconds}s ${url}`);
    await runWrk(url, { Accept: MANIFEST_ACCEPT, ...bearer }, warm);
    const result = await runWrk(url, { Accept: MANIFEST_ACCEPT, ...bearer }, wrkOpts);
    check(result.non2xx === 0 && result.requests > 0, `wrk gateway (cache off): ${result.non2xx} of ${result.requests} answers were not 2xx`);
    wrkRuns.uncached = result;
    progress(`  ${result.requestsPerSec.toFixed(0)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms`);
    await uncached.stop();
    children.delete(uncached.proc);
    tempDirs.delete(uncached.dir);
  }

  // Blob GET MB/s.
  const directBlobUrl = `${registry.url}/v2/${REPO}/blobs/${layer.digest}`;
  const gwBlobUrl = `${gateway.httpUrl}/v2/${REPO}/blobs/${layer.digest}`;
  progress(`blob ${layer.digest}: verifying size and sha256, direct then through the gateway (also warms the page cache)...`);
  for (const [side, url, headers] of [
    ['direct', directBlobUrl, {}],
    ['gateway', gwBlobUrl, bearer],
  ] as const) {
    const v = await fetchHashed(url, headers);
    check(v.status === 200, `${side} blob GET answered ${v.status}`);
    check(v.bytes === layer.size, `${side} blob GET gave ${v.bytes} bytes, not ${layer.size}`);
    check(v.digest === layer.digest, `${side} blob GET gave bytes with digest ${v.digest}, not ${layer.digest}`);
    progress(`  ${side}: 200, ${v.bytes} bytes, ${v.digest} OK (${(v.bytes / v.seconds / 1e6).toFixed(0)} MB/s while hashing)`);
  }
  const downloads: Record<'direct' | 'gateway', Download[]> = { direct: [], gateway: [] };
  const blobCpu: Record<string, number> = {};
  const { usage: blobUsage } = await window(`blob GET, ${opt.runs} curl runs each side`, () => sampler.phase(async () => {
    for (let i = 1; i <= opt.runs; i++) {
      for (const [side, url, headers] of [
        ['direct', directBlobUrl, {}],
        ['gateway', gwBlobUrl, bearer],
      ] as const) {
        const { result: d, usage } = await sampler.phase(() => curlDownload(url, headers, 300_000));
        check(d.status === 200, `${side} blob GET (run ${i}) answered ${d.status}`);
        check(d.bytes === layer.size, `${side} blob GET (run ${i}) gave ${d.bytes} bytes, not ${layer.size}`);
        downloads[side].push(d);
        for (const [k, v] of Object.entries(usage.cpu)) blobCpu[`${side}.${k}`] = (blobCpu[`${side}.${k}`] ?? 0) + v;
        progress(`  run ${i} ${side.padEnd(7)}: ${d.mbPerSec.toFixed(0)} MB/s (${d.seconds.toFixed(2)} s); CPU s: ${Object.entries(usage.cpu).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}`);
      }
    }
  }));

  const mem = sampler.stop();
  const hwmKb = mem.hwmKb ?? mem.peakRssKb;
  const peakKb = Math.max(hwmKb, mem.peakRssKb);
  const kbToMb = (kb: number) => (kb * 1024) / 1e6;
  const load1 = loadavg();

  // Results.
  const d = wrkRuns.direct!;
  const g = wrkRuns.gateway!;
  const blobDirect = median(downloads.direct.map((x) => x.mbPerSec));
  const blobGateway = median(downloads.gateway.map((x) => x.mbPerSec));
  const manifestRatio = g.requestsPerSec / d.requestsPerSec;
  const blobRatio = blobGateway / blobDirect;
  const rows: Row[] = [
    { metric: 'manifest GET, Bearer checked', unit: 'req/s', direct: d.requestsPerSec, gateway: g.requestsPerSec, ratio: manifestRatio, target: `>= ${TARGETS.manifestRatio.toFixed(2)}x`, pass: manifestRatio >= TARGETS.manifestRatio },
    { metric: 'manifest GET, cache off (info)', unit: 'req/s', direct: d.requestsPerSec, gateway: wrkRuns.uncached!.requestsPerSec, ratio: wrkRuns.uncached!.requestsPerSec / d.requestsPerSec },
    { metric: 'manifest GET latency p50', unit: 'ms', direct: d.p50Ms, gateway: g.p50Ms, ratio: g.p50Ms / d.p50Ms },
    { metric: 'manifest GET latency p99', unit: 'ms', direct: d.p99Ms, gateway: g.p99Ms, ratio: g.p99Ms / d.p99Ms },
    { metric: `blob GET ${(layer.size / 2 ** 20).toFixed(0)} MiB, median of ${opt.runs}`, unit: 'MB/s', direct: blobDirect, gateway: blobGateway, ratio: blobRatio, target: `>= ${TARGETS.blobRatio.toFixed(2)}x`, pass: blobRatio >= TARGETS.blobRatio },
    { metric: 'gateway peak RSS', unit: 'MB', gateway: kbToMb(peakKb), target: `< ${TARGETS.rssMb} MB`, pass: kbToMb(peakKb) < TARGETS.rssMb },
  ];
  const allPass = rows.every((r) => r.pass !== false);

  let profile: ProfileSummary | undefined;
  if (opt.cpuProf) {
    progress('stopping proxyd to write its CPU profile...');
    await cleanup();
    profile = summarizeProfile(opt.cpuProf, ROOT, gateway.pid, windows.filter((w) => !w.name.endsWith('direct')));
  }

  const result = {
    ok: true,
    all_targets_met: allPass,
    targets: { manifest_ratio_min: TARGETS.manifestRatio, blob_ratio_min: TARGETS.blobRatio, rss_mb_max: TARGETS.rssMb },
    manifest: {
      url_direct: directManifestUrl,
      url_gateway: gwManifestUrl,
      digest: mDirect.digest,
      bytes: mDirect.bytes,
      wrk: `wrk -t${wrkOpts.threads} -c${wrkOpts.connections} -d${wrkOpts.seconds}s --latency`,
      direct: { req_per_sec: d.requestsPerSec, requests: d.requests, p50_ms: d.p50Ms, p90_ms: d.p90Ms, p99_ms: d.p99Ms, socket_errors: d.socketErrors, cpu_seconds: wrkUsage.direct!.cpu },
      gateway: { req_per_sec: g.requestsPerSec, requests: g.requests, p50_ms: g.p50Ms, p90_ms: g.p90Ms, p99_ms: g.p99Ms, socket_errors: g.socketErrors, cpu_seconds: wrkUsage.gateway!.cpu },
      ratio: manifestRatio,
      pass: manifestRatio >= TARGETS.manifestRatio,
    },
    blob: {
      digest: layer.digest,
      bytes: layer.size,
      runs: opt.runs,
      direct: { median_mb_per_sec: blobDirect, best_mb_per_sec: Math.max(...downloads.direct.map((x) => x.mbPerSec)), runs_mb_per_sec: downloads.direct.map((x) => x.mbPerSec), runs_seconds: downloads.direct.map((x) => x.seconds) },
      gateway: { median_mb_per_sec: blobGateway, best_mb_per_sec: Math.max(...downloads.gateway.map((x) => x.mbPerSec)), runs_mb_per_sec: downloads.gateway.map((x) => x.mbPerSec), runs_seconds: downloads.gateway.map((x) => x.seconds) },
      cpu_seconds: blobCpu,
      sha256_verified: true,
      ratio: blobRatio,
      pass: blobRatio >= TARGETS.blobRatio,
    },
    rss: {
      pid: gateway.pid,
      peak_mb: kbToMb(peakKb),
      vm_hwm_kb: hwmKb,
      sampled_peak_vm_rss_kb: mem.peakRssKb,
      samples: sampler.samples,
      at_start_kb: rssAtStartKb,
      during_manifest_kb: Math.max(wrkUsage.direct!.peakRssKb, wrkUsage.gateway!.peakRssKb),
      during_blob_kb: blobUsage.peakRssKb,
      pass: kbToMb(peakKb) < TARGETS.rssMb,
    },
    setup: { build_seconds: buildSeconds, push_seconds: pushSeconds },
    machine: { cpus: cpus().length, node: process.version, wrk: wrkVersion, load_average_start: load0, load_average_end: load1 },
    ...(profile ? { cpu_profile: profile } : {}),
    seconds: 0,
  };

  progress(`peak RSS of proxyd: VmHWM ${hwmKb} kB, highest sampled VmRSS ${mem.peakRssKb} kB (${sampler.samples} samples)`);
  await cleanup();
  result.seconds = elapsed();

  const out: string[] = [
    '',
    `container gateway benchmark: docker-registry 2.8 as pulp backend, ${cpus().length} CPUs, load average ${load0[0]!.toFixed(2)} at start, ${load1[0]!.toFixed(2)} at end`,
    `manifest: ${wrkVersion.split(' ').slice(0, 2).join(' ')} -t${wrkOpts.threads} -c${wrkOpts.connections} -d${wrkOpts.seconds}s, gateway requests with Authorization: Bearer (token + repository access checked)`,
    `blob: curl -o /dev/null, ${(layer.size / 2 ** 20).toFixed(0)} MiB incompressible layer, ${opt.runs} runs each, alternating; size checked every run, sha256 once each`,
    '',
    table(rows),
    '',
    `gateway RSS: ${kbToMb(rssAtStartKb).toFixed(0)} MB when ready, ${kbToMb(Math.max(wrkUsage.direct!.peakRssKb, wrkUsage.gateway!.peakRssKb)).toFixed(0)} MB peak during manifest wrk, ${kbToMb(blobUsage.peakRssKb).toFixed(0)} MB peak during blob downloads (VmHWM ${hwmKb} kB)`,
    `gateway CPU during manifest wrk: ${wrkUsage.gateway!.cpu.gateway!.toFixed(1)} s of ${wrkUsage.gateway!.seconds.toFixed(1)} s wall (registry ${wrkUsage.gateway!.cpu.registry!.toFixed(1)} s); direct run: registry ${wrkUsage.direct!.cpu.registry!.toFixed(1)} s`,
    `gateway CPU during its ${opt.runs} blob downloads: ${(blobCpu['gateway.gateway'] ?? 0).toFixed(1)} s (registry ${(blobCpu['gateway.registry'] ?? 0).toFixed(1)} s); direct downloads: registry ${(blobCpu['direct.registry'] ?? 0).toFixed(1)} s`,
    `setup: image build ${buildSeconds.toFixed(1)} s, push ${pushSeconds.toFixed(1)} s; total ${result.seconds.toFixed(1)} s`,
    `targets: ${allPass ? 'all met' : 'NOT all met'} (MB = 10^6 bytes)`,
  ];
  if (profile) out.push('', formatProfile(profile));
  const json = JSON.stringify(result);
  if (opt.json) {
    writeFileSync(opt.json, `${JSON.stringify(result, null, 2)}\n`);
    out.push(`JSON written to ${opt.json}`);
  }
  process.stdout.write(`${out.join('\n')}\n${json}\n`);
}

try {
  await main();
  process.exitCode = 0;
} catch (err) {
  if (interrupted) {
    await cleanup();
    process.exit(130);
  }
  progress(`benchmark failed: ${(err as Error).stack ?? String(err)}`);
  await cleanup();
  process.exitCode = 1;
}
