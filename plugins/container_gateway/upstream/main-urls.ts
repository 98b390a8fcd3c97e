// Where the main server is, derived once from settings (MainServer.urls) for
// everything that calls it: pushes and syncs (its registry), logins, catalogs
// and search (Katello's registry API), the capsule-sync trigger (Katello's API).
// foreman_url may carry a path (https://f/foreman/): every URL keeps it.

export interface MainServerUrls {
  /** Katello's registry API, for /v2/token, /v2/_catalog and search: foreman_url + katello_registry_path. */
  katelloRegistry: string;
  /** The registry pushes go to and syncs read: main_registry_url, else katelloRegistry. Ends with '/'. */
  registry: string;
  /** foreman_url, for Katello's API (e.g. katello/api/capsules/:id/content/sync). Ends with '/'. */
  foreman: string;
}

const withSlash = (url: string) => (url.endsWith('/') ? url : `${url}/`);

/** The URLs of the main server, or undefined in standalone mode (no foreman_url). */
export function mainServerUrls(settings: { main_registry_url?: string; katello_registry_path: string }, foremanUrl: string | undefined): MainServerUrls | undefined {
  if (!foremanUrl) return undefined;
  const foreman = withSlash(foremanUrl);
  // katello_registry_path is a path below foreman_url, not from its host's root.
  const katelloRegistry = new URL(settings.katello_registry_path.replace(/^\/+/, ''), foreman).href;
  let registry = katelloRegistry;
  if (settings.main_registry_url) {
    const url = new URL(settings.main_registry_url);
    // A registry named by its origin alone serves the API under /v2/.
    if (url.pathname === '/' || url.pathname === '') url.pathname = '/v2/';
    registry = withSlash(url.href);
  }
  return { katelloRegistry, registry, foreman };
}
