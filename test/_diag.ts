import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, openSync, readSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pattern, patternDigest } from './fixtures/blob-store-append.ts';
const MiB = 1024 * 1024, TOTAL = 500 * MiB;
const DIGEST = patternDigest(TOTAL);
for (let run = 0; run < 4; run++) {
  const root = mkdtempSync(join(tmpdir(), 'diag-'));
  const uuid = randomUUID();
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/blob-store-append.ts', root, uuid, String(TOTAL), DIGEST, 'slow'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((res) => child.stdout.on('data', (d: Buffer) => { if (/progress (1[3-9]\d{7}|[2-9]\d{8})/.test(d.toString())) res(); }));
  child.kill('SIGKILL');
  await new Promise((r) => child.on('exit', r));
  const file = join(root, 'uploads', uuid);
  const size = statSync(file).size;
  const fd = openSync(file, 'r');
  const buf = Buffer.alloc(MiB);
  let pos = 0, firstBad = -1;
  for (const chunk of pattern(0, size)) {
    const n = readSync(fd, buf, 0, chunk.length, pos);
    if (n !== chunk.length || !buf.subarray(0, n).equals(chunk)) { firstBad = pos; break; }
    pos += chunk.length;
  }
  console.log(`size ${size} (${size / MiB} MiB), first wrong chunk at ${firstBad}`);
  rmSync(root, { recursive: true, force: true });
}
