// What the access layer decided about one registry request, handed to the
// content backend with the request. The backend never decides access again.
import type { RegistryClient } from '../auth/client.ts';

export type RepositoryAction = 'pull' | 'push' | 'delete';

export interface Access {
  /** Who is calling, identified once per request. */
  client: RegistryClient;
  /** The repository the request is about. */
  name: string;
  /** What the request needs: a HEAD that probes before a push needs 'push'. */
  action: RepositoryAction;
  /**
   * The main server decides this request (smart-proxy mode: writes and push
   * probes): nothing here may refuse what it would accept.
   */
  deferred: boolean;
  /** The repository's id in this gateway's database; undefined when it does not exist (yet). */
  repositoryId: number | undefined;
  /** The standalone user a write is made by (owner of a repository it creates). */
  user?: string;
  /** May this client read another repository (cross-repository mounts)? */
  canPull(name: string): Promise<boolean>;
}
