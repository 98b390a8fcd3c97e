// Section 5 of `npm run bench`: the gateway's database, and several nodes.
//
// a. PostgreSQL vs SQLite: the same standalone gateway (embedded store,
//    `workers: W`, the same settings but the database) once on SQLite and once
//    on PostgreSQL (a private server on loopback started here, stopped after,
//    also on failure or Ctrl-C). A user made through the admin API pushes an
//    image (one layer of N MiB, 64 by default) to each with skopeo; then, in
//    one run, alternating: manifest GET req/s and p99 latency with wrk, every
//    request carrying the user's pull token (Bearer: token and access checked
//    each time), and blob GET MB/s with curl. Target: PostgreSQL >= 0.7x
//    SQLite in manifest GET req/s. The queries one manifest GET makes on
//    PostgreSQL are counted (pg_stat_statements).
// b. Two nodes vs one behind HAProxy: a second node on the same PostgreSQL
//    and storage_path, both behind HAProxy run from the shipped example
//    (extra/haproxy/proxyd.cfg, TCP passthrough, TLS to the nodes), manifest
//    GET req/s over HTTPS through HAProxy with both nodes in, and with the
//    second one drained (the same HAProxy), and straight to one node's HTTPS
//    listener (what HAProxy costs). Every process shares this machine's
//    cores, so two nodes cannot add CPU here: this shows that it works and
//    what it costs, not a scale-out.
//
// Runs inside `npm run bench` (after section 4), or alone:
//
//   npm run build && tsx test/bench/database.ts [--blob-mib N] [--runs N] [--duration S]
//                     [--connections C] [--threads T] [--workers W] [--json FILE] [--cpu-prof DIR]
//
// Progress goes to stderr; the tables, then one line of JSON, to stdout.
// --cpu-prof runs the SQLite gateway and the first PostgreSQL node under
// `node --cpu-prof` and prints, per worker, the top functions by self time
// during the manifest GET runs.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { RunningHaproxy } from '../helpers/haproxy.ts';
import { request as httpsRequest } from '../helpers/http.ts';
import { buildImage, layoutManifest, pushImage } from '../helpers/images.ts';
import { makePki } from '../helpers/pki.ts';
import { PROXYD, ROOT } from '../helpers/proxyd.ts';
import { check, cpuOf, cpuSince, pidsOf, postgresPids, sessionsByServer, startNode, tableOf, type Keeper, type Node } from './database-nodes.ts';
import { curlDownload, fetchHashed, median, request, runWrk, ticksPerSecond, type Row, type WrkResult } from './measure.ts';
import { machineCpu } from './on-demand-tools.ts';
import { formatProfile, summarizeProfile, type Window } from './profile.ts';
import { readStatements, resetStatements, startBenchPostgres, type StatementCounts } from './postgres-server.ts';

export { tableOf, type Keeper } from './database-nodes.ts';

export const DATABASE_TARGETS = { postgresVsSqlite: 0.7 };
const REPO = 'bench/db';
const TAG = 'v1';
const USER = 'bench';
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json';

export interface DatabaseInput {
  workers: number;
  wrk: { threads: number; connections: number; seconds: number };
  runs: number;
  blobBytes: number;
  /** For the image, the databases and the stores (removed by the caller). */
  dataDir: string;
  keep: Keeper;
  progress(msg: string): void;
  /** When set, the SQLite gateway and node A run under `node --cpu-prof` writing here; their workers' profiles of the manifest runs are summarized. */
  cpuProfileDir?: string;
}

export interface DatabaseOutcome {
  rows: Row[];
  clusterRows: Row[];
  notes: string[];
  allPass: boolean;
  json: Record<string, unknown>;
}

/** Now, in microseconds of CLOCK_MONOTONIC (the clock of V8's profile samples). */
const monoUs = () => Number(process.hrtime.bigint() / 1000n);

interface Measured {
  wrk: WrkResult;
  /** CPU seconds during the run, by part (gateway processes, PostgreSQL, the machine's busy cores). */
  cpu: Record<string, number>;
}

