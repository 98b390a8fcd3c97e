// Summary of a V8 .cpuprofile (node --cpu-prof): self time per function and
// per area of code (node internals, dependencies, our lib/ and plugins/).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  where: string;
  ms: number;
  percent: number;
}

export interface WindowSummary {
  name: string;
  /** Sampled time inside the window (idle included). */
  totalMs: number;
  functions: SelfTime[];
  areas: SelfTime[];
}

export interface ProfileSummary {
  file: string;
  /** One summary per window, the whole profile first. */
  windows: WindowSummary[];
}

/**
 * A time window in microseconds of CLOCK_MONOTONIC: `process.hrtime.bigint() / 1000n`
 * in any process of the machine, the clock V8 stamps profile samples with.
 */
export interface Window {
  name: string;
  startUs: number;
  endUs: number;
}

function shortUrl(url: string, root: string): string {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(`${root}/`)) u = u.slice(root.length + 1);
  return u.replace(/^.*node_modules\//, 'node_modules/');
}

function areaOf(url: string, name: string, root: string): string {
  const u = shortUrl(url, root);
  if (!u) return name.startsWith('(') ? name : '(native / V8 builtins)';
  if (u.startsWith('node:')) return 'node: core';
  const dep = /^node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (dep) return `dependency ${dep[1]}`;
  if (u.startsWith('plugins/')) return u.split('/').slice(0, 3).join('/');
  if (u.startsWith('lib/')) return u.split('/').slice(0, 2).join('/');
  return u;
}

/**
 * Summarize the main thread's profile of process `pid` in `dir` (files are
 * `CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile`; thread 0 is the main
 * thread, others are workers such as the ESM loader-hooks thread of tsx), whole
 * and within each window.
 */
export function summarizeProfile(dir: string, root: string, pid: number, windows: Window[] = [], top = 20): ProfileSummary | undefined {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile') && f.includes(`.${pid}.0.`)).sort();
  const file = files.at(-1);
  if (!file) return undefined;
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const all: Window = { name: 'whole run', startUs: -Infinity, endUs: Infinity };
  return { file: join(dir, file), windows: [all, ...windows].map((w) => summarizeWindow(profile, byId, root, w, top)) };
}

function summarizeWindow(profile: CpuProfile, byId: Map<number, ProfileNode>, root: string, w: Window, top: number): WindowSummary {
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; attribute it to sample i's node.
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0;
    t += delta;
    if (t < w.startUs || t > w.endUs) continue;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
  }
  const fn = new Map<string, { name: string; where: string; us: number }>();
  const area = new Map<string, number>();
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    totalUs += us;
    const cf = n.callFrame;
    const name = cf.functionName || '(anonymous)';
    const where = cf.url ? `${shortUrl(cf.url, root)}:${cf.lineNumber + 1}` : '';
    const key = `${name}@${where}`;
    const e = fn.get(key) ?? { name, where, us: 0 };
    e.us += us;
    fn.set(key, e);
    const a = areaOf(cf.url, name, root);
    area.set(a, (area.get(a) ?? 0) + us);
  }
  const pct = (us: number) => (totalUs ? (100 * us) / totalUs : 0);
  const functions = [...fn.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((e) => ({ name: e.name, where: e.where, ms: e.us / 1000, percent: pct(e.us) }));
  const areas = [...area.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, us]) => ({ name, where: '', ms: us / 1000, percent: pct(us) }));
  return { name: w.name, totalMs: totalUs / 1000, functions, areas };
}

export function formatProfile(s: ProfileSummary): string {
  const lines = [`CPU profile of proxyd: ${s.file}`];
  for (const w of s.windows) {
    const busy = w.functions.filter((f) => f.name !== '(idle)');
    lines.push('', `== ${w.name}: ${(w.totalMs / 1000).toFixed(1)} s sampled ("(idle)" = waiting for I/O)`, 'top functions by self time:');
    for (const f of w.functions) lines.push(`  ${f.percent.toFixed(1).padStart(5)}%  ${f.ms.toFixed(0).padStart(7)} ms  ${f.name}  ${f.where}`);
    if (!busy.length) lines.push('  (no samples in this window)');
    lines.push('self time by area:');
    for (const a of w.areas.slice(0, 12)) lines.push(`  ${a.percent.toFixed(1).padStart(5)}%  ${a.ms.toFixed(0).padStart(7)} ms  ${a.name}`);
  }
  return lines.join('\n');
}
