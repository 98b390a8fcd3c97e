// Shared by bin/proxyd and bin/proxyctl: run the compiled program from dist/
// (built by `npm run build`, which `npm ci` runs) when it is at least as new
// as the sources; otherwise run the TypeScript sources through tsx.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function newestSource(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

export async function run(program) {
  const compiled = join(root, 'dist', 'lib', 'cli', `${program}.js`);
  const stamp = join(root, 'dist', '.built');
  if (existsSync(compiled) && existsSync(stamp)) {
    const sources = Math.max(newestSource(join(root, 'lib')), newestSource(join(root, 'plugins')));
    if (statSync(stamp).mtimeMs >= sources) return import(pathToFileURL(compiled).href);
    process.stderr.write(`${program}: dist/ is older than the sources; running the sources through tsx (npm run build compiles them)\n`);
  }
  const { register } = await import('tsx/esm/api');
  register();
  globalThis[Symbol.for('proxyd.typescript')] = true;
  return import(pathToFileURL(join(root, 'lib', 'cli', `${program}.ts`)).href);
}
