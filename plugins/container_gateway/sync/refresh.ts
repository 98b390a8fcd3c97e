// After a sync run, the access rules Katello would otherwise only send at its
// next capsule sync, as far as its registry API tells them without anyone's
// password: a mirrored repository is public exactly
// when Katello's anonymous catalog lists it (lifecycle environments with
// unauthenticated pull), and each known content host's catalog is fetched
// again (HostUUID). Users' mappings need their own credentials: they stay as
// Katello last sent them (PUT user_repository_mapping).
import type { GatewayDb } from '../db/database.ts';
import { repositoriesOf, type KatelloClient } from '../upstream/katello.ts';
import { mapLimit } from './pool.ts';

export interface RefreshResult {
  /** Mirrored repositories now public. */
  public: number;
  /** Content hosts whose mapping was fetched again. */
  hosts: number;
}

/** Katello's `_catalog` for anonymous clients; undefined when it does not answer 200 with a list. */
async function anonymousCatalog(katello: KatelloClient): Promise<Set<string> | undefined> {
  const reply = await katello.anonymousCatalog();
  if (reply.status !== 200) return undefined;
  const list = (JSON.parse(reply.text) as { repositories?: unknown }).repositories;
  return Array.isArray(list) ? new Set(list.filter((n): n is string => typeof n === 'string')) : undefined;
}

export async function refreshAccess(db: GatewayDb, katello: KatelloClient, mirrored: string[], concurrency: number, log: { warn(msg: string): void }): Promise<RefreshResult> {
  const result: RefreshResult = { public: 0, hosts: 0 };
  try {
    const open = await anonymousCatalog(katello);
    if (open) {
      for (const name of mirrored) {
        const isPublic = open.has(name);
        await db.setPublic(name, isPublic);
        if (isPublic) result.public++;
      }
    } else log.warn("sync: Katello's anonymous catalog is unavailable: repository visibility left as it was");
  } catch (err) {
    log.warn(`sync: Katello's anonymous catalog could not be read (${(err as Error).message}): repository visibility left as it was`);
  }
  const hosts = await db.hosts();
  await mapLimit(hosts, concurrency, async (uuid) => {
    try {
      const reply = await katello.hostCatalog(uuid);
      if (reply.status !== 200) return;
      await db.setHostRepositories(uuid, repositoriesOf(reply));
      result.hosts++;
    } catch (err) {
      log.warn(`sync: the catalog of host ${uuid} could not be fetched: ${(err as Error).message}`);
    }
  });
  return result;
}
