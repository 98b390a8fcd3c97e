// A focused measurement of section 4's cold pull (on-demand.ts): only the
// cold `skopeo copy` through a fresh proxy with an empty store, repeated,
// with proxyd's CPU split by thread: 'main', and 'node' for the others
// (libuv's thread pool writing the file, V8's collector helpers: node 20
// names them alike), and its page faults. An A/B runs under the same load:
// - --trees A,B alternates the proxyd of other built checkouts;
// - --node-args 'F1|F2' alternates node flag sets (written out whole: they
//   replace bin/proxyd's #! flags), e.g. with --trace-gc the daemon's output
//   is left in $TMPDIR/proxyd-gc-<variant>-<run>.log;
// - --perf DIR records each pull with `perf record -g` (JIT frames named):
//   perf report -i DIR/<variant>-<run>.data --no-children --sort dso,sym.
// --direct also pulls straight from the registry first, for the ratio.
//
//   npm run build && tsx test/bench/on-demand-cpu.ts [--blob-mib N] [--runs N] [--direct] [--trees A,B] [--node-args F] [--perf DIR]
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildImage, layoutManifest, pushImage } from '../helpers/images.ts';
import { KatelloDouble } from '../helpers/katello-double.ts';
import { startRegistry } from '../helpers/registry.ts';
import { startGateway, type GatewayOptions, type RunningGateway } from './gateway.ts';
import { cpuDetailOf, median, request, ticksPerSecond } from './measure.ts';
import { skopeoPull, waitForStored } from './on-demand-tools.ts';

