// Reads from the main server's registry with a given Authorization (a
// pusher's own), following the redirects Katello answers blob GETs with.
import type { RegistryFetch } from '../oci/registry-fetch.ts';
import { UpstreamError, type HttpUpstream } from './http-upstream.ts';
import { followRedirects } from './redirects.ts';

const MAX_REDIRECTS = 3;

export function mainFetch(main: HttpUpstream, upstreamFor: (origin: string) => HttpUpstream, authorization: string | undefined): RegistryFetch {
  // `main` prepends its base path; any other target is asked for its whole path.
  const send = (method: string, target: URL, headers: Record<string, string>) =>
    target.origin === main.origin && target.pathname.startsWith(`${main.basePath}/`)
      ? main.request({ method, path: target.pathname.slice(main.basePath.length) + target.search, headers })
      : upstreamFor(target.origin).request({ method, path: target.pathname + target.search, headers });
  return async (method, path, headers = {}) => {
    const url = new URL(`${main.origin}${main.basePath}${path}`);
    const first = await send(method, url, { ...headers, ...(authorization ? { Authorization: authorization } : {}) });
    return followRedirects(first, url, headers, authorization, (target, h) => send(method, target, h), MAX_REDIRECTS, () => new UpstreamError('reset', `more than ${MAX_REDIRECTS} redirects from ${main.origin}`));
  };
}
