// Tags pushed through the proxy follow the main server's order. Two pushes of
// one tag can be answered 201 in one order and reach this store in the other;
// so after its 201 each push takes a ticket, then asks the main server what
// the tag points to. Tickets are taken after the main server stored the push,
// so the highest ticket's question was asked after every push with a lower
// ticket was stored there: its answer wins, a late lower one never overwrites
// it. Shared by every worker through SQLite.
import type Database from 'better-sqlite3';
import { Statements } from '../db/statements.ts';
import type { ContentIndex } from './content-index.ts';

export class TagOrder {
  private readonly statements: Statements;

  constructor(private readonly db: Database.Database) {
    this.statements = new Statements(db);
  }

  /** Taken after the main server answered 201 for a push of `tag`, before asking it what the tag points to. */
  ticket(repositoryId: number, tag: string): number {
    return this.statements
      .get('INSERT INTO tag_order (repository_id, name, issued) VALUES (?, ?, 1) ON CONFLICT(repository_id, name) DO UPDATE SET issued = issued + 1 RETURNING issued')
      .pluck()
      .get(repositoryId, tag) as number;
  }

  /**
   * The main server said, when asked with `ticket`, that `tag` points to
   * `observed` (undefined: no such tag). The tag here follows the answer of
   * the highest ticket: to that manifest if it is stored here (else its own
   * push will tag it when it gets here), or nowhere. Returns the digest the
   * tag now points to here.
   */
  settle(index: ContentIndex, repositoryId: number, tag: string, ticket: number, observed: string | undefined): string | undefined {
    return this.db
      .transaction(() => {
        const row = this.statements.get('SELECT applied, desired FROM tag_order WHERE repository_id = ? AND name = ?').get(repositoryId, tag) as { applied: number; desired: string | null } | undefined;
        let target = row?.desired ?? undefined;
        if (!row || ticket > row.applied) {
          this.statements.get('UPDATE tag_order SET applied = ?, desired = ? WHERE repository_id = ? AND name = ?').run(ticket, observed ?? null, repositoryId, tag);
          target = observed;
        }
        if (target !== undefined && index.manifest(repositoryId, target)) {
          this.statements.get('INSERT INTO tags (repository_id, name, digest) VALUES (?, ?, ?) ON CONFLICT(repository_id, name) DO UPDATE SET digest = excluded.digest').run(repositoryId, tag, target);
          return target;
        }
        index.deleteTag(repositoryId, tag);
        return undefined;
      })
      .immediate();
  }
}

const orders = new WeakMap<Database.Database, TagOrder>();

/** One TagOrder (and its prepared statements) per database. */
export function tagOrderOf(db: Database.Database): TagOrder {
  let order = orders.get(db);
  if (!order) {
    order = new TagOrder(db);
    orders.set(db, order);
  }
  return order;
}
