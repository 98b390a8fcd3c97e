// `proxyctl logs [--follow]`: the daemon's recent log records, as GET /logs/
// serves them to Foreman (trusted clients only). --follow asks again every
// second for records since the last one seen, until interrupted; records
// sharing the last timestamp are not printed twice. Exit codes as for every
// proxyctl command: 1 refused, 2 daemon unreachable or failing.
import type { Command } from 'commander';
import { CliExit, type DaemonTarget, type PluginCli } from '../../lib/plugins/api.ts';

interface LogRecord {
  timestamp: number;
  level: string;
  message: string;
  request_id?: string;
  backtrace?: string[];
}

/** How often --follow asks. */
const FOLLOW_MS = 1000;
/** A daemon unreachable this many times in a row ends --follow (exit 2). */
const FOLLOW_FAILURES = 10;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function fetchLogs(target: DaemonTarget, from: number): Promise<LogRecord[]> {
  let res;
  try {
    res = await target.http.get('/logs/', { params: from > 0 ? { from_timestamp: from } : {} });
  } catch (err) {
    throw new CliExit(2, `${target.url} is unreachable: ${(err as Error).message}`);
  }
  const error = typeof res.data?.error === 'string' ? `: ${res.data.error}` : '';
  if (res.status >= 500) throw new CliExit(2, `GET /logs/ answered ${res.status}${error}`);
  if (res.status === 404 && (!error || error === ': Requested url was not found')) throw new CliExit(1, `${target.url} has no logs module (GET /logs/ answered 404): is it enabled there?`);
  if (res.status !== 200) throw new CliExit(1, error ? error.slice(2) : `GET /logs/ answered ${res.status}`);
  return (res.data as { logs?: LogRecord[] }).logs ?? [];
}

function line(r: LogRecord): string {
  const at = new Date(r.timestamp * 1000).toISOString();
  const rid = r.request_id ? ` [${r.request_id}]` : '';
  return [`${at} ${r.level.padEnd(5)}${rid} ${r.message}`, ...(r.backtrace ?? []).map((b) => `    ${b}`)].join('\n');
}

const register: PluginCli = (program, ctx) => {
  program
    .command('logs')
    .description("the daemon's recent log records (its in-memory buffer, as Foreman's Logs tab shows them)")
    .option('-f, --follow', 'keep printing new records as they come, until interrupted')
    .option('--json', 'one JSON record per line')
    .addHelpText('after', '\nExit codes: 0 printed (or --follow interrupted), 1 refused (an untrusted client) or no logs module, 2 daemon unreachable.')
    .action(async (opts: { follow?: boolean }, cmd: Command) => {
      const target = ctx.target(cmd);
      const json = ctx.json(cmd);
      const show = (r: LogRecord) => process.stdout.write(`${json ? JSON.stringify(r) : line(r)}\n`);
      let records = await fetchLogs(target, 0);
      records.forEach(show);
      if (!opts.follow) return;
      // Records at the last timestamp seen: the next answer (from_timestamp is inclusive) repeats them.
      let last = records.at(-1)?.timestamp ?? 0;
      let seen = new Set(records.filter((r) => r.timestamp === last).map((r) => JSON.stringify(r)));
      let misses = 0;
      for (;;) {
        await sleep(FOLLOW_MS);
        try {
          records = await fetchLogs(target, last);
          misses = 0;
        } catch (err) {
          if (!(err instanceof CliExit) || err.code !== 2 || ++misses >= FOLLOW_FAILURES) throw err;
          continue;
        }
        const fresh = records.filter((r) => r.timestamp > last || (r.timestamp === last && !seen.has(JSON.stringify(r))));
        fresh.forEach(show);
        if (fresh.length > 0) {
          const newest = fresh.at(-1)!.timestamp;
          if (newest > last) seen = new Set();
          last = newest;
          for (const r of fresh) if (r.timestamp === last) seen.add(JSON.stringify(r));
        }
      }
    });
};

export default register;
