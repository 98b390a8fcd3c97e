// Tags pushed through the proxy follow the main server's order. Two pushes of
// one tag can be answered 201 in one order and reach this store in the other;
// so after its 201 each push takes a ticket, then asks the main server what
// the tag points to. Tickets are taken after the main server stored the push,
// so the highest ticket's question was asked after every push with a lower
// ticket was stored there: its answer wins, a late lower one never overwrites
// it. Shared by every worker through the database.
import type { Sql } from '../db/sql.ts';
import { deleteTag, manifestIn, setTag } from './content-index.ts';

export class TagOrder {
  constructor(private readonly sql: Sql) {}

  /** Taken after the main server answered 201 for a push of `tag`, before asking it what the tag points to. */
  async ticket(repositoryId: number, tag: string): Promise<number> {
    const issued = await this.sql.value<number | string>(
      'INSERT INTO tag_order (repository_id, name, issued) VALUES (?, ?, 1) ON CONFLICT(repository_id, name) DO UPDATE SET issued = tag_order.issued + 1 RETURNING issued',
      [repositoryId, tag],
    );
    return Number(issued);
  }

  /**
   * The main server said, when asked with `ticket`, that `tag` points to
   * `observed` (undefined: no such tag). The tag here follows the answer of
   * the highest ticket: to that manifest if it is stored here (else its own
   * push will tag it when it gets here), or nowhere. Returns the digest the
   * tag now points to here.
   */
  settle(repositoryId: number, tag: string, ticket: number, observed: string | undefined): Promise<string | undefined> {
    return this.sql.transaction(async (tx) => {
      const row = await tx.get<{ applied: number; desired: string | null }>('SELECT applied, desired FROM tag_order WHERE repository_id = ? AND name = ?', [repositoryId, tag]);
      let target = row?.desired ?? undefined;
      if (!row || ticket > Number(row.applied)) {
        await tx.run('UPDATE tag_order SET applied = ?, desired = ? WHERE repository_id = ? AND name = ?', [ticket, observed ?? null, repositoryId, tag]);
        target = observed;
      }
      if (target !== undefined && (await manifestIn(tx, repositoryId, target))) {
        await setTag(tx, repositoryId, tag, target);
        return target;
      }
      await deleteTag(tx, repositoryId, tag);
      return undefined;
    });
  }
}
