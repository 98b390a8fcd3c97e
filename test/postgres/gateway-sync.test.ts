// The gateway-sync suite on PostgreSQL: every gateway it starts has a database of its own in this file's private cluster.
import t from 'tap';
import { gatewayDatabasesIn, usePostgres } from '../helpers/postgres.ts';

const cluster = await usePostgres(t);
await import('../gateway-sync.test.ts');

t.test('the gateways of this suite kept their rows in PostgreSQL', async (t) => {
  const databases = await gatewayDatabasesIn(cluster);
  t.ok(databases.some((d) => d.rows > 0), `a gateway database holds users or repositories: ${JSON.stringify(databases)}`);
});
