// The note kept beside each upload session (uploads/<uuid>.state): how many
// bytes of the upload are known to be in the file, in order, and on disk
// (`durable`), and, for the file exactly as a finished append left it
// (device, inode, birth time, size, mtime), its sha256 when known.
//
// The file's size alone cannot say that: a process killed mid-append (or a
// power loss) may leave the file longer than what was written in order and
// flushed. So the size an upload reports, and where a resumed PATCH goes on,
// is the noted `durable` count, never more than the file holds. An upload
// without a note (created, nothing appended yet, or a note that did not
// survive) counts 0 bytes: the client sends everything again.
//
// Notes are replaced atomically (temporary file, rename; a temporary name of
// its own for each write, as processes of other workers or nodes may write a
// session's note at the same time); a note lost or older than the file only
// ever lowers the count, never raises it.
import type fs from 'node:fs';
import { readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomSuffix, unlinkQuiet } from './store-files.ts';

export type FileId = Pick<fs.BigIntStats, 'dev' | 'ino' | 'birthtimeNs' | 'size' | 'mtimeNs'>;

export function fileId(st: fs.BigIntStats): FileId {
  return { dev: st.dev, ino: st.ino, birthtimeNs: st.birthtimeNs, size: st.size, mtimeNs: st.mtimeNs };
}

export function sameFile(a: FileId, b: FileId): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.birthtimeNs === b.birthtimeNs && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

/** `<uuid>.state`: the note of an upload session. */
export const NOTE_NAME = /^[0-9a-f-]{36}\.state$/;
/**
 * `.state-<uuid>.<random>.tmp` (and `.state-<uuid>.tmp` of earlier versions): a
 * note being written, left over only by a crash; removed when its session
 * ends, or by gc once old.
 */
export const NOTE_TMP = /^\.state-[0-9a-f-]{36}(\.[0-9a-f]{16})?\.tmp$/;

export interface UploadNote {
  durable: number;
  /** The whole file as it was noted (set after a finished append). */
  file?: FileId;
  /** sha256 hex of that file's content. */
  hex?: string;
}

/** What an upload holds: `size` bytes in order and on disk; `hex` their digest when the note vouches for the whole file. */
export interface Settled {
  size: number;
  hex?: string;
}

const ID_KEYS = ['dev', 'ino', 'birthtimeNs', 'size', 'mtimeNs'] as const;

export class UploadNotes {
  constructor(private readonly uploadsDir: string) {}

  path(uuid: string): string {
    return join(this.uploadsDir, `${uuid}.state`);
  }

  async write(uuid: string, note: UploadNote): Promise<void> {
    const json = {
      durable: note.durable,
      ...(note.file ? { file: Object.fromEntries(ID_KEYS.map((k) => [k, String(note.file![k])])) } : {}),
      ...(note.hex ? { hex: note.hex } : {}),
    };
    const tmp = this.tmpPath(uuid);
    try {
      await writeFile(tmp, JSON.stringify(json));
      await rename(tmp, this.path(uuid));
    } catch (err) {
      await unlinkQuiet(tmp);
      throw err;
    }
  }

  async read(uuid: string): Promise<UploadNote | undefined> {
    try {
      const raw = JSON.parse(await readFile(this.path(uuid), 'utf8')) as { durable?: unknown; file?: Record<string, unknown>; hex?: unknown };
      if (!Number.isSafeInteger(raw.durable) || (raw.durable as number) < 0) return undefined;
      const note: UploadNote = { durable: raw.durable as number };
      const f = raw.file;
      if (f && ID_KEYS.every((k) => typeof f[k] === 'string' && /^\d+$/.test(f[k] as string))) {
        note.file = Object.fromEntries(ID_KEYS.map((k) => [k, BigInt(f[k] as string)])) as unknown as FileId;
        if (typeof raw.hex === 'string' && /^[0-9a-f]{64}$/.test(raw.hex)) note.hex = raw.hex;
      }
      return note;
    } catch {
      return undefined; // missing or unreadable: nothing is vouched for
    }
  }

  /** What the upload file `st` holds for sure, by its note. */
  async settle(uuid: string, st: fs.BigIntStats): Promise<Settled> {
    const note = await this.read(uuid);
    const size = Math.min(note?.durable ?? 0, Number(st.size));
    const whole = note?.file !== undefined && sameFile(note.file, fileId(st)) && size === Number(st.size);
    return whole && note?.hex ? { size, hex: note.hex } : { size };
  }

  /**
   * The note, and the temporary ones a crash mid-write left. Called as the
   * session ends, under its lock: no other write of this session's note runs.
   */
  async remove(uuid: string): Promise<void> {
    await unlinkQuiet(this.path(uuid));
    const prefix = `.state-${uuid}`;
    let names: string[];
    try {
      names = await readdir(this.uploadsDir);
    } catch {
      return; // no uploads directory: nothing was left
    }
    for (const name of names) if (name.startsWith(prefix) && NOTE_TMP.test(name)) await unlinkQuiet(join(this.uploadsDir, name));
  }

  private tmpPath(uuid: string): string {
    return join(this.uploadsDir, `.state-${uuid}.${randomSuffix()}.tmp`);
  }
}
