// A real crash of a process writing into the store: a child node process
// (test/fixtures/blob-store-append.ts, run through tsx) streams 500 MiB into
// an upload and is SIGKILLed on the way (mid-append, or mid-commit after the
// upload was claimed). Then, from this process, as a restarted daemon would:
// no partial blob is visible, the size the upload reports is an exact prefix
// of what was sent (where a client resumes), the upload can be resumed or
// done again, leftovers are purged, and verify() reports 0 bad.
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readdirSync, readSync, closeSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { BlobStore } from '../plugins/container_gateway/store/blob-store.ts';
import { pattern, patternDigest, SLOW_AFTER } from './fixtures/blob-store-append.ts';
import { childEnv, ROOT, spawnNode } from './helpers/proxyd.ts';

/** The `t` a test callback receives. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const MiB = 1024 * 1024;
const TOTAL = 500 * MiB;
const DIGEST = patternDigest(TOTAL);
const FIXTURE = join(ROOT, 'test/fixtures/blob-store-append.ts');
/** tsx's loader, resolved from the project (an absolute URL: the child's cwd does not matter). */
const TSX = import.meta.resolve('tsx');

interface Child {
  proc: ChildProcess;
  lines: string[];
  stderr(): string;
  /** Resolves with the first stdout line matching `re`; rejects if the child exits first. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function appendInChild(root: string, uuid: string, mode: 'slow' | 'commit'): Child {
  const proc = spawnNode(['--import', TSX, FIXTURE, root, uuid, String(TOTAL), DIGEST, mode], { cwd: ROOT, env: childEnv() });
  const lines: string[] = [];
  let buf = '';
  let err = '';
  const listeners = new Set<() => void>();
  let done = false;
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts);
    listeners.forEach((l) => l());
  });
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    proc.on('exit', (code, signal) => {
      done = true;
      listeners.forEach((l) => l());
      res({ code, signal });
    }),
  );
  const waitFor = (re: RegExp, timeoutMs = 60_000): Promise<RegExpExecArray> =>
    new Promise((res, rej) => {
      const check = (): void => {
        for (const line of lines) {
          const m = re.exec(line);
          if (m) return finish(() => res(m));
        }
        if (done) finish(() => rej(new Error(`child exited before ${re}; stdout: ${lines.join(' | ')}; stderr: ${err}`)));
      };
      const timer = setTimeout(() => finish(() => rej(new Error(`timed out waiting for ${re}; stderr: ${err}`))), timeoutMs);
      const finish = (f: () => void): void => {
        clearTimeout(timer);
        listeners.delete(check);
        f();
      };
      listeners.add(check);
      check();
    });
  return { proc, lines, stderr: () => err, waitFor, exited };
}

/** Start the child, let it append past `SLOW_AFTER`, SIGKILL it, and wait for it to be gone. */
async function killMidAppend(t: Test, root: string, uuid: string): Promise<void> {
  const child = appendInChild(root, uuid, 'slow');
  t.teardown(() => {
    child.proc.kill('SIGKILL');
  });
  await child.waitFor(new RegExp(`^progress (${SLOW_AFTER}|[1-9]\\d{9,})$`));
  child.proc.kill('SIGKILL');
  const { signal } = await child.exited;
  t.equal(signal, 'SIGKILL', 'the child was killed');
  t.notOk(child.lines.some((l) => l.startsWith('appended')), 'it was killed in the middle of the append');
}

/** Every file under `dir`, relative ([] when dir does not exist). */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as Array<{ isFile(): boolean; name: string; parentPath?: string; path?: string }>)
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath ?? e.path ?? '', e.name).slice(dir.length + 1))
    .sort();
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function tempRoot(t: Test): string {
  const root = mkdtempSync(join(tmpdir(), 'blob-store-crash-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  return root;
}

/** After the crash, as a restarted daemon sees the store: nothing of the blob anywhere. */
async function assertNoPartialBlob(t: Test, root: string, store: BlobStore): Promise<void> {
  t.notOk(existsSync(store.path(DIGEST)), 'no file under the final name');
  t.same(filesUnder(join(root, 'blobs')), [], 'nothing at all under blobs/');
  t.equal(await store.stat(DIGEST), undefined, 'stat(): unknown');
  t.same(await collect(store.list()), [], 'list() does not show it');
}

async function assertVerified(t: Test, store: BlobStore): Promise<void> {
  const report = await collect(store.verify());
  t.same(report, [{ digest: DIGEST, ok: true, size: TOTAL }], 'verify(): the blob, ok');
  t.equal(report.filter((r) => !r.ok).length, 0, 'verify() reports 0 bad');
}

/** Do the first `n` bytes of the upload file equal the first `n` bytes sent? */
function isPrefix(file: string, n: number): boolean {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(1024 * 1024);
    let pos = 0;
    for (const chunk of pattern(0, n)) {
      if (readSync(fd, buf, 0, chunk.length, pos) !== chunk.length || !buf.subarray(0, chunk.length).equals(chunk)) return false;
      pos += chunk.length;
    }
    return true;
  } finally {
    closeSync(fd);
  }
}

t.test('SIGKILL in the middle of a 500 MiB append, then the upload resumes where it stopped', async (t) => {
  const root = tempRoot(t);
  const uuid = randomUUID();
  await killMidAppend(t, root, uuid);

  const store = new BlobStore(root);
  await assertNoPartialBlob(t, root, store);
  const partial = await store.uploadSize(uuid);
  const onDisk = statSync(join(root, 'uploads', uuid)).size;
  t.ok(partial !== undefined && partial > 0 && partial < TOTAL, `the upload holds part of the blob (${partial} of ${TOTAL} bytes; the file has ${onDisk})`);
  t.ok(partial !== undefined && partial <= onDisk, 'it counts no more than the file holds');
  t.ok(isPrefix(join(root, 'uploads', uuid), partial ?? 0), 'the bytes it counts are exactly the first bytes sent, in order');

  // What a client does after a 416 or a GET of the upload: send the rest from there.
  const size = await store.append(uuid, Readable.from(pattern(partial ?? 0, TOTAL), { objectMode: false }), { start: partial });
  t.equal(size, TOTAL);
  t.same(await store.commit(uuid, DIGEST, { expectedSize: TOTAL }), { size: TOTAL }, 'committed: what the killed process wrote is an exact prefix');
  t.same(filesUnder(join(root, 'uploads')), [], 'no temporary file left');
  await assertVerified(t, store);
});

t.test('SIGKILL in the middle of a 500 MiB append, then the upload is done again (cancel + createUpload)', async (t) => {
  const root = tempRoot(t);
  const uuid = randomUUID();
  await killMidAppend(t, root, uuid);

  const store = new BlobStore(root);
  await assertNoPartialBlob(t, root, store);
  await store.cancel(uuid);
  t.equal(await store.uploadSize(uuid), undefined, 'cancelled');
  await store.createUpload(uuid);
  t.equal(await store.append(uuid, Readable.from(pattern(0, TOTAL), { objectMode: false }), { start: 0 }), TOTAL);
  t.same(await store.commit(uuid, DIGEST), { size: TOTAL });
  t.same(filesUnder(join(root, 'uploads')), [], 'no temporary file left');
  await assertVerified(t, store);
});

t.test('SIGKILL during the commit, after the upload was claimed: no blob, the claimed file purged, a new upload completes it', async (t) => {
  const root = tempRoot(t);
  const uuid = randomUUID();
  const child = appendInChild(root, uuid, 'commit');
  t.teardown(() => {
    child.proc.kill('SIGKILL');
  });
  await child.waitFor(/^committing$/, 120_000);
  // The commit claims the upload (renames it to .commit-<uuid>-*) and then
  // hashes 500 MiB from disk: kill it as soon as the claimed file shows.
  const uploads = join(root, 'uploads');
  const claimed = (): string | undefined => readdirSync(uploads).find((f) => f.startsWith(`.commit-${uuid}-`));
  for (let i = 0; i < 5000 && claimed() === undefined && !child.lines.some((l) => l.startsWith('committed')); i++) await new Promise((r) => setTimeout(r, 2));
  child.proc.kill('SIGKILL');
  const { signal } = await child.exited;
  t.equal(signal, 'SIGKILL', 'the child was killed');
  t.notOk(child.lines.some((l) => l.startsWith('committed')), 'before its commit finished');
  const left = claimed();
  t.ok(left, 'after the commit claimed the upload: the claimed file is still in uploads/');
  t.same(filesUnder(join(root, 'blobs')), [], 'and before it placed the blob: nothing under blobs/');

  const store = new BlobStore(root);
  await assertNoPartialBlob(t, root, store);
  t.equal(await store.uploadSize(uuid), undefined, 'the session is over (claimed): a client starts again');
  t.same(await collect(store.verify()), [], 'verify(): nothing to check, 0 bad');
  // What gc's purge does once the claimed file is idle for the purge age (0 here).
  const purged = await store.purgeUploads(0);
  t.same(purged, { uploads: 1, bytes: TOTAL, sessions: [] }, 'the claimed leftover is purged: 1 file, 500 MiB');
  t.same(filesUnder(uploads), [], 'uploads/ is empty');

  const again = randomUUID();
  await store.createUpload(again);
  await store.append(again, Readable.from(pattern(0, TOTAL), { objectMode: false }));
  t.same(await store.commit(again, DIGEST), { size: TOTAL }, 'a new upload completes it');
  await assertVerified(t, store);
});

t.test('a note write cut by SIGKILL leaves its temporary file: the session that ends (cancel, commit) removes it', async (t) => {
  const root = tempRoot(t);
  const store = new BlobStore(root);
  for (const end of ['cancel', 'commit'] as const) {
    const uuid = randomUUID();
    await store.createUpload(uuid);
    // What a process killed between writing a note and renaming it leaves, whatever its random suffix.
    writeFileSync(join(root, 'uploads', `.state-${uuid}.0123456789abcdef.tmp`), '{"durable":0}');
    writeFileSync(join(root, 'uploads', `.state-${uuid}.tmp`), '{"durable":0}');
    if (end === 'cancel') await store.cancel(uuid);
    else {
      await store.append(uuid, Readable.from([Buffer.from('abc')]), { start: 0 });
      await store.commit(uuid, `sha256:${createHash('sha256').update('abc').digest('hex')}`);
    }
    t.same(filesUnder(join(root, 'uploads')), [], `${end}: no temporary file left`);
  }
});
