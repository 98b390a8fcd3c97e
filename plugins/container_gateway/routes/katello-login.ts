// The Katello login now lives in auth/katello-login.ts; this name stays only until the registry router imports it from there.
export { UNREACHABLE_RETRY_AFTER } from '../auth/katello-login.ts';
