// The gateway-sync suite on PostgreSQL: every gateway it starts on a database of its own in this file's private cluster.
import t from 'tap';
import { usePostgres } from '../helpers/postgres.ts';

await usePostgres(t);
await import('../gateway-sync.test.ts');
