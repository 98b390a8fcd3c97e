// Maintenance of the embedded store, for `proxyctl gc` and `proxyctl verify`
// (trusted host + client certificate, like the other admin routes). gc also
// deletes the content of repositories Katello unlisted, and purges abandoned
// uploads. verify streams one JSON line per blob, then the totals: re-hashing
// a large store takes long, and the client shows progress meanwhile.
//
// gc runs on one node at a time across every node sharing the database and
// storage (two at once would put back each other's candidates, see
// store/blob-gc.ts): a second one is refused with 409, naming the node whose
// gc runs, which it records in a file of the shared storage while it runs.
import { readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import express, { type RequestHandler, type Router } from 'express';
import { jsonErrors } from '../../../lib/plugins/api.ts';
import type { LockResult } from '../db/cluster.ts';
import type { LocalStore } from '../gateway.ts';

export interface StoreAdmin {
  store: () => LocalStore;
  /** Delete the repositories Katello's repository_list left out, with their tags and manifests; their names. */
  reclaimUnlisted: () => Promise<string[]>;
  /** Runs `fn` unless another process sharing the database holds the lock `key` (Cluster.withAdvisoryLock). */
  exclusively: <T>(key: string, fn: () => Promise<T>) => Promise<LockResult<T>>;
  /** This node's node_name. */
  node: string;
}

export const GC_LOCK = 'container_gateway gc';
/** In the storage root: which node's gc runs (written once the lock is held, removed when it ends). */
const GC_HOLDER = 'gc-running';

/**
 * `graceMs`: blobs younger than this are never collected, an upload may be linking them right now.
 * `uploadPurgeMs`: uploads idle this long are abandoned and purged.
 */
export function storeAdminRouter(trustedClient: RequestHandler, admin: StoreAdmin, graceMs: number, uploadPurgeMs: number): Router {
  const router = express.Router();
  router.post('/admin/gc', trustedClient, async (req, res) => {
    const { index, blobs } = admin.store();
    const holderFile = join(blobs.root, GC_HOLDER);
    const ran = await admin.exclusively(GC_LOCK, async () => {
      await writeFile(holderFile, `${admin.node}\n`);
      try {
        const repositories = await admin.reclaimUnlisted();
        if (repositories.length > 0) req.log.info(`gc: content of ${repositories.length} unlisted repositories reclaimed: ${repositories.join(', ')}`);
        const forgotten = await index.forgetUnlinkedBlobs();
        const result = await blobs.gc((digest) => index.blobReferenced(digest), { graceMs, uploadPurgeMs });
        req.log.info(`gc: ${result.removed} blobs (${result.bytes} bytes) removed, ${result.purged.uploads} abandoned uploads (${result.purged.bytes} bytes) purged`);
        return { ...result, forgotten, repositories };
      } finally {
        await unlink(holderFile).catch(() => undefined);
      }
    });
    if (ran.locked) {
      res.json(ran.value);
      return;
    }
    const holder = (await readFile(holderFile, 'utf8').catch(() => '')).trim();
    res.status(409).json({ error: `gc is already running${holder ? ` on node ${holder}` : ''}: try again when it has finished` });
  });
  router.get('/admin/verify', trustedClient, async (req, res) => {
    const { blobs } = admin.store();
    res.status(200).type('application/x-ndjson');
    let checked = 0;
    let bad = 0;
    for await (const r of blobs.verify()) {
      checked++;
      if (!r.ok) {
        bad++;
        req.log.error(`verify: blob ${r.digest} does not match its digest`);
      }
      if (!res.write(`${JSON.stringify(r)}\n`)) await new Promise((resolve) => res.once('drain', resolve));
    }
    res.end(`${JSON.stringify({ checked, bad })}\n`);
  });
  router.use('/admin', jsonErrors);
  return router;
}
