// The gateway's one database, chosen once from settings when the plugin is
// set up: the `Sql` every part queries through. Migrations have run when it
// is returned, so nothing is served before the schema is current.
import type { Sql } from './sql.ts';
import { SqliteSql } from './sqlite-sql.ts';

export interface DatabaseSettings {
  readonly sqlite_db_path: string;
  /** Milliseconds a query waits for another process's write lock. */
  readonly sqlite_timeout: number;
}

export async function openDatabase(settings: DatabaseSettings): Promise<Sql> {
  return new SqliteSql(settings.sqlite_db_path, settings.sqlite_timeout);
}
