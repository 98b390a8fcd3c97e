// `npm run bench`: the container gateway against a real docker-registry, in
// one run, in five sections; 1-4 on the same registry and the same image (one
// layer of 1 GiB of random bytes), 5 with its own image and servers:
//
// 1. pulp backend: the gateway proxies the registry. Manifest GET req/s (wrk,
//    every gateway request carrying a real Bearer token, so the token check and
//    the repository access check run each time) and 1 GiB blob GET MB/s (curl),
//    direct vs through the gateway, plus the gateway's peak RSS.
// 2. embedded store: a second gateway, standalone (no foreman_url, no
//    pulp_endpoint) with `workers: W` (node:cluster), its own SQLite database
//    and storage. A user made through the admin API pushes the image with
//    skopeo (timed, vs the same push to a fresh repository of the registry);
//    then manifest GET req/s (Bearer pull token) and blob GET MB/s, embedded
//    store vs docker-registry, with the peak RSS of the primary and of each
//    worker.
// 3. pushes through a smart proxy: a gateway with foreman_url (the Katello
//    double) and main_registry_url (the registry), embedded store, workers:
//    skopeo pushes of the image straight to the registry vs through the proxy
//    (which streams the layer on and keeps a copy), and the time from a
//    manifest PUT's 201 to the tag being pullable from the proxy.
// 4. on-demand pull-through (test/bench/on-demand.ts).
// 5. the database (test/bench/database.ts): the standalone gateway on SQLite
//    vs on PostgreSQL (a private server started for the run), manifest GET
//    req/s with a pull token (target: PostgreSQL >= 0.7x SQLite) and a
//    --db-blob-mib layer's GET; then two nodes on that PostgreSQL and one
//    storage_path behind HAProxy (the shipped example) vs one node.
//
// A measurement, not a test: exit 0 whatever the numbers; non-zero only when
// the benchmark itself failed.
//
//   npm run bench [-- --json FILE] [--blob-mib N] [--duration S] [--connections C]
//                 [--threads T] [--runs N] [--push-runs N] [--workers W] [--cpu-prof DIR]
//                 [--db-blob-mib N]
//
// Progress goes to stderr; the tables, then one line of JSON (the last line),
// go to stdout. MB = 10^6 bytes. --cpu-prof runs the daemons under
// `node --cpu-prof` (their numbers then include the profiler's overhead) and
// prints the top functions by self time (of each worker in section 2).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildImage, layoutManifest, pushImage } from '../helpers/images.ts';
import { KatelloDouble } from '../helpers/katello-double.ts';
import { PROXYD, ROOT } from '../helpers/proxyd.ts';
import { startRegistry, type RunningRegistry } from '../helpers/registry.ts';
import { startGateway, type RunningGateway } from './gateway.ts';
import { databaseLines, databaseSection } from './database.ts';
import { onDemandSection } from './on-demand.ts';
import { pushThroughSection } from './push-through.ts';
import type { Row } from './measure.ts';
import { childrenOf, cpuDetailOf, cpuSecondsOf, curlDownload, ticksPerSecond, exec, fetchHashed, ioOf, median, memoryOf, ProcGroupSampler, ProcSampler, request, runWrk, type Download, type GroupUsage, type PhaseUsage, type WrkResult } from './measure.ts';
import { formatProfile, summarizeProfile, type ProfileSummary, type Window } from './profile.ts';

const TARGETS = { manifestRatio: 0.8, blobRatio: 0.6, rssMb: 150 };
/** Section 2: the embedded store vs docker-registry; RSS per process (primary, each worker). */
const EMBEDDED_TARGETS = { manifestRatio: 1.5, blobRatio: 0.8, pushRatio: 0.9, rssMb: 150 };
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
        'db-blob-mib': { type: 'string', default: '64' },
        duration: { type: 'string', default: '10' },
        connections: { type: 'string', default: '32' },
        threads: { type: 'string', default: '2' },
        runs: { type: 'string', default: '3' },
        'push-runs': { type: 'string', default: '3' },
        workers: { type: 'string', default: '2' },
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
  dbBlobBytes: positiveInt('db-blob-mib', args['db-blob-mib']) * 1024 * 1024,
  seconds: positiveInt('duration', args.duration),
  connections: positiveInt('connections', args.connections),
  threads: positiveInt('threads', args.threads),
  runs: positiveInt('runs', args.runs),
  pushRuns: positiveInt('push-runs', args['push-runs']),
  workers: positiveInt('workers', args.workers),
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
/** Cluster workers (children of a daemon we spawned): killed on a hard exit if still proxyd. */
const workerPids = new Set<number>();
/** Synchronous undo steps for a hard exit (the PostgreSQL server of section 5: pg_ctl stop). */
const exitHooks: Array<() => void> = [];
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
  for (const pid of workerPids) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(PROXYD)) process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  for (const fn of exitHooks.reverse()) {
    try {
      fn();
    } catch {
      // best effort on the way out
    }
  }
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

