import type http from 'node:http';

/** GET (or HEAD) a path relative to the main registry's /v2, e.g. `/org/app/manifests/v1`, with suitable auth; resolves with the response head (body not read). */
export type RegistryFetch = (method: 'GET' | 'HEAD', path: string, headers?: Record<string, string>) => Promise<http.IncomingMessage>;
