// What a gateway holds, for "nothing changed" assertions: every row of its
// SQLite database and every file of its store, read from outside the daemon.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import Database from 'better-sqlite3';

/** Every table's rows (as sorted JSON lines), by table name. */
export function databaseRows(file: string, tables?: string[]): Record<string, string[]> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const names = tables ?? (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all() as string[]);
    return Object.fromEntries(names.map((name) => {
      const rows = db.prepare(`SELECT * FROM "${name}"`).all() as Array<Record<string, unknown>>;
      // BLOB columns (manifest content) are compared by their bytes.
      const text = rows.map((r) => JSON.stringify(r, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('base64') : v)));
      return [name, text.sort()];
    }));
  } finally {
    db.close();
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
