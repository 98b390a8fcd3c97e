import type { BlobStore } from './blob-store.ts';
import type { ContentIndex } from './content-index.ts';

/** The embedded store: blob files by digest, and what repositories hold in the database. */
export interface LocalStore {
  blobs: BlobStore;
  index: ContentIndex;
}
