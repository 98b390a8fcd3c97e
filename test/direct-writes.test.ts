// Blob bodies written around the page cache (store/direct-io.ts through
// writeBody): the file holds exactly the body whatever its size against the
// staging buffers (smaller than one, a whole number of them, a tail), the
// bytes reported landed are in the file when reported, a filesystem that
// refuses the direct writes leaves the body written through the page cache,
// and an unaligned position is written through the page cache.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { DIRECT_STAGE, DirectStages } from '../plugins/container_gateway/store/direct-io.ts';
import { writeBody } from '../plugins/container_gateway/store/write-pipeline.ts';
import { content, MiB, type Tap } from './helpers/blob-upstream.ts';

function dirOf(t: Tap): string {
  const dir = mkdtempSync(join(tmpdir(), 'direct-writes-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `body` in uneven pieces, as a socket gives them. */
function piecesOf(body: Buffer): Readable {
  const pieces: Buffer[] = [];
  for (let at = 0, i = 0; at < body.length; i++) {
    const n = [65_536, 1000, 300_000, 7][i % 4]!;
    pieces.push(body.subarray(at, at + n));
    at += n;
  }
  return Readable.from(pieces);
}

const tooLarge = () => new Error('too large');

t.test('direct writes: the file is the body, for every size against the staging buffers', async (t) => {
  const dir = dirOf(t);
  const stages = new DirectStages();
  const probe = await stages.open(join(dir, 'probe'));
  if (!probe) {
    t.comment(`${tmpdir()} refuses O_DIRECT: only the page-cache path runs here`);
  } else await stages.close(probe);
  for (const size of [0, 1000, DIRECT_STAGE, 3 * DIRECT_STAGE + 123, 8 * MiB]) {
    const path = join(dir, `blob-${size}`);
    const fh = await open(path, 'wx+');
    const direct = await stages.open(path);
    const body = content(size, size % 251);
    const hash = createHash('sha256');
    const wrong: string[] = [];
    const written = await writeBody(fh, piecesOf(body), 0, {
      hash,
      tooLarge,
      ...(direct ? { direct } : {}),
      // Read back through the buffered handle, as a reader behind the window does.
      onLanded: (n) => {
        const got = Buffer.alloc(n);
        void fh.read(got, 0, n, 0).then(({ bytesRead }) => {
          if (bytesRead !== n || !got.equals(body.subarray(0, n))) wrong.push(`${n}`);
        });
      },
    });
    if (direct) await stages.close(direct);
    await new Promise((r) => setTimeout(r, 50)); // the last read-backs
    await fh.close();
    t.equal(written, size, `${size} bytes: all written`);
    t.ok(readFileSync(path).equals(body), `${size} bytes: the file is the body`);
    t.equal(hash.digest('hex'), createHash('sha256').update(body).digest('hex'), `${size} bytes: hashed in order`);
    t.same(wrong, [], `${size} bytes: what was reported landed was in the file`);
  }
});

t.test('direct writes refused mid-body: the rest goes through the page cache, the file is the body', async (t) => {
  const dir = dirOf(t);
  const path = join(dir, 'blob');
  const fh = await open(path, 'wx+');
  const stages = new DirectStages();
  const real = await stages.open(path);
  t.teardown(() => real && stages.close(real));
  // A handle that refuses every write stands for a filesystem that refuses O_DIRECT.
  const refusing = await open(path, 'r');
  const body = content(5 * MiB + 17, 9);
  const written = await writeBody(fh, piecesOf(body), 0, { tooLarge, direct: { fh: refusing, stages: real?.stages ?? Array.from({ length: 4 }, () => Buffer.alloc(DIRECT_STAGE)) } });
  await refusing.close();
  await fh.close();
  t.equal(written, body.length);
  t.ok(readFileSync(path).equals(body), 'the file is the body');
});

t.test('an unaligned position is written through the page cache, after what the file held', async (t) => {
  const dir = dirOf(t);
  const path = join(dir, 'upload');
  const fh = await open(path, 'wx+');
  const head = content(100, 3);
  await fh.write(head, 0, head.length, 0);
  const stages = new DirectStages();
  const direct = await stages.open(path);
  const body = content(2 * MiB + 5, 4);
  const written = await writeBody(fh, piecesOf(body), head.length, { tooLarge, ...(direct ? { direct } : {}) });
  if (direct) await stages.close(direct);
  await fh.close();
  t.equal(written, body.length);
  t.ok(readFileSync(path).equals(Buffer.concat([head, body])), 'the file is the head, then the body');
});
