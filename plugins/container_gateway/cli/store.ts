// `proxyctl gc` and `proxyctl verify`: maintenance of the embedded store.
import type { Command } from 'commander';
import { CliExit, type PluginCli, type PluginCliContext } from '../../../lib/plugins/api.ts';
import { ADMIN, call } from './common.ts';

/** GET .../verify streams one JSON line per blob, then {checked, bad}. */
async function verifyStore(ctx: PluginCliContext, cmd: Command, json: boolean): Promise<{ checked: number; bad: number }> {
  const target = ctx.target(cmd);
  let res;
  try {
    res = await target.http.request({ method: 'GET', url: `${ADMIN}/verify`, responseType: 'stream', timeout: 0 });
  } catch (err) {
    throw new CliExit(2, `${target.url} is unreachable: ${(err as Error).message}`);
  }
  if (res.status !== 200) {
    res.data.resume();
    throw new CliExit(res.status >= 500 ? 2 : 1, `GET ${ADMIN}/verify answered ${res.status}: is container_gateway running with content_backend: local?`);
  }
  const tty = !json && process.stderr.isTTY;
  let checked = 0;
  let bytes = 0;
  let summary: { checked: number; bad: number } | undefined;
  let rest = '';
  for await (const chunk of res.data as AsyncIterable<Buffer>) {
    rest += chunk.toString('utf8');
    const lines = rest.split('\n');
    rest = lines.pop()!;
    for (const line of lines.filter(Boolean)) {
      const record = JSON.parse(line) as { digest?: string; ok?: boolean; size?: number; checked?: number; bad?: number };
      if (json) process.stdout.write(`${line}\n`);
      if (record.digest === undefined) {
        summary = { checked: record.checked ?? 0, bad: record.bad ?? 0 };
        continue;
      }
      checked++;
      bytes += record.size ?? 0;
      if (!record.ok && !json) process.stdout.write(`BAD ${record.digest}\n`);
      // A progress line on a terminal; scripts get the plain lines.
      if (tty) process.stderr.write(`\rverifying: ${checked} blobs, ${(bytes / 1e9).toFixed(2)} GB`);
    }
  }
  if (tty) process.stderr.write('\n');
  if (!summary) throw new CliExit(2, 'the verification ended before its summary: the daemon may have stopped');
  return summary;
}

export const registerStore: PluginCli = (program, ctx) => {
  program
    .command('gc')
    .description('delete the content of repositories Katello unlisted, stored blobs no repository references, and abandoned uploads (safe while uploads run)')
    .option('--json', 'machine-readable output')
    .action(async (_opts: unknown, cmd: Command) => {
      const data = (await call(ctx, cmd, 'POST', `${ADMIN}/gc`, undefined, 0)) as { removed: number; bytes: number; repositories?: string[]; purged?: { uploads: number; bytes: number } };
      const purged = data.purged ?? { uploads: 0, bytes: 0 };
      const reclaimed = data.repositories?.length ? `\ncontent of unlisted repositories reclaimed: ${data.repositories.join(', ')}` : '';
      ctx.print(cmd, data, `${data.removed} blobs removed, ${(data.bytes / 1e6).toFixed(1)} MB freed\n${purged.uploads} abandoned uploads purged, ${(purged.bytes / 1e6).toFixed(1)} MB freed${reclaimed}`);
    });

  program
    .command('verify')
    .description('re-hash every stored blob against its digest; exit 1 if any is bad')
    .option('--json', 'JSON lines: one per blob, then the summary')
    .action(async (_opts: unknown, cmd: Command) => {
      // --json may come before or after the command name (`proxyctl --json verify`).
      const json = ctx.json(cmd);
      const summary = await verifyStore(ctx, cmd, json);
      if (!json) process.stdout.write(`${summary.checked} blobs checked, ${summary.bad} bad\n`);
      if (summary.bad > 0) process.exitCode = 1;
    });
};
