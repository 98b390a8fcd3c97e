// proxyctl status: is the daemon reachable, which version, and each plugin's
// state, listeners and failure message.
import type { DaemonTarget, PluginStatusHook } from '../plugins/cli.ts';

export interface PluginReport {
  name: string;
  state: string;
  version?: string;
  http: boolean;
  https: boolean;
  message?: string;
  /** Added by the plugin's cli `status` hook: lines shown under its row, data for --json. */
  lines?: string[];
  details?: Record<string, unknown>;
}

export interface StatusReport {
  url: string;
  status: 'healthy' | 'degraded' | 'unreachable';
  version?: string;
  /** false when /v2/features refused us: states then come from /readyz. */
  detailed: boolean;
  note?: string;
  plugins: PluginReport[];
}

export const EXIT = { healthy: 0, degraded: 1, unreachable: 2 } as const;

interface FeatureEntry {
  state: string;
  http_enabled: boolean;
  https_enabled: boolean;
  message?: string;
}

/** Let running plugins with a cli `status` hook add their lines (a failing hook adds nothing). */
async function addDetails(target: DaemonTarget, plugins: PluginReport[], hooks: ReadonlyMap<string, PluginStatusHook>): Promise<void> {
  await Promise.all(plugins.map(async (p) => {
    const hook = p.state === 'running' ? hooks.get(p.name) : undefined;
    const detail = hook && (await hook(target).catch(() => undefined));
    if (detail && detail.lines.length > 0) p.lines = detail.lines;
    if (detail?.data) p.details = detail.data;
  }));
}

/** `hooks`: the plugins' `status` exports, by plugin name (a plugin's own lines under its row). */
export async function collectStatus(target: DaemonTarget, hooks: ReadonlyMap<string, PluginStatusHook>): Promise<StatusReport> {
  let version: { version: string; modules: Record<string, string> };
  try {
    const res = await target.http.get('/version');
    if (res.status !== 200) return { url: target.url, status: 'unreachable', detailed: false, note: `GET /version answered ${res.status}`, plugins: [] };
    version = res.data;
  } catch (err) {
    return { url: target.url, status: 'unreachable', detailed: false, note: (err as Error).message, plugins: [] };
  }
  const features = await target.http.get('/v2/features');
  if (features.status === 200) {
    const plugins: PluginReport[] = Object.entries(features.data as Record<string, FeatureEntry>).map(([name, f]) => ({
      name,
      state: f.state,
      ...(version.modules[name] ? { version: version.modules[name] } : {}),
      http: f.http_enabled,
      https: f.https_enabled,
      ...(f.message ? { message: f.message } : {}),
    }));
    await addDetails(target, plugins, hooks);
    const degraded = plugins.some((p) => p.state !== 'running' && p.state !== 'disabled');
    return { url: target.url, status: degraded ? 'degraded' : 'healthy', version: version.version, detailed: true, plugins };
  }
  // Not a trusted client: /readyz still tells which enabled plugins are not running.
  const ready = await target.http.get('/readyz');
  const notRunning: string[] = ready.data?.not_running ?? [];
  const plugins: PluginReport[] = [
    ...Object.entries(version.modules).map(([name, v]) => ({ name, state: 'running', version: v, http: false, https: false })),
    ...notRunning.map((name) => ({ name, state: 'not running', http: false, https: false })),
  ].sort((a, b) => a.name.localeCompare(b.name));
  const why = typeof features.data?.error === 'string' ? features.data.error : `status ${features.status}`;
  return {
    url: target.url,
    status: ready.status === 200 ? 'healthy' : 'degraded',
    version: version.version,
    detailed: false,
    note: `plugin details need a trusted client certificate (GET /v2/features: ${why})`,
    plugins,
  };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

export function renderStatus(r: StatusReport): string {
  if (r.status === 'unreachable') return `proxyd at ${r.url}: unreachable (${r.note})`;
  const lines = [`proxyd ${r.version} at ${r.url}: ${r.status}`];
  if (r.note) lines.push(`note: ${r.note}`);
  lines.push('');
  const rows = [['PLUGIN', 'VERSION', 'STATE', 'LISTENERS']];
  for (const p of r.plugins) {
    const listeners = [p.http && 'http', p.https && 'https'].filter(Boolean).join(', ') || (r.detailed ? '-' : '?');
    rows.push([p.name, p.version ?? '-', p.state, listeners]);
  }
  // A plugin's own lines go right under its row.
  table(rows).split('\n').forEach((row, i) => {
    lines.push(row);
    for (const extra of (i > 0 ? r.plugins[i - 1]!.lines : undefined) ?? []) lines.push(`  ${extra}`);
  });
  const failed = r.plugins.filter((p) => p.message);
  if (failed.length > 0) {
    lines.push('', 'Failures:');
    for (const p of failed) lines.push(`  ${p.name}: ${p.message}`);
  }
  return lines.join('\n');
}
