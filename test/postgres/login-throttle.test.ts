// The login-throttle suite on PostgreSQL: every gateway it starts on a database of its own in this file's private cluster.
import t from 'tap';
import { usePostgres } from '../helpers/postgres.ts';

await usePostgres(t);
await import('../login-throttle.test.ts');
