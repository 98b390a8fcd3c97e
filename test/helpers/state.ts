// What a gateway holds, for "nothing changed" assertions: every row of its
// database (SQLite, or its PostgreSQL one: test-database.ts) and every file of
// its store, read from outside the daemon.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { gatewayRows, testPostgres } from './test-database.ts';

/** Every table's rows (as sorted JSON lines), by table name; `file` is the gateway's sqlite_db_path. */
export async function databaseRows(file: string, tables?: string[]): Promise<Record<string, string[]>> {
  const db = await gatewayRows(file);
  try {
    const listed = testPostgres() === undefined
      ? "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
      : 'SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name';
    const names = tables ?? (await db.all<{ name: string }>(listed)).map((r) => r.name);
    const out: Record<string, string[]> = {};
    for (const name of names) {
      const rows = await db.all(`SELECT * FROM "${name}"`);
      // BLOB columns (manifest content) are compared by their bytes.
      out[name] = rows.map((r) => JSON.stringify(r, (_k, v: unknown) => (v !== null && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('base64') : v))).sort();
    }
    return out;
  } finally {
    await db.close();
  }
}

/** `path size` of every file under `dir`, sorted (none when `dir` does not exist yet). */
export function storeFiles(dir: string): string[] {
  const out: string[] = [];
  if (!existsSync(dir)) return out;
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else out.push(`${relative(dir, path)} ${statSync(path).size}`);
    }
  };
  walk(dir);
  return out.sort();
}
