// Writing a blob around the page cache (O_DIRECT). A buffered write copies
// every byte into freshly allocated page-cache pages; on a virtual machine
// that first touch of guest memory is what costs (1 GiB: 1.36 s of system CPU
// into a new file, 0.11 s overwriting one already cached, 0.17 s with
// O_DIRECT), and a cold pull paid it on the proxy's cores while the client
// needed them: 1.4-1.5 s of the thread pool's CPU per GiB, down to 0.1-0.2 s.
// O_DIRECT wants the memory, the length and the offset of each write aligned,
// which a socket's chunks never are: they are copied (in user space, into
// memory that stays mapped) into page-aligned staging buffers, and each full
// buffer is written at once. The tail, shorter than a buffer, goes through
// the page cache. JavaScript cannot ask where a Buffer's memory is, but a
// WebAssembly memory is page-aligned by construction: the staging buffers
// are cut from one.
// Where the filesystem refuses O_DIRECT (the open or a write fails), the
// writer goes through the page cache as before (write-pipeline.ts).
import fs from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Bytes per staging buffer, and per direct write. */
export const DIRECT_STAGE = 1024 * 1024;
/** Alignment a direct write keeps (a page: what every Linux filesystem accepts). */
export const DIRECT_ALIGN = 4096;
/** Staging buffers per writer: one being filled while the others wait for or are in the write. */
const STAGES = 4;
/** Sets kept for reuse between writers (the rest are left to the collector). */
const KEPT = 2;
/** WebAssembly's page. */
const WASM_PAGE = 64 * 1024;

/** A file opened for writes around the page cache, with the staging buffers to write from. */
export interface DirectWrite {
  fh: FileHandle;
  stages: Buffer[];
}

/** Staging buffers for direct writes, reused from one writer to the next. */
export class DirectStages {
  private readonly kept: Buffer[][] = [];

  /** `path`, opened for direct writes, with a set of buffers; undefined where the filesystem refuses O_DIRECT. */
  async open(path: string): Promise<DirectWrite | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(path, fs.constants.O_WRONLY | fs.constants.O_DIRECT);
    } catch {
      return undefined; // through the page cache then
    }
    return { fh, stages: this.kept.pop() ?? allocate() };
  }

  /** Close what open() gave, once no write on it is in flight; its buffers go back. */
  async close(direct: DirectWrite): Promise<void> {
    if (this.kept.length < KEPT) this.kept.push(direct.stages);
    await direct.fh.close();
  }
}

function allocate(): Buffer[] {
  const memory = new WebAssembly.Memory({ initial: (STAGES * DIRECT_STAGE) / WASM_PAGE });
  const all = Buffer.from(memory.buffer);
  return Array.from({ length: STAGES }, (_, i) => all.subarray(i * DIRECT_STAGE, (i + 1) * DIRECT_STAGE));
}
