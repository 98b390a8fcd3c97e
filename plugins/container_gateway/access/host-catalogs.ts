// A content host the database does not know yet gets its catalog from
// Katello on its first request, so that it can pull at once. An unknown UUID
// is asked about at most once per host_lookup_interval: a host Katello does
// not know must not cost a Katello call on every request.
import type { Logger } from '../../../lib/plugins/api.ts';
import type { GatewayDb } from '../db/database.ts';
import { repositoriesOf, type KatelloClient } from '../upstream/katello.ts';

export class HostCatalogs {
  private readonly lastAsked = new Map<string, number>();

  constructor(
    private readonly db: GatewayDb,
    private readonly katello: KatelloClient | undefined,
    private readonly intervalMs: number,
    private readonly logger: Logger,
  ) {}

  async learn(uuid: string): Promise<void> {
    if (!this.katello || (await this.db.hostKnown(uuid))) return;
    const last = this.lastAsked.get(uuid);
    if (last !== undefined && Date.now() - last < this.intervalMs) return;
    this.lastAsked.set(uuid, Date.now());
    try {
      const reply = await this.katello.hostCatalog(uuid);
      if (reply.status !== 200) {
        this.logger.warn(`catalog of host ${uuid} from Katello answered ${reply.status}`);
        return;
      }
      await this.db.setHostRepositories(uuid, repositoriesOf(reply));
      this.lastAsked.delete(uuid);
    } catch (err) {
      this.logger.warn(`catalog of host ${uuid} could not be fetched: ${(err as Error).message}`);
    }
  }
}
