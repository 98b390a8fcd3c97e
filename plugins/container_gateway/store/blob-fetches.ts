// STAND-IN (H6's branch only): H5 owns this module (one upstream fetch per
// digest shared by every requester, within a bounded concurrency). Only the
// constructor gateway.ts calls is here; H5's version replaces this file.
import type { BlobStore } from './blob-store.ts';

export class BlobFetches {
  constructor(
    readonly blobs: BlobStore,
    readonly concurrency: number,
  ) {}
}
