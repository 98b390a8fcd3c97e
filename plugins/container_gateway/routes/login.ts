// The login routes now live in token.ts; this name stays only until the registry router imports them from there.
export { ping, token } from './token.ts';
