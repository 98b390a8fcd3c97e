// Who may do what on the embedded store. Standalone mode: the grants of a
// token this gateway issued (pull, push, delete per repository), re-checked
// against who owns the repository now. With a main server: reads follow the
// database rules of the pulp path; writes are the main server's business.
//
// Refusals answer as registries do (registry-clients.md §4): no credentials →
// 401 with a challenge naming the repository and the action; a user or host
// that may not read the repository → 404 NAME_UNKNOWN, whether it is private
// or absent; a token that may read but lacks the action to write (push,
// delete) → 401 insufficient_scope, so that the client asks for a wider token.
import type { Request, Response } from 'express';
import { viewerOf, type RegistryClient } from '../../auth/client.ts';
import { allowedActions, tokenAllows, type GrantedScope, type RepositoryAction } from '../../auth/standalone.ts';
import { RegistryError } from '../../oci/errors.ts';
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
 * What the user may do on `name` now. A grant is a ticket, not a title: it
 * counts only while this says so too (a token issued before someone else
 * created the name grants nothing there).
 */
function allowedNow(gw: Gateway, user: string, name: string): Set<RepositoryAction> {
  return allowedActions(gw.standaloneAccounts(), user, name);
}

/** Can this request read `name`? (Used for mounts from another repository, too.) */
export function canPull(gw: Gateway, client: RegistryClient, name: string): boolean {
  const repo = gw.db.repositoryInfo(name);
  if (!repo) return false;
  if (!repo.authRequired && !repo.pending) return true;
  if (gw.standalone) return client.kind === 'user' && tokenAllows(grantsOf(client), name, 'pull') && allowedNow(gw, client.name, name).has('pull');
  return gw.db.canRead(viewerOf(client), name);
}

function scopeOf(name: string, action: RepositoryAction): string {
  return `repository:${name}:${action === 'pull' ? 'pull' : action === 'push' ? 'pull,push' : 'delete'}`;
}

/** 401: the token may be widened (the user may do `action` but the token does not grant it). */
function insufficientScope(gw: Gateway, req: Request, res: Response, name: string, action: RepositoryAction): never {
  const origin = gw.origin(req);
  res.set('WWW-Authenticate', `Bearer realm="${origin}/v2/token",service="${new URL(origin).host}",scope="${scopeOf(name, action)}",error="insufficient_scope"`);
  throw new RegistryError('UNAUTHORIZED', `the token does not grant ${action} on ${name}`);
}

/** A refusal: 401 + challenge without credentials, 404 to whoever may not read, else insufficient scope. */
function refuse(gw: Gateway, req: Request, res: Response, client: RegistryClient, name: string, action: RepositoryAction): never {
  if (client.kind === 'anonymous' || client.kind === 'invalid') {
    gw.challenge(req, res, scopeOf(name, action));
    throw new RegistryError('UNAUTHORIZED', client.kind === 'invalid' ? 'the token is unknown or expired: log in again' : 'authentication required', { name });
  }
  if (action !== 'pull') {
    // The user may do it but the token does not say so; or the repository is readable but not
    // writable by this client (someone else's public repository, a host): a wider token, or none.
    const allowed = client.kind === 'user' && gw.standalone ? allowedNow(gw, client.name, name) : new Set<RepositoryAction>();
    if (allowed.has(action) || allowed.has('pull') || canPull(gw, client, name)) insufficientScope(gw, req, res, name, action);
  }
  // Whoever may not read it: private and absent look the same.
  gw.challenge(req, res, scopeOf(name, action));
  throw new RegistryError('NAME_UNKNOWN', 'Repository name unknown', { name });
}

export async function authorizeLocal(gw: Gateway, req: Request, res: Response, name: string, action: RepositoryAction): Promise<LocalAccess> {
  const client = gw.client(req);
  const index = gw.localStore().index;
  if (client.kind === 'invalid') refuse(gw, req, res, client, name, action);
  if (action === 'pull') {
    if (client.kind === 'host') await gw.learnHost(client.uuid);
    if (canPull(gw, client, name)) return { client, repositoryId: index.repositoryId(name) };
    // Includes a pusher probing a repository it is about to create: 404 (what clients expect).
    refuse(gw, req, res, client, name, action);
  }
  if (!gw.standalone) throw new RegistryError('UNSUPPORTED', 'pushes to this proxy are not supported yet: push to the main server');
  if (client.kind === 'user' && tokenAllows(grantsOf(client), name, action) && allowedNow(gw, client.name, name).has(action)) {
    return { client, repositoryId: index.repositoryId(name), user: client.name };
  }
  refuse(gw, req, res, client, name, action);
}
