// What every container gateway command shares: the admin API call and what
// its answer means as an exit code (1 refused or not found, the daemon's
// message on stderr; 2 daemon unreachable or failing with 5xx), name checks
// (64 usage), and the table layout of listings.
import type { Command } from 'commander';
import { CliExit, type PluginCliContext } from '../../../lib/plugins/api.ts';
import { USER_NAME, validRepositoryName } from '../auth/standalone.ts';

export const ADMIN = '/container_gateway/admin';

export function errorOf(data: unknown): string | undefined {
  const error = (data as { error?: unknown } | null | undefined)?.error;
  return typeof error === 'string' ? error : undefined;
}

export const STANDALONE_HINT = 'is container_gateway running there, in standalone mode (no foreman_url)?';

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export async function call(ctx: PluginCliContext, cmd: Command, method: Method, path: string, data?: unknown, timeout?: number, hint = STANDALONE_HINT): Promise<unknown> {
  const target = ctx.target(cmd);
  let res;
  try {
    res = await target.http.request({ method, url: path, ...(data === undefined ? {} : { data }), ...(timeout === undefined ? {} : { timeout }) });
  } catch (err) {
    throw new CliExit(2, `${target.url} is unreachable: ${(err as Error).message}`);
  }
  if (res.status >= 200 && res.status < 300) return res.data;
  const error = errorOf(res.data);
  if (res.status >= 500) throw new CliExit(2, `${method} ${path} answered ${res.status}${error ? `: ${error}` : ''}`);
  if (res.status === 404 && (error === undefined || error === 'Requested url was not found')) {
    throw new CliExit(1, `${target.url} has no container gateway admin API (${method} ${path} answered 404): ${hint}`);
  }
  throw new CliExit(1, error ?? `${method} ${path} answered ${res.status}`);
}

export function checkUser(name: string): string {
  if (!USER_NAME.test(name)) throw new CliExit(64, `invalid user name '${name}': 1 to 64 of letters, digits, '.', '_', '@' and '-'`);
  return name;
}

export function checkRepository(name: string): string {
  if (!validRepositoryName(name)) throw new CliExit(64, `invalid repository name '${name}'`);
  return name;
}

/** A repository name in an admin path: its '/' kept, each part encoded. */
export const repoPath = (name: string) => name.split('/').map(encodeURIComponent).join('/');

export const userPath = (name: string) => `${ADMIN}/users/${encodeURIComponent(name)}`;

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}