/** GET the blob once from each side: status, size and sha256 checked (this also warms the page cache). */
async function verifyBlob(sides: Array<[string, string, Record<string, string>]>, layer: { digest: string; size: number }): Promise<void> {
  for (const [side, url, headers] of sides) {
    const v = await fetchHashed(url, headers);
    check(v.status === 200, `${side} blob GET answered ${v.status}`);
    check(v.bytes === layer.size, `${side} blob GET gave ${v.bytes} bytes, not ${layer.size}`);
    check(v.digest === layer.digest, `${side} blob GET gave bytes with digest ${v.digest}, not ${layer.digest}`);
    progress(`  ${side}: 200, ${v.bytes} bytes, ${v.digest} OK (${(v.bytes / v.seconds / 1e6).toFixed(0)} MB/s while hashing)`);
  }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------


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

function table(rows: Row[], columns: [string, string] = ['direct', 'gateway']): string {
  const cells = [
    ['metric', ...columns, 'ratio', 'target', 'result'],
    ...rows.map((r) => {
      const d = r.unit === 'ms' || r.unit === 's' ? 1 : 0;
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
  progress(`pushed in ${pushSeconds.toFixed(1)} s (the layout is kept for the pushes of section 2)`);

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
  check(/^(\S*\/)?node /.test(gateway.cmdline) && gateway.cmdline.includes(PROXYD), `pid ${gateway.pid} is not the node process of proxyd: ${gateway.cmdline}`);

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
  await verifyBlob([['direct', directBlobUrl, {}], ['gateway', gwBlobUrl, bearer]], layer);
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
  // Section 1 is over: its gateway goes (writing its CPU profile, if asked).
  progress(`stopping the pulp-backend proxyd (pid ${gateway.pid})`);
  const code1 = await gateway.stop();
  children.delete(gateway.proc);
  tempDirs.delete(gateway.dir);
  if (code1 !== 0) progress(`proxyd exited with code ${code1}`);
  const hwmKb = mem.hwmKb ?? mem.peakRssKb;
  const peakKb = Math.max(hwmKb, mem.peakRssKb);
  progress(`peak RSS of the pulp-backend proxyd: VmHWM ${hwmKb} kB, highest sampled VmRSS ${mem.peakRssKb} kB (${sampler.samples} samples)`);
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
  if (opt.cpuProf) profile = summarizeProfile(opt.cpuProf, ROOT, gateway.pid, windows.filter((w) => !w.name.endsWith('direct')));

  // Section 2: the embedded store, on the same registry and image.
  const embedded = await embeddedSection({ registry, layout: img.ref, layer, manifestDigest: local.digest, wrkOpts, nodeArgs });

  // Section 3: pushes through a smart proxy, to the same registry.
  const through = await pushThroughSection({
    registry,
    katello,
    user: USER,
    password,
    layout: img.ref,
    layoutDir: img.layout,
    tag: TAG,
    layer,
    runs: opt.pushRuns,
    workers: opt.workers,
    dataDir: tempDir('proxyd-bench-through-'),
    progress,
    adopt: (gw) => {
      children.add(gw.proc);
      tempDirs.add(gw.dir);
      cleanups.push({ what: 'proxyd (smart-proxy mode)', fn: async () => { await gw.stop(); tempDirs.delete(gw.dir); } });
    },
  });
  const throughPass = through.rows.every((r) => r.pass !== false);

  // Section 4: on-demand pull-through from the same registry, a fresh proxy per cold run.
  const onDemand = await onDemandSection({
    registry,
    repository: REPO,
    tag: TAG,
    manifestDigest: local.digest,
    manifestType: local.mediaType,
    manifestSize: local.raw.length,
    config: local.manifest.config,
    layers: local.manifest.layers,
    runs: opt.runs,
    dataDir: tempDir('proxyd-bench-on-demand-'),
    progress,
    adopt: (gw) => {
      children.add(gw.proc);
      tempDirs.add(gw.dir);
      cleanups.push({ what: 'proxyd (on demand)', fn: async () => { await gw.stop(); tempDirs.delete(gw.dir); } });
    },
  });
  const onDemandPass = onDemand.rows.every((r) => r.pass !== false);
  rmSync(work, { recursive: true, force: true });
  tempDirs.delete(work);

  // Section 5: SQLite vs PostgreSQL, and two nodes vs one behind HAProxy (its own image and servers).
  const database = await databaseSection({
    workers: opt.workers,
    wrk: wrkOpts,
    runs: opt.runs,
    blobBytes: opt.dbBlobBytes,
    dataDir: tempDir('proxyd-bench-database-'),
    progress,
    keep: {
      adopt: (what, proc, stop) => {
        children.add(proc);
        cleanups.push({ what, fn: stop });
      },
      workers: (pids) => pids.forEach((p) => workerPids.add(p)),
      atExit: (what, fn) => {
        exitHooks.push(fn);
        cleanups.push({ what, fn });
      },
    },
    ...(opt.cpuProf ? { cpuProfileDir: opt.cpuProf } : {}),
  });

  const result = {
    ok: true,
    all_targets_met: allPass && embedded.allPass && throughPass && onDemandPass && database.allPass,
    database_targets_met: database.allPass,
    push_through_targets_met: throughPass,
    on_demand_targets_met: onDemandPass,
    pulp_backend_targets_met: allPass,
    embedded_targets_met: embedded.allPass,
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
    embedded: embedded.json,
    push_through: through.json,
    on_demand: onDemand.json,
    database: database.json,
    seconds: 0,
  };

  await cleanup();
  result.seconds = elapsed();

  const out: string[] = [
    '',
    `== 1. container gateway benchmark: docker-registry 2.8 as pulp backend, ${cpus().length} CPUs, load average ${load0[0]!.toFixed(2)} at start, ${load1[0]!.toFixed(2)} at end`,
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
  out.push('', ...embedded.lines);
  out.push('', `== 3. pushes through a smart proxy (foreman_url set, embedded store, workers: ${opt.workers}) vs straight to docker-registry`, '', table(through.rows, ['direct', 'proxy']), '', ...through.notes, `targets: ${throughPass ? 'all met' : 'NOT all met'}`);
  out.push('', '== 4. on-demand pull-through (foreman_url set, embedded store, empty, download_policy: on_demand) vs straight from docker-registry', '', table(onDemand.rows, ['direct', 'proxy']), '', ...onDemand.notes, `targets: ${onDemandPass ? 'all met' : 'NOT all met'}`);
  out.push('', ...databaseLines(database, { workers: opt.workers, wrk: wrkOpts }));
  const json = JSON.stringify(result);
  if (opt.json) {
    writeFileSync(opt.json, `${JSON.stringify(result, null, 2)}\n`);
    out.push(`JSON written to ${opt.json}`);
  }
  process.stdout.write(`${out.join('\n')}\n${json}\n`);
}

// ---------------------------------------------------------------------------
// Section 2: the embedded store (standalone, node:cluster workers) vs docker-registry
// ---------------------------------------------------------------------------

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const kbToMb = (kb: number) => (kb * 1024) / 1e6;

interface EmbeddedOutcome {
  rows: Row[];
  allPass: boolean;
  lines: string[];
  json: Record<string, unknown>;
}

interface PushRun {
  repository: string;
  seconds: number;
  /** Layer bytes per second over the whole image push (the layer dominates). */
  mbPerSec: number;
  /** Bytes the server processes read (rchar) and wrote (wchar) during the push, in all and per process. */
  readBytes: number;
  writtenBytes: number;
  io: Record<string, { read: number; written: number }>;
  cpu: Record<string, number>;
}

/**
 * The workers of a cluster primary: wait until `count` children exist, then
 * until each of them answers requests (a 1 s wrk burst on /healthz, repeated,
 * until every worker has used CPU time): /readyz answers as soon as one
 * worker listens.
 */
async function waitForWorkers(primaryPid: number, baseUrl: string, count: number): Promise<{ pids: number[]; attempts: number }> {
  const deadline = Date.now() + 60_000;
  let pids: number[] = [];
  for (;;) {
    pids = childrenOf(primaryPid);
    if (pids.length >= count) break;
    check(Date.now() < deadline, `proxyd ${primaryPid} has ${pids.length} worker processes after 60 s, not ${count}`);
    await sleep(100);
  }
  check(pids.length === count, `proxyd ${primaryPid} has ${pids.length} child processes, expected ${count} workers: ${pids.join(' ')}`);
  if (count === 1) return { pids, attempts: 0 };
  const ticks = await ticksPerSecond();
  for (let attempt = 1; ; attempt++) {
    const before = pids.map((p) => cpuSecondsOf(p, ticks) ?? 0);
    await runWrk(`${baseUrl}/healthz`, {}, { threads: 1, connections: 4 * count, seconds: 1 });
    const used = pids.map((p, i) => (cpuSecondsOf(p, ticks) ?? 0) - before[i]!);
    if (used.every((u) => u >= 0.05)) return { pids, attempts: attempt };
    check(Date.now() < deadline, `not every worker of proxyd ${primaryPid} serves requests: CPU s during a /healthz burst ${used.map((u) => u.toFixed(2)).join(', ')}`);
  }
}

/** rchar/wchar of each named process. */
function ioByName(pids: Record<string, number>): Record<string, { rchar: number; wchar: number; readBytes: number }> {
  const out: Record<string, { rchar: number; wchar: number; readBytes: number }> = {};
  for (const [name, pid] of Object.entries(pids)) {
    const io = ioOf(pid);
    check(io, `cannot read /proc/${pid}/io`);
    out[name] = io;
  }
  return out;
}

interface EmbeddedInput {
  registry: RunningRegistry;
  /** `oci:<layout>:<tag>` of the image. */
  layout: string;
  layer: { digest: string; size: number };
  manifestDigest: string;
  wrkOpts: { threads: number; connections: number; seconds: number };
  nodeArgs: string[];
}

async function embeddedSection(o: EmbeddedInput): Promise<EmbeddedOutcome> {
  const state = tempDir('proxyd-bench-embedded-');
  const storage = join(state, 'storage');
  const dbPath = join(state, 'container_gateway.db');
  const plugins = { container_gateway: { enabled: true, sqlite_db_path: dbPath, storage_path: storage } };
  if (opt.workers > 1) {
    // Workaround: workers that open a *new* database at the same time both run
    // its migrations (the migration runner, then in GatewayDb, read user_version outside the
    // migration's transaction), and the loser's container_gateway fails with
    // "duplicate column name: owner" while the worker keeps serving without it.
    // A one-worker start creates the schema first; the check below still fails
    // the run if any worker's plugins are not running.
    const init = await startGateway({ settings: { log_level: 'WARN', workers: 1 }, plugins, readyTimeoutMs: 60_000 });
    children.add(init.proc);
    tempDirs.add(init.dir);
    const code = await init.stop();
    children.delete(init.proc);
    tempDirs.delete(init.dir);
    check(code === 0, `the one-worker start that creates the database exited with ${code}:\n${init.output()}`);
    progress(`database schema created by a one-worker start of proxyd (pid ${init.pid}), as concurrent migrations by the workers race`);
  }
  const gw: RunningGateway = await startGateway({
    settings: { log_level: 'WARN', workers: opt.workers },
    plugins,
    nodeArgs: o.nodeArgs,
    readyTimeoutMs: 60_000,
  });
  children.add(gw.proc);
  tempDirs.add(gw.dir);
  cleanups.push({ what: 'proxyd (embedded store)', fn: async () => { const code = await gw.stop(); tempDirs.delete(gw.dir); if (code !== 0) progress(`proxyd (embedded store) exited with code ${code}`); } });
  check(/^(\S*\/)?node /.test(gw.cmdline) && gw.cmdline.includes(PROXYD), `pid ${gw.pid} is not the node process of proxyd: ${gw.cmdline}`);
  try {
    return await embeddedRun(o, gw, state, storage, dbPath);
  } catch (err) {
    // What the daemon said (warnings and errors of every process) explains most failures.
    const said = gw.output().split('\n').filter((l) => l && !l.includes("Couldn't find settings file")).slice(-30).join('\n');
    if (err instanceof Error && said) err.message += `\nlast output of proxyd (embedded store):\n${said}`;
    throw err;
  }
}

async function embeddedRun(o: EmbeddedInput, gw: RunningGateway, state: string, storage: string, dbPath: string): Promise<EmbeddedOutcome> {
  const { registry, layer } = o;
  const layerMiB = (layer.size / 2 ** 20).toFixed(0);
  const hex = layer.digest.slice('sha256:'.length);
  const { pids: workers, attempts } = await waitForWorkers(gw.pid, gw.httpUrl, opt.workers);
  for (const pid of workers) workerPids.add(pid);
  // Connections are dealt to the workers in turn: each must have its plugins running.
  const ready: number[] = [];
  for (let i = 0; i < 4 * opt.workers; i++) ready.push((await request('GET', `${gw.httpUrl}/readyz`, {})).status);
  check(ready.every((st) => st === 200), `GET /readyz on ${4 * opt.workers} new connections answered ${ready.join(' ')}: a worker's plugins are not all running`);
  progress(`proxyd (embedded store, standalone) on ${gw.httpUrl}: primary pid ${gw.pid}, workers ${workers.join(', ')} (each served a /healthz burst after ${attempts} s); storage ${storage}`);
  const journal = (await exec('sqlite3', [dbPath, 'PRAGMA journal_mode;'], 5000).catch(() => undefined))?.stdout.trim();
  if (journal) progress(`  SQLite journal_mode of ${dbPath}: ${journal}`);

  const sampler = new ProcGroupSampler(gw.pid, { registry: registry.proc.pid! });
  await sampler.start();
  const readyKb = Object.fromEntries(Object.entries(sampler.live()).map(([name, pid]) => [name, memoryOf(pid)?.rssKb ?? 0]));
  progress(`  VmRSS when ready: ${Object.entries(readyKb).map(([k, v]) => `${k} ${v} kB`).join(', ')}`);
  const embWindows: Window[] = [];
  async function embWindow<T>(name: string, work: () => Promise<T>): Promise<T> {
    const startUs = monoUs();
    try {
      return await work();
    } finally {
      embWindows.push({ name, startUs, endUs: monoUs() });
    }
  }

  // A user, through the admin API; its push token; the push path demands it.
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  const added = await request('POST', `${gw.httpUrl}/container_gateway/admin/users`, { 'Content-Type': 'application/json' }, JSON.stringify({ name: USER, password }));
  check(added.status === 201, `POST /container_gateway/admin/users answered ${added.status}: ${added.text}`);
  const basic = `Basic ${Buffer.from(`${USER}:${password}`).toString('base64')}`;
  const tokenUrl = (actions: string) => `${gw.httpUrl}/v2/token?account=${USER}&scope=${encodeURIComponent(`repository:${REPO}:${actions}`)}`;
  const pushLogin = await request('GET', tokenUrl('pull,push'), { Authorization: basic });
  check(pushLogin.status === 200, `push login through /v2/token answered ${pushLogin.status}: ${pushLogin.text}`);
  const pushToken = (JSON.parse(pushLogin.text) as { token?: string }).token;
  check(typeof pushToken === 'string' && pushToken.length > 20, `the push login gave no token: ${pushLogin.text}`);
  const anonymousPush = await request('POST', `${gw.httpUrl}/v2/${REPO}/blobs/uploads/`, {});
  check(anonymousPush.status === 401, `an anonymous upload start answered ${anonymousPush.status}, not 401`);
  progress(`user ${USER} added through the admin API (201); push token issued (scope repository:${REPO}:pull,push); anonymous upload start: 401`);

  // Pushes: the same image to a fresh repository each time, registry and
  // embedded store alternating (which goes first alternates per run).
  const gwHost = new URL(gw.httpUrl).host;
  const pushes: Record<'registry' | 'embedded', PushRun[]> = { registry: [], embedded: [] };
  for (let i = 1; i <= opt.pushRuns; i++) {
    const sides = i % 2 ? (['registry', 'embedded'] as const) : (['embedded', 'registry'] as const);
    for (const side of sides) {
      const repository = side === 'embedded' ? (i === 1 ? REPO : `${REPO}-push${i}`) : `bench/push-${i}`;
      const target = `${side === 'embedded' ? gwHost : registry.host}/${repository}:${TAG}`;
      await exec('sync', [], 300_000); // earlier writes are on disk: every push starts with no dirty pages
      const pids = side === 'embedded' ? sampler.live() : { registry: registry.proc.pid! };
      const io0 = ioByName(pids);
      progress(`push ${i} ${side}: skopeo copy ${o.layout} docker://${target}${side === 'embedded' ? ` --dest-creds ${USER}:***` : ''}...`);
      const t0 = process.hrtime.bigint();
      const push = () => sampler.phase(() => pushImage(o.layout, target, { timeoutMs: 600_000, ...(side === 'embedded' ? { creds: `${USER}:${password}` } : {}) }));
      const { result: out, usage } = side === 'embedded' ? await embWindow(`push ${i}`, push) : await push();
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const io1 = ioByName(pids);
      const io = Object.fromEntries(Object.keys(pids).map((k) => [k, { read: io1[k]!.rchar - io0[k]!.rchar, written: io1[k]!.wchar - io0[k]!.wchar }]));
      const readBytes = Object.values(io).reduce((sum, x) => sum + x.read, 0);
      const writtenBytes = Object.values(io).reduce((sum, x) => sum + x.written, 0);
      check(!/skipped/i.test(out.stdout + out.stderr), `skopeo skipped a blob of push ${i} to ${side}:\n${out.stdout}${out.stderr}`);
      check(readBytes >= layer.size && writtenBytes >= layer.size, `push ${i} to ${side}: the server read ${readBytes} and wrote ${writtenBytes} bytes, less than the ${layer.size} bytes of the layer: it was not uploaded`);
      if (side === 'embedded') {
        const blob = join(storage, 'blobs', 'sha256', hex.slice(0, 2), hex);
        check(existsSync(blob) && statSync(blob).size === layer.size, `after push ${i}, the embedded store has no ${layer.size}-byte blob at ${blob}`);
      } else {
        const link = join(registry.dir, 'data', 'docker', 'registry', 'v2', 'repositories', repository, '_layers', 'sha256', hex, 'link');
        check(existsSync(link), `after push ${i}, docker-registry has no layer link ${link}`);
      }
      pushes[side].push({ repository, seconds, mbPerSec: layer.size / seconds / 1e6, readBytes, writtenBytes, io, cpu: usage.cpu });
      const ioText = Object.entries(io).filter(([, x]) => x.read + x.written >= 1e6).map(([k, x]) => `${k} read ${(x.read / 1e6).toFixed(0)} MB, wrote ${(x.written / 1e6).toFixed(0)} MB`).join('; ');
      progress(`  ${seconds.toFixed(2)} s, ${(layer.size / seconds / 1e6).toFixed(0)} MB/s of layer; ${ioText}; CPU s: ${Object.entries(usage.cpu).filter(([k]) => side === 'embedded' || k === 'registry').map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
    }
  }
  const repos = await request('GET', `${gw.httpUrl}/container_gateway/admin/repositories`, {});
  check(repos.status === 200, `GET /container_gateway/admin/repositories answered ${repos.status}`);
  const listed = (JSON.parse(repos.text) as { repositories: Array<{ name: string; public: boolean; owner?: string }> }).repositories.find((r) => r.name === REPO);
  check(listed && listed.owner === USER && listed.public === false, `after the push, ${REPO} is not a private repository of ${USER}: ${repos.text}`);

  // Manifest GET: a pull token, checked on every request.
  const pullLogin = await request('GET', tokenUrl('pull'), { Authorization: basic });
  check(pullLogin.status === 200, `pull login through /v2/token answered ${pullLogin.status}: ${pullLogin.text}`);
  const pullToken = (JSON.parse(pullLogin.text) as { token?: string }).token;
  check(typeof pullToken === 'string' && pullToken.length > 20, `the pull login gave no token: ${pullLogin.text}`);
  const bearer = { Authorization: `Bearer ${pullToken}` };
  const embManifestUrl = `${gw.httpUrl}/v2/${REPO}/manifests/${TAG}`;
  const regManifestUrl = `${registry.url}/v2/${REPO}/manifests/${TAG}`;
  const anonymous = await fetchHashed(embManifestUrl, { Accept: MANIFEST_ACCEPT });
  check(anonymous.status === 401 || anonymous.status === 404, `an anonymous manifest GET of the embedded store answered ${anonymous.status}: the repository is not private`);
  const badToken = await fetchHashed(embManifestUrl, { Accept: MANIFEST_ACCEPT, Authorization: 'Bearer not-a-token' });
  check(badToken.status === 401, `a manifest GET with an unknown token answered ${badToken.status}, not 401`);
  const mEmb = await fetchHashed(embManifestUrl, { Accept: MANIFEST_ACCEPT, ...bearer });
  const mReg = await fetchHashed(regManifestUrl, { Accept: MANIFEST_ACCEPT });
  check(mEmb.status === 200 && mReg.status === 200, `manifest GET answered ${mEmb.status} (embedded), ${mReg.status} (registry)`);
  check(mEmb.digest === o.manifestDigest && mReg.digest === o.manifestDigest, `manifest digests: embedded ${mEmb.digest}, registry ${mReg.digest}, pushed ${o.manifestDigest}`);
  check(mEmb.headers['docker-content-digest'] === o.manifestDigest, `the embedded store's Docker-Content-Digest is ${String(mEmb.headers['docker-content-digest'])}`);
  progress(`manifest verified: both answer 200 with ${o.manifestDigest}; ${REPO} is private (anonymous ${anonymous.status}, unknown token ${badToken.status}); pull token of ${USER}`);

  const warm = { ...o.wrkOpts, seconds: 2 };
  const wrkRuns: Record<string, WrkResult> = {};
  const wrkUsage: Record<string, GroupUsage> = {};
  for (const [side, url, headers] of [
    ['registry', regManifestUrl, { Accept: MANIFEST_ACCEPT }],
    ['embedded', embManifestUrl, { Accept: MANIFEST_ACCEPT, ...bearer }],
  ] as const) {
    progress(`wrk ${side}: 2 s warm-up, then -t${o.wrkOpts.threads} -c${o.wrkOpts.connections} -d${o.wrkOpts.seconds}s ${url}`);
    const w0 = await runWrk(url, headers, warm);
    check(w0.non2xx === 0, `wrk warm-up ${side}: ${w0.non2xx} non-2xx answers`);
    const measure = () => sampler.phase(() => runWrk(url, headers, o.wrkOpts));
    const { result, usage } = side === 'embedded' ? await embWindow('manifest GET, wrk', measure) : await measure();
    check(result.non2xx === 0, `wrk ${side}: ${result.non2xx} of ${result.requests} answers were not 2xx:\n${result.raw}`);
    check(result.requests > 0, `wrk ${side}: no requests completed`);
    wrkRuns[side] = result;
    wrkUsage[side] = usage;
    progress(`  ${result.requestsPerSec.toFixed(0)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, socket errors ${result.socketErrors}; CPU s: ${Object.entries(usage.cpu).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
  }
  const busyWorkers = Object.entries(wrkUsage.embedded!.cpu).filter(([k, v]) => k.startsWith('worker') && v > 0.1 * wrkUsage.embedded!.seconds);
  if (busyWorkers.length < opt.workers) progress(`note: only ${busyWorkers.length} of ${opt.workers} workers were busy during the embedded wrk run`);

  // Blob GET: verify once each, then alternate timed downloads.
  const embBlobUrl = `${gw.httpUrl}/v2/${REPO}/blobs/${layer.digest}`;
  const regBlobUrl = `${registry.url}/v2/${REPO}/blobs/${layer.digest}`;
  progress(`blob ${layer.digest}: verifying size and sha256 from both (also warms the page cache)...`);
  await verifyBlob([['registry', regBlobUrl, {}], ['embedded', embBlobUrl, bearer]], layer);
  const downloads: Record<'registry' | 'embedded', Download[]> = { registry: [], embedded: [] };
  const blobCpu: Record<string, number> = {};
  const blobPeak: Record<string, number> = {};
  const blobDiskRead = { registry: 0, embedded: 0 };
  const ticks = await ticksPerSecond();
  for (let i = 1; i <= opt.runs; i++) {
    for (const [side, url, headers] of [
      ['registry', regBlobUrl, {}],
      ['embedded', embBlobUrl, bearer],
    ] as const) {
      const servers = side === 'embedded' ? sampler.live() : { registry: registry.proc.pid! };
      const disk0 = Object.values(ioByName(servers)).reduce((sum, x) => sum + x.readBytes, 0);
      const detail0 = Object.fromEntries(Object.entries(servers).map(([k, pid]) => [k, cpuDetailOf(pid, ticks)]));
      const get = () => sampler.phase(() => curlDownload(url, headers, 300_000));
      const { result: d, usage } = side === 'embedded' ? await embWindow(`blob GET run ${i}`, get) : await get();
      const diskRead = Object.values(ioByName(servers)).reduce((sum, x) => sum + x.readBytes, 0) - disk0;
      // Where the CPU time of the serving process went (user/sys, minor faults).
      const detail = Object.entries(servers)
        .map(([k, pid]) => ({ k, a: detail0[k], b: cpuDetailOf(pid, ticks) }))
        .filter((x) => x.a && x.b && x.b.user + x.b.sys - x.a.user - x.a.sys >= 0.05)
        .map(({ k, a, b }) => `${k} user ${(b!.user - a!.user).toFixed(2)} sys ${(b!.sys - a!.sys).toFixed(2)} minflt ${b!.minflt - a!.minflt}`)
        .join(', ');
      check(d.status === 200, `${side} blob GET (run ${i}) answered ${d.status}`);
      check(d.bytes === layer.size, `${side} blob GET (run ${i}) gave ${d.bytes} bytes, not ${layer.size}`);
      downloads[side].push(d);
      for (const [k, v] of Object.entries(usage.cpu)) blobCpu[`${side}.${k}`] = (blobCpu[`${side}.${k}`] ?? 0) + v;
      for (const [k, v] of Object.entries(usage.peakRssKb)) blobPeak[k] = Math.max(blobPeak[k] ?? 0, v);
      blobDiskRead[side] += diskRead;
      progress(`  run ${i} ${side.padEnd(8)}: ${d.mbPerSec.toFixed(0)} MB/s (${d.seconds.toFixed(2)} s); CPU s: ${Object.entries(usage.cpu).filter(([, v]) => v >= 0.01).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}; read from disk (page-cache misses): ${(diskRead / 1e6).toFixed(0)} MB; ${detail}`);
    }
  }

  // Memory: VmHWM of each process (start-up included) and the sampled peaks.
  const mem = sampler.stop();
  const replaced = mem.members.filter((m) => m.name !== 'primary').length - opt.workers;
  if (replaced > 0) progress(`note: ${replaced} worker(s) were replaced during the run (a worker died)`);
  progress(`stopping the embedded-store proxyd (pid ${gw.pid})...`);
  const code = await gw.stop();
  children.delete(gw.proc);
  tempDirs.delete(gw.dir);
  if (code !== 0) progress(`proxyd (embedded store) exited with code ${code}`);
  rmSync(state, { recursive: true, force: true }); // the store's 1 GiB copy
  tempDirs.delete(state);

  let profiles: Array<{ name: string; pid: number; summary: ProfileSummary }> = [];
  if (opt.cpuProf) {
    profiles = mem.members
      .map((m) => ({ name: m.name, pid: m.pid, summary: summarizeProfile(opt.cpuProf!, ROOT, m.pid, m.name === 'primary' ? [] : embWindows) }))
      .filter((p): p is { name: string; pid: number; summary: ProfileSummary } => p.summary !== undefined);
  }

  // Results.
  const r = wrkRuns.registry!;
  const e = wrkRuns.embedded!;
  const manifestRatio = e.requestsPerSec / r.requestsPerSec;
  const blobReg = median(downloads.registry.map((x) => x.mbPerSec));
  const blobEmb = median(downloads.embedded.map((x) => x.mbPerSec));
  const blobRatio = blobEmb / blobReg;
  const pushRegSec = median(pushes.registry.map((x) => x.seconds));
  const pushEmbSec = median(pushes.embedded.map((x) => x.seconds));
  const pushRatio = pushRegSec / pushEmbSec;
  const T = EMBEDDED_TARGETS;
  const peakOf = (m: { peakRssKb: number; hwmKb: number }) => Math.max(m.peakRssKb, m.hwmKb);
  const rows: Row[] = [
    { metric: 'manifest GET, Bearer checked', unit: 'req/s', direct: r.requestsPerSec, gateway: e.requestsPerSec, ratio: manifestRatio, target: `>= ${T.manifestRatio.toFixed(2)}x`, pass: manifestRatio >= T.manifestRatio },
    { metric: 'manifest GET latency p50', unit: 'ms', direct: r.p50Ms, gateway: e.p50Ms, ratio: e.p50Ms / r.p50Ms },
    { metric: 'manifest GET latency p99', unit: 'ms', direct: r.p99Ms, gateway: e.p99Ms, ratio: e.p99Ms / r.p99Ms },
    { metric: `blob GET ${layerMiB} MiB, median of ${opt.runs}`, unit: 'MB/s', direct: blobReg, gateway: blobEmb, ratio: blobRatio, target: `>= ${T.blobRatio.toFixed(2)}x`, pass: blobRatio >= T.blobRatio },
    { metric: `push, ${layerMiB} MiB layer, median of ${opt.pushRuns}`, unit: 'MB/s', direct: layer.size / pushRegSec / 1e6, gateway: layer.size / pushEmbSec / 1e6, ratio: pushRatio, target: `>= ${T.pushRatio.toFixed(2)}x`, pass: pushRatio >= T.pushRatio },
    { metric: 'push time (info)', unit: 's', direct: pushRegSec, gateway: pushEmbSec, ratio: pushEmbSec / pushRegSec },
    ...mem.members.map((m): Row => ({ metric: `peak RSS ${m.name} (pid ${m.pid})`, unit: 'MB', gateway: kbToMb(peakOf(m)), target: `< ${T.rssMb} MB`, pass: kbToMb(peakOf(m)) < T.rssMb })),
    { metric: 'peak RSS, sum of processes (info)', unit: 'MB', gateway: kbToMb(mem.peakSumKb) },
  ];
  const allPass = rows.every((x) => x.pass !== false);
  const pushUsage = (side: 'registry' | 'embedded') => pushes[side].map((p) => Object.entries(p.cpu).filter(([k]) => side === 'embedded' || k === 'registry').map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')).join(' / ');
  const eu = wrkUsage.embedded!;
  const lines = [
    `== 2. embedded store vs docker-registry: proxyd standalone (no foreman_url, no pulp_endpoint), workers: ${opt.workers} (node:cluster), SQLite ${journal ?? '?'}; same registry, same image`,
    `push: skopeo copy oci:<layout>:${TAG} docker://..., a fresh repository each time (embedded: --dest-creds, skopeo logs in through /v2/token), \`sync\` before each; upload checked: no blob skipped, server read + wrote >= ${layer.size} bytes (/proc/<pid>/io), blob on disk`,
    `manifest: wrk -t${o.wrkOpts.threads} -c${o.wrkOpts.connections} -d${o.wrkOpts.seconds}s, embedded requests with Authorization: Bearer <pull token of ${USER}> (token + grant checked each time)`,
    `blob: curl -o /dev/null, ${layerMiB} MiB layer, ${opt.runs} runs each, alternating; size checked every run, sha256 once each`,
    '',
    table(rows, ['docker-registry', 'embedded']),
    '',
    `RSS (MB) when ready: ${Object.entries(readyKb).map(([k, v]) => `${k} ${kbToMb(v).toFixed(0)}`).join(', ')}; peak during manifest wrk: ${Object.entries(eu.peakRssKb).map(([k, v]) => `${k} ${kbToMb(v).toFixed(0)}`).join(', ')}; during blob GETs: ${Object.entries(blobPeak).map(([k, v]) => `${k} ${kbToMb(v).toFixed(0)}`).join(', ')}`,
    `CPU s during embedded manifest wrk (${eu.seconds.toFixed(1)} s wall): ${Object.entries(eu.cpu).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}; registry run: registry ${wrkUsage.registry!.cpu.registry!.toFixed(1)}`,
    `CPU s during pushes: embedded ${pushUsage('embedded')}; registry ${pushUsage('registry')}`,
    `CPU s during ${opt.runs} blob GETs: embedded ${Object.entries(blobCpu).filter(([k, v]) => k.startsWith('embedded.') && v >= 0.01).map(([k, v]) => `${k.slice(9)} ${v.toFixed(1)}`).join(', ')}; registry ${(blobCpu['registry.registry'] ?? 0).toFixed(1)}`,
    `targets: ${allPass ? 'all met' : 'NOT all met'} (RSS per process; MB = 10^6 bytes)`,
  ];
  for (const p of profiles) {
    if (p.name === 'primary') {
      const w = p.summary.windows[0]!;
      const idle = w.functions.find((f) => f.name === '(idle)')?.ms ?? 0;
      lines.push('', `CPU profile of the primary (pid ${p.pid}): ${((w.totalMs - idle) / 1000).toFixed(1)} s busy of ${(w.totalMs / 1000).toFixed(1)} s sampled (${p.summary.file})`);
    } else {
      lines.push('', `[${p.name}, pid ${p.pid}] ${formatProfile(p.summary)}`);
    }
  }

  const json = {
    workers: opt.workers,
    pids: { primary: gw.pid, workers },
    sqlite_journal_mode: journal,
    targets: { manifest_ratio_min: T.manifestRatio, blob_ratio_min: T.blobRatio, push_ratio_min: T.pushRatio, rss_mb_max_per_process: T.rssMb },
    push: {
      runs: opt.pushRuns,
      bytes: layer.size,
      registry: { median_seconds: pushRegSec, runs: pushes.registry },
      embedded: { median_seconds: pushEmbSec, runs: pushes.embedded },
      ratio: pushRatio,
      pass: pushRatio >= T.pushRatio,
    },
    manifest: {
      url_registry: regManifestUrl,
      url_embedded: embManifestUrl,
      digest: o.manifestDigest,
      registry: { req_per_sec: r.requestsPerSec, requests: r.requests, p50_ms: r.p50Ms, p90_ms: r.p90Ms, p99_ms: r.p99Ms, socket_errors: r.socketErrors, cpu_seconds: wrkUsage.registry!.cpu },
      embedded: { req_per_sec: e.requestsPerSec, requests: e.requests, p50_ms: e.p50Ms, p90_ms: e.p90Ms, p99_ms: e.p99Ms, socket_errors: e.socketErrors, cpu_seconds: eu.cpu, peak_rss_kb: eu.peakRssKb },
      ratio: manifestRatio,
      pass: manifestRatio >= T.manifestRatio,
    },
    blob: {
      digest: layer.digest,
      bytes: layer.size,
      runs: opt.runs,
      registry: { median_mb_per_sec: blobReg, runs_mb_per_sec: downloads.registry.map((x) => x.mbPerSec), runs_seconds: downloads.registry.map((x) => x.seconds) },
      embedded: { median_mb_per_sec: blobEmb, runs_mb_per_sec: downloads.embedded.map((x) => x.mbPerSec), runs_seconds: downloads.embedded.map((x) => x.seconds) },
      cpu_seconds: blobCpu,
      disk_read_bytes: blobDiskRead,
      sha256_verified: true,
      ratio: blobRatio,
      pass: blobRatio >= T.blobRatio,
    },
    rss: {
      processes: mem.members.map((m) => ({ name: m.name, pid: m.pid, peak_mb: kbToMb(peakOf(m)), vm_hwm_kb: m.hwmKb, sampled_peak_vm_rss_kb: m.peakRssKb, at_ready_kb: readyKb[m.name], pass: kbToMb(peakOf(m)) < T.rssMb })),
      sum_peak_mb: kbToMb(mem.peakSumKb),
      samples: sampler.samples,
      during_blob_kb: blobPeak,
      pass: mem.members.every((m) => kbToMb(peakOf(m)) < T.rssMb),
    },
    ...(profiles.length ? { cpu_profiles: profiles.map((p) => ({ name: p.name, pid: p.pid, ...p.summary })) } : {}),
    all_targets_met: allPass,
  };
  return { rows, allPass, lines, json };
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
