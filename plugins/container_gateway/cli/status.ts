// `proxyctl status` under container_gateway's row: what cli/sync.ts reports
// (the last sync, on-demand counters), then the database line: its kind and
// place, whether it answers, and on PostgreSQL the pool and read cache of the
// worker asked.
import type { DaemonTarget, PluginStatusHook } from '../../../lib/plugins/api.ts';
import { status as syncStatus } from './sync.ts';

interface DatabaseView {
  kind: string;
  description: string;
  reachable: boolean;
  latency_ms?: number;
  error?: string;
  pool?: { in_use: number; open: number; waiting: number; max: number };
  read_cache?: { hits: number; misses: number; entries: number; bytes: number };
}

/** e.g. "database: postgresql gw@db.example.com:5432/gateway, reachable (3 ms), pool 2/10 in use, read cache 97% of 1234 reads". */
export function databaseLine(v: DatabaseView): string {
  const state = v.reachable ? `reachable (${v.latency_ms ?? 0} ms)` : `UNREACHABLE: ${v.error ?? 'no answer'}`;
  const pool = v.pool ? `, pool ${v.pool.in_use}/${v.pool.max} in use${v.pool.waiting > 0 ? `, ${v.pool.waiting} waiting` : ''}` : '';
  const c = v.read_cache;
  const reads = c ? c.hits + c.misses : 0;
  const cache = c ? `, read cache ${reads > 0 ? Math.round((100 * c.hits) / reads) : 0}% of ${reads} reads` : '';
  return `database: ${v.description}, ${state}${pool}${cache}`;
}

async function databaseStatus(target: DaemonTarget): Promise<{ line: string; view: DatabaseView } | undefined> {
  const res = await target.http.get('/container_gateway/admin/database');
  if (res.status !== 200) return undefined;
  const view = res.data as DatabaseView;
  return { line: databaseLine(view), view };
}

export const status: PluginStatusHook = async (target) => {
  const [others, database] = await Promise.all([syncStatus(target).catch(() => undefined), databaseStatus(target).catch(() => undefined)]);
  if (!database) return others;
  return { lines: [...(others?.lines ?? []), database.line], data: { ...others?.data, database: database.view } };
};