/** User and system CPU seconds of each thread of `pid`, summed by thread name (the main thread as 'main'). */
function threadCpu(pid: number, ticks: number): Map<string, { user: number; sys: number }> {
  const out = new Map<string, { user: number; sys: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // the thread ended meanwhile
    }
    const name = Number(tid) === pid ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/\d+$/, '');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const t = out.get(name) ?? { user: 0, sys: 0 };
    t.user += Number(f[11]) / ticks;
    t.sys += Number(f[12]) / ticks;
    out.set(name, t);
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'blob-mib': { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' }, direct: { type: 'boolean', default: false }, perf: { type: 'string' }, trees: { type: 'string' }, 'node-args': { type: 'string' } } });
  const checkouts: Array<{ name: string; start: (o: GatewayOptions) => Promise<RunningGateway> }> = values.trees
    ? await Promise.all(values.trees.split(',').map(async (t) => ({ name: t, start: ((await import(join(t, 'test/bench/gateway.ts'))) as { startGateway: typeof startGateway }).startGateway })))
    : [{ name: '.', start: startGateway }];
  const flagSets = values['node-args'] !== undefined ? values['node-args'].split('|').map((f) => f.trim().split(/\s+/).filter(Boolean)) : [undefined];
  const trees = checkouts.flatMap((c) => flagSets.map((flags) => ({ name: flags ? `${c.name} [${flags.join(' ')}]` : c.name, start: c.start, flags })));
  const runs = Number(values.runs);
  const work = mkdtempSync(join(tmpdir(), 'proxyd-bench-od-cpu-'));
  const log = (msg: string) => process.stderr.write(`${msg}\n`);
  const registry = await startRegistry();
  const katello = new KatelloDouble({ users: {}, publicRepositories: ['bench/app'] });
  await katello.start();
  try {
    const ticks = await ticksPerSecond();
    const img = await buildImage(work, { name: 'bench-app', tag: 'v1', files: { '/etc/bench.txt': 'proxyd benchmark\n' }, randomBytes: Number(values['blob-mib']) * 2 ** 20, cmd: ['/bin/true'], timeoutMs: 600_000 });
    await pushImage(img.ref, `${registry.host}/bench/app:v1`, { timeoutMs: 600_000 });
    const layer = [...layoutManifest(img.layout, 'v1').manifest.layers].sort((a, b) => b.size - a.size)[0]!;
    const gib = layer.size / 2 ** 30;
    const stats = new Map(trees.map((t) => [t.name, { perGiB: [] as number[], mainPerGiB: [] as number[], ratio: [] as number[] }]));
    for (let i = 1; i <= runs; i++) {
      for (const tree of i % 2 === 1 ? trees : [...trees].reverse()) {
        const st = stats.get(tree.name)!;
        const variant = `${trees.indexOf(tree) + 1}-${i}`;
        const dir = join(work, `run-${i}`);
        const gw = await tree.start({
          settings: { log_level: 'WARN', foreman_url: katello.url },
          plugins: {
            container_gateway: { enabled: true, content_backend: 'local', main_registry_url: `${registry.url}/v2/`, download_policy: 'on_demand', sqlite_db_path: join(dir, 'gw.db'), storage_path: join(dir, 'storage') },
          },
          ...(values.perf || tree.flags ? { nodeArgs: [...(values.perf ? ['--perf-basic-prof'] : []), ...(tree.flags ?? ['--max-semi-space-size=2', '--optimize-for-size'])] } : {}),
        });
        try {
          const list = await request('PUT', `${gw.httpUrl}/container_gateway/repository_list`, { 'Content-Type': 'application/json' }, JSON.stringify({ repositories: [{ repository: 'bench/app', auth_required: false }] }));
          if (list.status !== 200) throw new Error(`repository_list: ${list.status}`);
          const direct = values.direct ? await skopeoPull(`${registry.host}/bench/app:v1`, join(work, `direct-${i}`), layer) : undefined;
          const perf = values.perf ? spawn('perf', ['record', '-F', '499', '-g', '-p', String(gw.pid), '-o', join(values.perf, `${variant}.data`)], { stdio: 'ignore' }) : undefined;
          const before = threadCpu(gw.pid, ticks);
          const faults0 = cpuDetailOf(gw.pid, ticks)?.minflt ?? NaN;
          const p = await skopeoPull(`${gw.httpUrl.replace('http://', '')}/bench/app:v1`, join(work, `copy-${i}`), layer);
          if (!(await waitForStored(join(dir, 'storage'), layer))) throw new Error('the layer was not stored');
          const after = threadCpu(gw.pid, ticks);
          const faults = (cpuDetailOf(gw.pid, ticks)?.minflt ?? NaN) - faults0;
          if (tree.flags?.some((f) => f.startsWith('--trace-gc'))) writeFileSync(join(tmpdir(), `proxyd-gc-${variant}.log`), gw.output());
          if (perf) await new Promise((r) => perf.once('exit', r).kill('SIGINT'));
          const parts = [...after].map(([name, a]) => {
            const b = before.get(name) ?? { user: 0, sys: 0 };
            return { name, user: a.user - b.user, sys: a.sys - b.sys };
          }).filter((t) => t.user + t.sys > 0.005);
          const total = parts.reduce((n, t) => n + t.user + t.sys, 0);
          const mainT = parts.find((t) => t.name === 'main') ?? { user: 0, sys: 0 };
          st.perGiB.push(total / gib);
          st.mainPerGiB.push((mainT.user + mainT.sys) / gib);
          if (direct) st.ratio.push(direct.seconds / p.seconds);
          log(`${tree.name} run ${i} (${variant}): proxy ${p.seconds.toFixed(2)} s${direct ? ` (direct ${direct.seconds.toFixed(2)} s, ratio ${(direct.seconds / p.seconds).toFixed(2)})` : ''}, skopeo CPU ${p.cpuSeconds.toFixed(2)} s, proxyd page faults ${faults}; proxyd ${(total / gib).toFixed(2)} s/GiB: ${parts.map((t) => `${t.name} ${t.user.toFixed(2)}u+${t.sys.toFixed(2)}s`).join(', ')}`);
        } finally {
          await gw.stop();
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }
    for (const [name, st] of stats) {
      log(`${name}: median proxyd CPU ${median(st.perGiB).toFixed(2)} s/GiB, main thread ${median(st.mainPerGiB).toFixed(2)} s/GiB${st.ratio.length ? `, cold ratio ${median(st.ratio).toFixed(2)}` : ''}`);
    }
  } finally {
    await katello.stop();
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
