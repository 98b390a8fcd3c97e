// Collection and checking of the content store: unreferenced blobs past their
// grace period, upload temporary files idle past the purge age, and a
// re-hash of every blob. Safe while uploads run and while other processes
// commit (see collectBlobs), and never touches what an operation of this
// process is using.
import type fs from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { UploadBusyError } from './blob-errors.ts';
import { NOTE_NAME, NOTE_TMP } from './upload-notes.ts';
import { errno, randomSuffix, unlinkQuiet } from './store-files.ts';
import { UPLOAD_ID } from './upload-sessions.ts';
import { hashHandle } from './write-pipeline.ts';

export interface BlobInfo {
  digest: string;
  size: number;
  mtimeMs: number;
}

export interface VerifyResult {
  digest: string;
  ok: boolean;
  size: number;
}

/** Temporary files that are not upload sessions: one-shot ingests, claimed commits, gc's trash. */
export const INGEST_TMP = /^\.ingest-[0-9a-f]{32}$/;
export const COMMIT_TMP = /^\.commit-([0-9a-f-]{36})-[0-9a-f]{16}$/;
const GC_TRASH = /^\.gc-([0-9a-f]{64})-[0-9a-f]{16}$/;

/** What collection needs of a BlobStore. */
export interface StoreLayout {
  readonly uploadsDir: string;
  blobPath(hex: string): string;
  list(): AsyncIterable<BlobInfo>;
  /** An operation of this process is on this upload session right now. */
  sessionBusy(uuid: string): boolean;
  /** A one-shot temporary file of this process (an ingest still streaming). */
  tempBusy(name: string): boolean;
  /** Run `fn` with no other operation on the session (UploadBusyError: another process has one). */
  exclusive<T>(uuid: string, fn: () => Promise<T>): Promise<T>;
  /** The session is gone: drop what this process remembers of it. */
  forget(uuid: string): void;
}

export interface PurgeResult {
  /** Partial files removed: upload sessions and temporary files of fetches, syncs and commits. */
  uploads: number;
  bytes: number;
  /** The ids of the upload sessions among them. */
  sessions: string[];
}

/**
 * Delete the blobs that are not referenced and were last written or committed
 * more than `graceMs` ago. A candidate is first renamed into uploads/ and
 * checked again; a commit that touched it meanwhile (or a reference that
 * appeared) puts it back. Counts removed blobs and their bytes.
 */
export async function collectBlobs(layout: StoreLayout, isReferenced: (digest: string) => boolean | Promise<boolean>, graceMs: number): Promise<{ removed: number; bytes: number }> {
  await mkdir(layout.uploadsDir, { recursive: true });
  await restoreTrash(layout);
  const cutoff = Date.now() - graceMs;
  let removed = 0;
  let bytes = 0;
  for await (const blob of layout.list()) {
    if (blob.mtimeMs >= cutoff || (await isReferenced(blob.digest))) continue;
    const hex = blob.digest.slice('sha256:'.length);
    const final = layout.blobPath(hex);
    const trash = join(layout.uploadsDir, `.gc-${hex}-${randomSuffix()}`);
    try {
      await rename(final, trash);
    } catch (err) {
      if (errno(err) === 'ENOENT') continue;
      throw err;
    }
    let st: fs.Stats;
    try {
      st = await stat(trash);
    } catch (err) {
      if (errno(err) === 'ENOENT') continue; // another gc put it back
      throw err;
    }
    let keep: boolean;
    try {
      keep = st.mtimeMs >= cutoff || (await isReferenced(blob.digest));
    } catch (err) {
      await untrash(trash, final);
      throw err;
    }
    if (keep) {
      await untrash(trash, final);
      continue;
    }
    try {
      await unlink(trash);
    } catch (err) {
      if (errno(err) === 'ENOENT') continue;
      throw err;
    }
    removed++;
    bytes += st.size;
  }
  return { removed, bytes };
}

/** Re-hash every stored blob; `ok` is false when its content does not match its name. */
export async function* verifyBlobs(layout: StoreLayout): AsyncIterable<VerifyResult> {
  for await (const blob of layout.list()) {
    let fh: FileHandle;
    try {
      fh = await open(layout.blobPath(blob.digest.slice('sha256:'.length)), 'r');
    } catch (err) {
      if (errno(err) === 'ENOENT') continue;
      throw err;
    }
    try {
      const { hex, size } = await hashHandle(fh);
      yield { digest: blob.digest, ok: `sha256:${hex}` === blob.digest, size };
    } finally {
      await fh.close();
    }
  }
}

