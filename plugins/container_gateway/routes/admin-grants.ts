// The admin routes of `proxyctl users passwd`, `repos delete|grant|revoke`,
// `tags list` and `tokens revoke`; trusted host + client certificate, like the
// other admin routes, JSON errors.
//
// A grant maps a standalone user to a repository: that user may read it while
// it is private (the mapping `repos set-private` speaks of). In smart-proxy
// mode Katello's mappings replace the whole table, so grants and deletions are
// refused there (409): they would not last. Deleting a repository drops its
// tags, manifests, blob links, uploads and grants at once; the blobs nothing
// else links are reclaimed by the next gc. Revoking tokens deletes every
// stored token of the user: the next request bearing one is challenged.
// Changing a password leaves the user's tokens valid (revoke them apart).
import express, { type Request, type RequestHandler, type Router } from 'express';
import { badRequest, conflict, jsonErrors, notFound, serviceUnavailable } from '../../../lib/plugins/api.ts';
import { HashingBusy, PasswordHasher } from '../auth/passwords.ts';
import type { GatewayDb } from '../db/database.ts';
import { audit, jsonObject, MAX_ADMIN_BODY, MAX_PASSWORD_BYTES, repositoryName, userName } from './admin.ts';

export interface GrantsDeps {
  trustedClient: RequestHandler;
  db: GatewayDb;
  /** false in smart-proxy mode: Katello owns repositories and mappings. */
  standalone: boolean;
  /** false with content_backend: pulp, where Pulp keeps the tags (none are stored here). */
  storesTags: boolean;
  /** The gateway's password hasher (its queue shared with logins). */
  hasher: PasswordHasher;
  /** A repository's content changed (caches of its manifests and tags are dropped). */
  contentChanged: (name: string) => Promise<void>;
}

const param = (req: Request, i: number) => (req.params as Record<string, string | undefined>)[i];

export function grantsAdminRouter(deps: GrantsDeps): Router {
  const { db, trustedClient } = deps;
  const router = express.Router();
  const body = express.text({ type: () => true, limit: MAX_ADMIN_BODY });
  const standaloneOnly = (what: string) => {
    if (!deps.standalone) throw conflict(`${what} is for standalone mode only: with foreman_url, Katello's repository lists and mappings replace it`);
  };

  router.put('/admin/users/:name/password', trustedClient, body, async (req, res) => {
    const name = userName(req.params.name);
    const password = jsonObject(req, { password: 'string' }).password as string;
    if (password === '') throw badRequest('the password must not be empty');
    if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) throw badRequest(`the password is longer than ${MAX_PASSWORD_BYTES} bytes`);
    const hash = await deps.hasher.hash(password).catch((err: unknown) => {
      throw err instanceof HashingBusy ? serviceUnavailable('password hashing is busy: try again shortly') : err;
    });
    if (!(await db.setPassword(name, hash))) throw notFound(`user '${name}' not found`);
    audit(req, `password of standalone user '${name}' changed`);
    res.json({ user: name, password_changed: true });
  });

  router.delete('/admin/users/:name/tokens', trustedClient, async (req, res) => {
    const name = userName(req.params.name);
    const revoked = await db.revokeTokens(name);
    if (revoked === undefined) throw notFound(`user '${name}' not found`);
    audit(req, `${revoked} tokens of user '${name}' revoked`);
    res.json({ user: name, revoked });
  });

  router.get('/admin/users/:name/repositories', trustedClient, async (req, res) => {
    const name = userName(req.params.name);
    const repositories = await db.grantedRepositories(name);
    if (!repositories) throw notFound(`user '${name}' not found`);
    res.json({ user: name, repositories });
  });

  // Regular expressions: repository names contain '/'.
  const grantPath = /^\/admin\/repositories\/(.+)\/users\/([^/]+)\/?$/;
  router.put(grantPath, trustedClient, async (req, res) => {
    standaloneOnly('granting a repository');
    const repo = repositoryName(param(req, 0));
    const user = userName(param(req, 1));
    const outcome = await db.grantRepository(user, repo);
    if (outcome === 'no user') throw notFound(`user '${user}' not found`);
    if (outcome === 'no repository') throw notFound(`repository '${repo}' not found`);
    audit(req, `repository '${repo}' granted to user '${user}'`);
    res.json({ repository: repo, user, granted: true });
  });

  router.delete(grantPath, trustedClient, async (req, res) => {
    standaloneOnly('revoking a repository');
    const repo = repositoryName(param(req, 0));
    const user = userName(param(req, 1));
    if (!(await db.revokeRepository(user, repo))) throw notFound(`user '${user}' has no grant on repository '${repo}'`);
    audit(req, `repository '${repo}' taken back from user '${user}'`);
    res.json({ repository: repo, user, granted: false });
  });

  router.get(/^\/admin\/repositories\/(.+)\/tags\/?$/, trustedClient, async (req, res) => {
    const repo = repositoryName(param(req, 0));
    if (!deps.storesTags) throw conflict('tags are listed from the embedded store: with content_backend pulp, Pulp keeps them');
    const tags = await db.tagsOf(repo);
    if (!tags) throw notFound(`repository '${repo}' not found`);
    res.json({ repository: repo, tags });
  });

  router.delete(/^\/admin\/repositories\/(.+?)\/?$/, trustedClient, async (req, res) => {
    standaloneOnly('deleting a repository');
    const repo = repositoryName(param(req, 0));
    if (!(await db.deleteRepository(repo))) throw notFound(`repository '${repo}' not found`);
    await deps.contentChanged(repo);
    audit(req, `repository '${repo}' deleted (its blobs are reclaimed by gc)`);
    res.json({ repository: repo, deleted: true });
  });

  router.use('/admin', jsonErrors);
  return router;
}
