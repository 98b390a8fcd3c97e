// Who may do what on the embedded store. Standalone mode: the grants of a
// token this gateway issued (pull, push, delete per repository). With a main
// server: reads follow the database rules of the pulp path; writes are the
// main server's business.
import type { Request, Response } from 'express';
import { viewerOf, type RegistryClient } from '../../auth/client.ts';
import { tokenAllows, type GrantedScope, type RepositoryAction } from '../../auth/standalone.ts';
import { RegistryError } from '../../errors.ts';
import type { Gateway } from '../../gateway.ts';

export interface LocalAccess {
  client: RegistryClient;
  /** Undefined only for a push to a repository that does not exist yet (created by the caller). */
  repositoryId: number | undefined;
  user?: string;
}

function grantsOf(client: RegistryClient): GrantedScope[] {
  return client.kind === 'user' && Array.isArray(client.grants) ? (client.grants as GrantedScope[]) : [];
}

/**
 * A grant is a ticket, not a title: it counts only while the user still owns
 * the repository or is mapped to it (a token issued before someone else
 * created the name grants nothing there).
 */
function entitled(gw: Gateway, user: string, name: string, repo = gw.db.repositoryInfo(name)): boolean {
  return !repo || repo.owner === user || gw.db.userMapped(user, name);
}

/** Can this request read `name`? (Used for mounts from another repository, too.) */
export function canPull(gw: Gateway, client: RegistryClient, name: string): boolean {
  const repo = gw.db.repositoryInfo(name);
  if (!repo) return false;
  if (!repo.authRequired) return true;
  if (gw.standalone) return client.kind === 'user' && tokenAllows(grantsOf(client), name, 'pull') && entitled(gw, client.name, name, repo);
  return gw.db.canRead(viewerOf(client), name);
}

export async function authorizeLocal(gw: Gateway, req: Request, res: Response, name: string, action: RepositoryAction): Promise<LocalAccess> {
  const client = gw.client(req);
  const index = gw.localStore().index;
  if (client.kind === 'invalid') {
    gw.challenge(req, res, `repository:${name}:${action === 'pull' ? 'pull' : 'pull,push'}`);
    throw new RegistryError('UNAUTHORIZED', 'the token is unknown or expired: log in again');
  }
  if (action === 'pull') {
    if (client.kind === 'host') await gw.learnHost(client.uuid);
    if (canPull(gw, client, name)) return { client, repositoryId: index.repositoryId(name) };
    // A pusher may probe a repository it is about to create: that is a 404 too.
    gw.challenge(req, res, `repository:${name}:pull`);
    throw new RegistryError('NAME_UNKNOWN', 'Repository name unknown', { name });
  }
  if (!gw.standalone) throw new RegistryError('UNSUPPORTED', 'pushes to this proxy are not supported yet: push to the main server');
  if (client.kind === 'user' && tokenAllows(grantsOf(client), name, action) && entitled(gw, client.name, name)) {
    return { client, repositoryId: index.repositoryId(name), user: client.name };
  }
  const scope = `repository:${name}:${action === 'delete' ? 'delete' : 'pull,push'}`;
  const origin = gw.origin(req);
  res.set('WWW-Authenticate', `Bearer realm="${origin}/v2/token",service="${new URL(origin).host}",scope="${scope}"${client.kind === 'user' ? ',error="insufficient_scope"' : ''}`);
  throw new RegistryError('UNAUTHORIZED', client.kind === 'user' ? `the token does not grant ${action} on ${name}` : 'authentication required');
}
