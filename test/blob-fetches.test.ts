// BlobFetches against a real store in a temp dir and a scripted upstream, the
// bodies read through node's http parser (the suite: helpers/blob-fetches-suite.ts).
import { blobFetchesSuite } from './helpers/blob-fetches-suite.ts';

blobFetchesSuite({ lent: false });