export async function databaseSection(o: DatabaseInput): Promise<DatabaseOutcome> {
  const ticks = await ticksPerSecond();
  const load0 = loadavg();
  const mib = (o.blobBytes / 2 ** 20).toFixed(0);
  o.progress(`section 5: building an image with one ${mib} MiB layer...`);
  const img = await buildImage(join(o.dataDir, 'image'), { name: 'bench-db', tag: TAG, files: { '/etc/bench.txt': 'proxyd database benchmark\n' }, randomBytes: o.blobBytes, cmd: ['/bin/true'], timeoutMs: 300_000 });
  const local = layoutManifest(img.layout, TAG);
  const layer = [...local.manifest.layers].sort((a, b) => b.size - a.size)[0]!;

  const postgres = await startBenchPostgres();
  o.keep.atExit('PostgreSQL server', () => postgres.stop());
  const pgUrl = await postgres.createDatabase('container_gateway');
  o.progress(`${postgres.version} on 127.0.0.1:${postgres.port} (data ${postgres.dataDir})`);
  const pki = makePki();
  o.keep.atExit('test PKI', () => rmSync(pki.dir, { recursive: true, force: true }));
  const pgPids = () => postgresPids(postgres.dataDir);

  const common = { workers: o.workers, pki, keep: o.keep, progress: o.progress };
  const profiled = o.cpuProfileDir ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', o.cpuProfileDir] } : {};
  const sqlite = await startNode({ ...common, ...profiled, name: 'sqlite', storage: join(o.dataDir, 'sqlite-storage'), database: { sqlite_db_path: join(o.dataDir, 'sqlite.db') }, createSchema: true });
  // sqlite_db_path names a file that does not exist: nothing is copied into PostgreSQL.
  const pgDb = { db_connection_string: pgUrl, sqlite_db_path: join(o.dataDir, 'none.db') };
  const shared = join(o.dataDir, 'shared-storage');
  const nodeA = await startNode({ ...common, ...profiled, name: 'A', storage: shared, database: pgDb, createSchema: true });

  // A user on each database, the image pushed by it, its pull token.
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  const basic = `Basic ${Buffer.from(`${USER}:${password}`).toString('base64')}`;
  const tokens: Record<string, string> = {};
  for (const [kind, node] of [['sqlite', sqlite], ['postgres', nodeA]] as const) {
    const base = node.gw.httpUrl;
    const added = await request('POST', `${base}/container_gateway/admin/users`, { 'Content-Type': 'application/json' }, JSON.stringify({ name: USER, password }));
    check(added.status === 201, `${kind}: POST /container_gateway/admin/users answered ${added.status}: ${added.text}`);
    await pushImage(img.ref, `${new URL(base).host}/${REPO}:${TAG}`, { creds: `${USER}:${password}`, timeoutMs: 300_000 });
    const login = await request('GET', `${base}/v2/token?account=${USER}&scope=${encodeURIComponent(`repository:${REPO}:pull`)}`, { Authorization: basic });
    check(login.status === 200, `${kind}: pull login answered ${login.status}: ${login.text}`);
    const token = (JSON.parse(login.text) as { token?: string }).token;
    check(typeof token === 'string' && token.length > 20, `${kind}: the pull login gave no token: ${login.text}`);
    tokens[kind] = token;
    const url = `${base}/v2/${REPO}/manifests/${TAG}`;
    const anonymous = await fetchHashed(url, { Accept: ACCEPT });
    const bad = await fetchHashed(url, { Accept: ACCEPT, Authorization: 'Bearer not-a-token' });
    const good = await fetchHashed(url, { Accept: ACCEPT, Authorization: `Bearer ${token}` });
    check(anonymous.status === 401 || anonymous.status === 404, `${kind}: an anonymous manifest GET answered ${anonymous.status}: the repository is not private`);
    check(bad.status === 401, `${kind}: a manifest GET with an unknown token answered ${bad.status}, not 401`);
    check(good.status === 200 && good.digest === local.digest, `${kind}: the manifest GET with the pull token answered ${good.status}, ${good.digest} (pushed ${local.digest})`);
    const blob = await fetchHashed(`${base}/v2/${REPO}/blobs/${layer.digest}`, { Authorization: `Bearer ${token}` });
    check(blob.status === 200 && blob.digest === layer.digest, `${kind}: blob GET answered ${blob.status}, ${blob.bytes} bytes, ${blob.digest}`);
    o.progress(`${kind}: ${USER} pushed ${REPO}:${TAG} with skopeo; private (anonymous ${anonymous.status}, unknown token ${bad.status}); manifest and ${mib} MiB blob verified with the pull token`);
  }

  /** wrk on one URL, with the CPU seconds of the gateway processes and PostgreSQL meanwhile. */
  const measure = async (url: string, token: string, gateways: Node[], wrk = o.wrk): Promise<Measured> => {
    const gwPids = gateways.flatMap(pidsOf);
    const g0 = cpuOf(gwPids, ticks);
    const p0 = cpuOf(pgPids(), ticks);
    const m0 = machineCpu(ticks);
    const r = await runWrk(url, { Accept: ACCEPT, Authorization: `Bearer ${token}` }, wrk);
    const m1 = machineCpu(ticks);
    check(r.requests > 0 && r.non2xx === 0, `wrk ${url}: ${r.non2xx} of ${r.requests} answers were not 2xx:\n${r.raw}`);
    const cpu = { gateway: cpuSince(g0, gwPids, ticks), postgres: cpuSince(p0, pgPids(), ticks), machine_busy_cores: ((m1.busy - m0.busy) / (m1.total - m0.total)) * cpus().length };
    return { wrk: r, cpu };
  };
  const say = (what: string, m: Measured) => o.progress(`  ${what}: ${m.wrk.requestsPerSec.toFixed(0)} req/s, p50 ${m.wrk.p50Ms.toFixed(2)} ms, p99 ${m.wrk.p99Ms.toFixed(2)} ms; CPU s: gateway ${m.cpu.gateway!.toFixed(1)}, postgres ${m.cpu.postgres!.toFixed(1)}; machine busy ${m.cpu.machine_busy_cores!.toFixed(2)} of ${cpus().length} cores`);

  // a. SQLite vs PostgreSQL, alternating which goes first.
  const manifestUrl = (n: Node, base = n.gw.httpUrl) => `${base}/v2/${REPO}/manifests/${TAG}`;
  const sides = { sqlite: { node: sqlite, token: tokens.sqlite! }, postgres: { node: nodeA, token: tokens.postgres! } };
  const warm = { ...o.wrk, seconds: 2 };
  for (const [kind, s] of Object.entries(sides)) await measure(manifestUrl(s.node), s.token, [s.node], warm).catch((err: Error) => { throw new Error(`warm-up ${kind}: ${err.message}`); });
  const manifest: Record<'sqlite' | 'postgres', Measured[]> = { sqlite: [], postgres: [] };
  const windows: Record<'sqlite' | 'postgres', Window[]> = { sqlite: [], postgres: [] };
  let statements: StatementCounts | undefined;
  let queriesPerRequest = NaN;
  for (let i = 1; i <= o.runs; i++) {
    for (const kind of (i % 2 ? ['sqlite', 'postgres'] : ['postgres', 'sqlite']) as Array<'sqlite' | 'postgres'>) {
      const s = sides[kind];
      if (kind === 'postgres') await resetStatements(pgUrl);
      o.progress(`run ${i} ${kind}: wrk -t${o.wrk.threads} -c${o.wrk.connections} -d${o.wrk.seconds}s ${manifestUrl(s.node)}`);
      const startUs = monoUs();
      const m = await measure(manifestUrl(s.node), s.token, [s.node]);
      windows[kind].push({ name: `manifest GET ${kind} run ${i}`, startUs, endUs: monoUs() });
      if (kind === 'postgres') {
        statements = await readStatements(pgUrl);
        queriesPerRequest = statements.calls / m.wrk.requests;
        o.progress(`  PostgreSQL statements during the run: ${statements.calls} for ${m.wrk.requests} requests (${queriesPerRequest.toFixed(3)} per manifest GET)${statements.top.slice(0, 3).map((x) => `; ${x.calls}x ${x.meanMs.toFixed(3)} ms ${x.query}`).join('')}`);
      }
      manifest[kind].push(m);
      say(kind, m);
    }
  }
  const blobs: Record<'sqlite' | 'postgres', number[]> = { sqlite: [], postgres: [] };
  for (let i = 1; i <= o.runs; i++) {
    for (const kind of (i % 2 ? ['sqlite', 'postgres'] : ['postgres', 'sqlite']) as Array<'sqlite' | 'postgres'>) {
      const s = sides[kind];
      const d = await curlDownload(`${s.node.gw.httpUrl}/v2/${REPO}/blobs/${layer.digest}`, { Authorization: `Bearer ${s.token}` }, 120_000);
      check(d.status === 200 && d.bytes === layer.size, `${kind} blob GET (run ${i}): ${d.status}, ${d.bytes} bytes`);
      blobs[kind].push(d.mbPerSec);
      o.progress(`  blob run ${i} ${kind}: ${d.mbPerSec.toFixed(0)} MB/s`);
    }
  }
  const sqliteStop = await sqlite.gw.stop();
  if (sqliteStop !== 0) o.progress(`proxyd sqlite exited with code ${sqliteStop}`);
  const profiles: string[] = [];
  const profile = (kind: 'sqlite' | 'postgres', n: Node) => {
    for (const pid of n.workers) {
      const summary = summarizeProfile(o.cpuProfileDir!, ROOT, pid, windows[kind], 15);
      if (summary) profiles.push(`[${kind} worker ${pid}] ${formatProfile(summary)}`);
    }
  };
  if (o.cpuProfileDir) profile('sqlite', sqlite);

  // b. A second node on the same PostgreSQL and storage, both behind HAProxy.
  const nodeB = await startNode({ ...common, name: 'B', storage: shared, database: pgDb, createSchema: false });
  const haproxy = await RunningHaproxy.start({ ca: pki.ca, nodes: [nodeA, nodeB].map((n) => ({ name: n.name, address: n.httpsAddress })) });
  o.keep.adopt('HAProxy', haproxy.proc, () => haproxy.stop());
  const front = `https://${haproxy.address}`;
  o.progress(`HAProxy (pid ${haproxy.proc.pid}) on ${haproxy.address} from the shipped example, servers A ${nodeA.httpsAddress}, B ${nodeB.httpsAddress}: both UP`);
  const token = tokens.postgres!;
  for (let i = 0; i < 4; i++) {
    const r = await httpsRequest(manifestUrl(nodeA, front), { headers: { Accept: ACCEPT, Authorization: `Bearer ${token}` }, ca: pki.ca });
    const digest = `sha256:${createHash('sha256').update(r.body).digest('hex')}`;
    check(r.status === 200 && digest === local.digest, `manifest GET through HAProxy (connection ${i + 1}): ${r.status}, ${digest}`);
  }
  const setB = async (state: 'drain' | 'ready') => {
    await haproxy.command(`set server ${haproxy.backend}/B state ${state}`);
    await haproxy.waitFor({ B: state === 'drain' ? 'DRAIN' : 'UP' }, 20_000);
  };
  type Way = 'direct' | 'one' | 'two';
  const ways: Record<Way, { url: string; nodes: Node[]; what: string }> = {
    direct: { url: manifestUrl(nodeA, nodeA.httpsUrl), nodes: [nodeA], what: 'node A over HTTPS, no HAProxy' },
    one: { url: manifestUrl(nodeA, front), nodes: [nodeA, nodeB], what: 'HAProxy, B drained (one node)' },
    two: { url: manifestUrl(nodeA, front), nodes: [nodeA, nodeB], what: 'HAProxy, A and B' },
  };
  const cluster: Record<Way, Array<Measured & { sessions: Record<string, number> }>> = { direct: [], one: [], two: [] };
  const orders: Way[][] = [['two', 'one', 'direct'], ['one', 'direct', 'two'], ['direct', 'two', 'one']];
  for (let i = 0; i <= o.runs; i++) {
    for (const way of i === 0 ? (['direct', 'one', 'two'] as Way[]) : orders[(i - 1) % 3]!) {
      const w = ways[way];
      await setB(way === 'two' ? 'ready' : 'drain');
      if (i > 0) o.progress(`run ${i} ${w.what}: wrk -t${o.wrk.threads} -c${o.wrk.connections} -d${o.wrk.seconds}s ${w.url}`);
      const s0 = await sessionsByServer(haproxy);
      const m = await measure(w.url, token, w.nodes, i === 0 ? warm : o.wrk);
      const s1 = await sessionsByServer(haproxy);
      const sessions = Object.fromEntries(Object.keys(s1).map((k) => [k, s1[k]! - (s0[k] ?? 0)]));
      if (way === 'one') check(sessions.B === 0 && sessions.A! > 0, `with B drained HAProxy sent sessions ${JSON.stringify(sessions)}`);
      if (way === 'two') check(sessions.A! > 0 && sessions.B! > 0, `with both nodes in HAProxy sent sessions ${JSON.stringify(sessions)}: not to both`);
      if (i === 0) continue;
      cluster[way].push({ ...m, sessions });
      say(`${w.what}${way === 'direct' ? '' : `, sessions ${Object.entries(sessions).map(([k, v]) => `${k} ${v}`).join(' ')}`}`, m);
    }
  }
  await setB('ready');
  await haproxy.stop();
  for (const n of [nodeA, nodeB]) {
    const code = await n.gw.stop();
    if (code !== 0) o.progress(`proxyd ${n.name} exited with code ${code}`);
  }
  if (o.cpuProfileDir) profile('postgres', nodeA);
  postgres.stop();
  rmSync(pki.dir, { recursive: true, force: true });
  const load1 = loadavg();

  // Results: medians of the runs.
  const med = (ms: Measured[], f: (m: Measured) => number) => median(ms.map(f));
  const rps = (ms: Measured[]) => med(ms, (m) => m.wrk.requestsPerSec);
  const p99 = (ms: Measured[]) => med(ms, (m) => m.wrk.p99Ms);
  const ratio = rps(manifest.postgres) / rps(manifest.sqlite);
  // Within each run the two sides ran back to back: the ratio of each pair, for the spread.
  const pairRatios = manifest.postgres.map((m, i) => m.wrk.requestsPerSec / manifest.sqlite[i]!.wrk.requestsPerSec);
  const pass = ratio >= DATABASE_TARGETS.postgresVsSqlite;
  const blobSqlite = median(blobs.sqlite);
  const blobPg = median(blobs.postgres);
  const rows: Row[] = [
    { metric: 'manifest GET, Bearer checked', unit: 'req/s', direct: rps(manifest.sqlite), gateway: rps(manifest.postgres), ratio, target: `>= ${DATABASE_TARGETS.postgresVsSqlite.toFixed(2)}x`, pass },
    { metric: 'manifest GET latency p99', unit: 'ms', direct: p99(manifest.sqlite), gateway: p99(manifest.postgres), ratio: p99(manifest.postgres) / p99(manifest.sqlite) },
    { metric: `blob GET ${mib} MiB, median of ${o.runs}`, unit: 'MB/s', direct: blobSqlite, gateway: blobPg, ratio: blobPg / blobSqlite },
  ];
  const two = rps(cluster.two);
  const one = rps(cluster.one);
  const direct = rps(cluster.direct);
  const clusterRows: Row[] = [
    { metric: 'manifest GET through HAProxy, Bearer checked', unit: 'req/s', direct: one, gateway: two, ratio: two / one },
    { metric: 'manifest GET latency p99', unit: 'ms', direct: p99(cluster.one), gateway: p99(cluster.two), ratio: p99(cluster.two) / p99(cluster.one) },
    { metric: 'node A over HTTPS, no HAProxy vs 1 node behind it', unit: 'req/s', direct, gateway: one, ratio: one / direct },
  ];
  const cpuText = (ms: Measured[]) => `gateway ${med(ms, (m) => m.cpu.gateway!).toFixed(1)}, postgres ${med(ms, (m) => m.cpu.postgres!).toFixed(1)}, machine busy ${med(ms, (m) => m.cpu.machine_busy_cores!).toFixed(2)} cores`;
  const notes = [
    `PostgreSQL / SQLite, manifest GET req/s: ${ratio.toFixed(2)}x (medians of ${o.runs}; pairs run back to back: ${pairRatios.map((r) => `${r.toFixed(2)}x`).join(', ')}), target >= ${DATABASE_TARGETS.postgresVsSqlite}x: ${pass ? 'met' : 'NOT met'}`,
    `PostgreSQL statements per manifest GET (pg_stat_statements, last run): ${queriesPerRequest.toFixed(3)}${statements?.top.length ? ` (${statements.top.slice(0, 3).map((x) => `${x.calls}x ${x.query}`).join('; ')})` : ''}`,
    `CPU s per ${o.wrk.seconds} s wrk run (median): SQLite ${cpuText(manifest.sqlite)}; PostgreSQL ${cpuText(manifest.postgres)}`,
    `two nodes / one node behind HAProxy: ${(two / one).toFixed(2)}x; one node behind HAProxy / straight to it: ${(one / direct).toFixed(2)}x. All of it (wrk, HAProxy, ${o.workers} workers per node, PostgreSQL) shares ${cpus().length} cores: a second node adds processes, not CPU, so it cannot be faster here; what this shows is that it works (every request 200, sessions spread over both) and what it costs.`,
    `CPU s per run (median): one node ${cpuText(cluster.one)}; two nodes ${cpuText(cluster.two)}; sessions of the two-node runs: ${cluster.two.map((m) => Object.entries(m.sessions).map(([k, v]) => `${k} ${v}`).join(' ')).join(', ')}`,
    ...profiles,
    `machine: ${cpus().length} CPUs, load average ${load0[0]!.toFixed(2)} at the start of the section, ${load1[0]!.toFixed(2)} at its end; ${postgres.version}`,
  ];
  const wrkJson = (ms: Measured[]) => ({ req_per_sec: rps(ms), p99_ms: p99(ms), runs: ms.map((m) => ({ req_per_sec: m.wrk.requestsPerSec, requests: m.wrk.requests, p50_ms: m.wrk.p50Ms, p99_ms: m.wrk.p99Ms, cpu_seconds: m.cpu })) });
  const json = {
    workers: o.workers,
    postgres: postgres.version,
    target: { postgres_vs_sqlite_min: DATABASE_TARGETS.postgresVsSqlite },
    manifest: { sqlite: wrkJson(manifest.sqlite), postgres: wrkJson(manifest.postgres), ratio, pair_ratios: pairRatios, pass, postgres_statements_per_request: queriesPerRequest, postgres_statements: statements?.top },
    blob: { bytes: layer.size, runs: o.runs, sqlite_mb_per_sec: blobs.sqlite, postgres_mb_per_sec: blobs.postgres, ratio: blobPg / blobSqlite },
    haproxy: { one_node: wrkJson(cluster.one), two_nodes: wrkJson(cluster.two), direct_https: wrkJson(cluster.direct), two_vs_one: two / one, one_vs_direct: one / direct, sessions_two_nodes: cluster.two.map((m) => m.sessions) },
    load_average: { start: load0, end: load1 },
    all_targets_met: pass,
  };
  return { rows, clusterRows, notes, allPass: pass, json };
}

