// `proxyctl db migrate`: moving a gateway from SQLite to PostgreSQL before
// db_connection_string is switched over. It runs on the proxy itself and
// reads the SQLite file and connects to PostgreSQL directly, not through the
// daemon (which may be stopped for the move). Exit codes: 0 copied, 1 refused
// (the target holds data, the SQLite file is missing or at another version),
// 2 PostgreSQL unreachable or the copy failed (nothing was written), 64 usage.
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { CliExit, type PluginCli } from '../../../lib/plugins/api.ts';
import { DbConnectionError, describeDbConnection, parseDbConnection } from '../db/connection.ts';
import { SETTINGS_SCHEMA } from '../settings.ts';

interface MigrateOptions {
  to: string;
  sqlite: string;
}

export const registerDb: PluginCli = (program, ctx) => {
  const db = program.command('db').description('the gateway database');
  db.command('migrate')
    .description('copy an SQLite gateway database into an empty PostgreSQL database, once, in one transaction (the schema is created first)')
    .requiredOption('--to <url>', 'the PostgreSQL database: postgresql://user@host:port/database or postgresql:///database (unix socket); give the password in PGPASSWORD or ~/.pgpass, not on the command line')
    .option('--sqlite <path>', 'the SQLite database (sqlite_db_path)', String(SETTINGS_SCHEMA.sqlite_db_path!.default))
    .option('--json', 'machine-readable output')
    .addHelpText('after', '\nExit codes: 0 copied, 1 refused (the target has data; the SQLite file is missing or at another schema version), 2 PostgreSQL unreachable or the copy failed (nothing written), 64 usage.')
    .action(async (opts: MigrateOptions, cmd: Command) => {
      let conn;
      try {
        conn = parseDbConnection(opts.to, opts.sqlite);
      } catch (err) {
        if (err instanceof DbConnectionError) throw new CliExit(64, `--to ${err.message}`);
        throw err;
      }
      if (conn.kind !== 'postgres') throw new CliExit(64, '--to must name a PostgreSQL database (postgresql:// or postgres://)');
      if (!existsSync(opts.sqlite)) throw new CliExit(1, `no SQLite database at ${opts.sqlite} (--sqlite)`);
      // Loaded here: the PostgreSQL client is not needed by any other command.
      const { openPostgres } = await import('../db/connection.ts');
      const { CopyRefused, copySqliteToPostgres } = await import('../db/copy-sqlite.ts');
      const target = describeDbConnection(conn);
      let pg;
      try {
        pg = await openPostgres(conn, { maxConnections: 2, poolTimeoutMs: 30_000 });
      } catch (err) {
        throw new CliExit(2, (err as Error).message);
      }
      try {
        const report = await copySqliteToPostgres(opts.sqlite, pg);
        const tables = Object.keys(report.tables).length;
        ctx.print(cmd, { copied: true, from: opts.sqlite, to: target, rows: report.rows, tables: report.tables }, `copied ${report.rows} rows of ${tables} tables from ${opts.sqlite} into ${target}`);
      } catch (err) {
        if (err instanceof CopyRefused) throw new CliExit(1, err.message);
        throw new CliExit(2, `the copy failed, nothing was written: ${(err as Error).message}`);
      } finally {
        await pg.close();
      }
    });
};
