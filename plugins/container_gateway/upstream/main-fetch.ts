// Reads from the main server's registry with a given Authorization (a
// pusher's own), following the redirects Katello answers blob GETs with.
// Like Go clients, the Authorization is dropped when a redirect leaves the
// main server's origin: the target (Pulp's content app) has its own token.
import type http from 'node:http';
import type { RegistryFetch } from '../sync/mirror.ts';
import { UpstreamError, type HttpUpstream } from './http-upstream.ts';

const MAX_REDIRECTS = 3;

export function mainFetch(main: HttpUpstream, upstreamFor: (origin: string) => HttpUpstream, authorization: string | undefined): RegistryFetch {
  return async (method, path, headers = {}) => {
    let up: HttpUpstream = main;
    let target = path;
    let auth = authorization;
    for (let hop = 0; ; hop++) {
      const res: http.IncomingMessage = await up.request({ method, path: target, headers: { ...headers, ...(auth ? { authorization: auth } : {}) } });
      const location = res.headers.location;
      if (res.statusCode === undefined || res.statusCode < 300 || res.statusCode >= 400 || !location) return res;
      res.resume();
      if (hop === MAX_REDIRECTS) throw new UpstreamError('reset', `more than ${MAX_REDIRECTS} redirects from ${main.origin}`);
      const next = new URL(location, `${up.origin}${up.basePath}${target}`);
      if (next.origin !== up.origin) auth = undefined;
      up = next.origin === main.origin ? main : upstreamFor(next.origin);
      // `main` prepends its base path; absolute targets of other origins are taken whole.
      target = up === main && next.pathname.startsWith(main.basePath) ? next.pathname.slice(main.basePath.length) + next.search : next.pathname + next.search;
    }
  };
}