/** mtime in ms of `path`, undefined when it is gone. */
async function mtimeOf(path: string): Promise<{ mtimeMs: number; size: number } | undefined> {
  try {
    const st = await stat(path);
    return { mtimeMs: st.mtimeMs, size: st.size };
  } catch (err) {
    if (errno(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** Is this name in uploads/ a temporary file idle for `olderThanMs` that no operation of this process uses? */
async function idle(layout: StoreLayout, name: string, cutoff: number): Promise<boolean> {
  const dir = layout.uploadsDir;
  if (UPLOAD_ID.test(name)) return !layout.sessionBusy(name) && ((await mtimeOf(join(dir, name)))?.mtimeMs ?? Infinity) < cutoff;
  // A note lives and dies with its upload; without one (claimed by a commit
  // elsewhere, or purged) it goes only once idle itself.
  if (NOTE_NAME.test(name)) {
    const uuid = name.slice(0, -'.state'.length);
    if (layout.sessionBusy(uuid)) return false;
    const upload = await mtimeOf(join(dir, uuid));
    if (upload !== undefined) return upload.mtimeMs < cutoff;
  }
  const commit = COMMIT_TMP.exec(name);
  if (commit && layout.sessionBusy(commit[1]!)) return false;
  if (NOTE_TMP.test(name) && layout.sessionBusy(name.slice('.state-'.length, '.state-'.length + 36))) return false;
  if (INGEST_TMP.test(name) && layout.tempBusy(name)) return false;
  if (!commit && !NOTE_TMP.test(name) && !INGEST_TMP.test(name) && !NOTE_NAME.test(name)) return false;
  return ((await mtimeOf(join(dir, name)))?.mtimeMs ?? Infinity) < cutoff;
}

/** Names in uploads/ of temporary files (sessions, notes, ingests, claimed commits) idle for `olderThanMs`. */
export async function staleTemps(layout: StoreLayout, olderThanMs: number): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(layout.uploadsDir);
  } catch (err) {
    if (errno(err) === 'ENOENT') return [];
    throw err;
  }
  const cutoff = Date.now() - olderThanMs;
  const stale: string[] = [];
  for (const name of names.sort()) if (await idle(layout, name, cutoff)) stale.push(name);
  return stale;
}

/**
 * Remove upload sessions and temporary files nobody wrote to for
 * `olderThanMs`, except what an operation of this process is on. A session
 * is judged again with no operation of this process on it, then removed
 * with its note.
 */
export async function purgeUploads(layout: StoreLayout, olderThanMs: number): Promise<PurgeResult> {
  const result: PurgeResult = { uploads: 0, bytes: 0, sessions: [] };
  for (const name of await staleTemps(layout, olderThanMs)) {
    const path = join(layout.uploadsDir, name);
    if (NOTE_NAME.test(name)) {
      // A session's note goes with the session (below); only a note without one goes alone.
      if ((await mtimeOf(join(layout.uploadsDir, name.slice(0, -'.state'.length)))) === undefined) await unlinkQuiet(path);
      continue;
    }
    if (UPLOAD_ID.test(name)) {
      const removed = await layout
        .exclusive(name, async () => {
          const st = await mtimeOf(path);
          if (st === undefined || st.mtimeMs >= Date.now() - olderThanMs) return undefined;
          await unlinkQuiet(path);
          await unlinkQuiet(join(layout.uploadsDir, `${name}.state`));
          await unlinkQuiet(join(layout.uploadsDir, `.state-${name}.tmp`));
          layout.forget(name);
          return st.size;
        })
        // Another process is on it right now: not abandoned.
        .catch((err: unknown) => {
          if (err instanceof UploadBusyError) return undefined;
          throw err;
        });
      if (removed === undefined) continue;
      result.uploads++;
      result.bytes += removed;
      result.sessions.push(name);
      continue;
    }
    const st = await mtimeOf(path);
    if (st === undefined) continue;
    await unlinkQuiet(path);
    if (NOTE_TMP.test(name)) continue; // a note being written, not a partial upload
    result.uploads++;
    result.bytes += st.size;
  }
  return result;
}

/** Put a blob gc moved away back in place (or drop the copy if the blob is there again). */
async function untrash(trash: string, final: string): Promise<void> {
  try {
    await stat(final);
    await unlinkQuiet(trash);
    return;
  } catch (err) {
    if (errno(err) !== 'ENOENT') throw err;
  }
  await mkdir(dirname(final), { recursive: true });
  try {
    await rename(trash, final); // same content: replacing a copy committed meanwhile is harmless
  } catch (err) {
    if (errno(err) !== 'ENOENT') throw err;
  }
}

/** Blobs left in uploads/ by a gc that was killed before deciding go back in place to be judged again. */
async function restoreTrash(layout: StoreLayout): Promise<void> {
  for (const name of await readdir(layout.uploadsDir)) {
    const m = GC_TRASH.exec(name);
    if (m) await untrash(join(layout.uploadsDir, name), layout.blobPath(m[1]!));
  }
}