/** The section's output, as `npm run bench` prints it. */
export function databaseLines(r: DatabaseOutcome, o: { workers: number; wrk: { threads: number; connections: number; seconds: number } }): string[] {
  return [
    `== 5. the database: PostgreSQL vs SQLite, and two nodes vs one behind HAProxy (standalone, embedded store, workers: ${o.workers}; wrk -t${o.wrk.threads} -c${o.wrk.connections} -d${o.wrk.seconds}s, Bearer pull token on every request)`,
    '',
    tableOf(r.rows, ['SQLite', 'PostgreSQL']),
    '',
    tableOf(r.clusterRows, ['1 node', '2 nodes']),
    '',
    ...r.notes,
    `targets: ${r.allPass ? 'all met' : 'NOT all met'}`,
  ];
}

// ---------------------------------------------------------------------------
// Alone: `tsx test/bench/database.ts`
// ---------------------------------------------------------------------------

async function alone(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      options: {
        'blob-mib': { type: 'string', default: '64' },
        runs: { type: 'string', default: '3' },
        duration: { type: 'string', default: '10' },
        connections: { type: 'string', default: '32' },
        threads: { type: 'string', default: '2' },
        workers: { type: 'string', default: '2' },
        json: { type: 'string' },
        'cpu-prof': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message} (see --help)\n`);
    process.exit(64);
  }
  if (args.help) {
    const lines = readFileSync(new URL(import.meta.url), 'utf8').split('\n');
    process.stdout.write(`${lines.slice(0, lines.findIndex((l) => !l.startsWith('//'))).map((l) => l.slice(3)).join('\n')}\n`);
    return;
  }
  const int = (name: string, v: string | undefined) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) {
      process.stderr.write(`bench: --${name} must be a positive integer, got ${JSON.stringify(v)}\n`);
      process.exit(64);
    }
    return n;
  };
  const started = Date.now();
  const progress = (msg: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
  const dataDir = mkdtempSync(join(tmpdir(), 'proxyd-bench-db-'));
  // What must not outlive us, even on Ctrl-C: undone last-in first-out.
  const undo: Array<{ what: string; fn: () => unknown }> = [];
  const procs = new Set<{ kill(s: NodeJS.Signals): unknown; exitCode: number | null; signalCode: NodeJS.Signals | null }>();
  const workerPids = new Set<number>();
  const hard = () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    for (const pid of workerPids) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(PROXYD)) process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    for (const u of undo.filter((x) => x.what.startsWith('sync:')).reverse()) u.fn();
    rmSync(dataDir, { recursive: true, force: true });
  };
  process.once('exit', hard);
  const cleanup = async () => {
    for (const u of undo.reverse()) await Promise.resolve(u.fn()).catch((err: Error) => progress(`cleanup of ${u.what}: ${err.message}`));
    undo.length = 0;
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { progress(`${sig}: stopping everything`); void cleanup().finally(() => process.exit(130)); });
  const keep: Keeper = {
    adopt: (what, proc, stop) => { procs.add(proc); undo.push({ what, fn: stop }); },
    workers: (pids) => pids.forEach((p) => workerPids.add(p)),
    atExit: (what, fn) => undo.push({ what: `sync:${what}`, fn }),
  };
  const wrk = { threads: int('threads', args.threads), connections: int('connections', args.connections), seconds: int('duration', args.duration) };
  const workers = int('workers', args.workers);
  try {
    const cpuProfileDir = args['cpu-prof'] ? resolve(args['cpu-prof']) : undefined;
    if (cpuProfileDir) mkdirSync(cpuProfileDir, { recursive: true });
    const r = await databaseSection({ workers, wrk, runs: int('runs', args.runs), blobBytes: int('blob-mib', args['blob-mib']) * 2 ** 20, dataDir, keep, progress, ...(cpuProfileDir ? { cpuProfileDir } : {}) });
    process.stdout.write(`\n${databaseLines(r, { workers, wrk }).join('\n')}\n${JSON.stringify(r.json)}\n`);
    if (args.json) {
      mkdirSync(join(resolve(args.json), '..'), { recursive: true });
      writeFileSync(resolve(args.json), `${JSON.stringify(r.json, null, 2)}\n`);
    }
  } finally {
    await cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  alone().catch((err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
