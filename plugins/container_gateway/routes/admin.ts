// The admin API of standalone mode (no foreman_url), which `proxyctl users`
// and `proxyctl repos` call; behind trusted host + client certificate, like
// the management API.
//
// Removing a user leaves its repositories as they are (content, visibility,
// mapped users) but ownerless: `orphaned` lists them. Nobody can push to them
// or read a private one except mapped users, and a user added again under the
// same name gets none of them (owners are users, not names). A namespace NS
// (e.g. `team` or `org/team`) lets the user create repositories `NS/...`.
//
// The password is hashed here (scrypt, auth/passwords.ts): only its hash is
// given to AdminAccounts. Repository NAME may contain '/' (sent as is or
// percent-encoded).
import express, { type Request, type RequestHandler, type Router } from 'express';
import { badRequest, conflict, jsonErrors, jsonObjectBody, notFound, quoteValue as quote, serviceUnavailable } from '../../../lib/plugins/api.ts';
import { HashingBusy, PasswordHasher } from '../auth/passwords.ts';
import { USER_NAME, validRepositoryName } from '../auth/standalone.ts';

export interface AdminRepository {
  name: string;
  /** false: private (auth_required), readable by its owner and mapped users only. */
  public: boolean;
  /** The user who created it by pushing, if any. */
  owner?: string;
}

/** What the admin API needs of the database; implemented by the DB layer. Results may be promises. */
export interface AdminAccounts {
  /** Standalone users, sorted. */
  listUsers(): string[] | Promise<string[]>;
  addUser(name: string, passwordHash: string): 'created' | 'exists' | Promise<'created' | 'exists'>;
  /**
   * Undefined when there is no such user, else the repositories it owned,
   * which stay (ownerless). Removing a user must also revoke its tokens.
   */
  removeUser(name: string): { orphaned: string[] } | undefined | Promise<{ orphaned: string[] } | undefined>;
  /** The namespaces granted to a user; undefined when there is no such user. */
  namespaces(user: string): string[] | undefined | Promise<string[] | undefined>;
  /** false when there is no such user. */
  grantNamespace(user: string, namespace: string): boolean | Promise<boolean>;
  /** false when the user did not have that namespace. */
  revokeNamespace(user: string, namespace: string): boolean | Promise<boolean>;
  /** Every repository, sorted by name. */
  listRepositories(): AdminRepository[] | Promise<AdminRepository[]>;
  /** false when there is no such repository. */
  setPublic(name: string, isPublic: boolean): boolean | Promise<boolean>;
}

export interface AdminDeps {
  /** The daemon's trusted host + client certificate check (ctx.auth.trustedClient). */
  trustedClient: RequestHandler;
  accounts: AdminAccounts;
  /** The gateway's password hasher (its bounded queue shared with logins); else one of this router's own. */
  hasher?: PasswordHasher;
}

/** Largest admin request body. */
export const MAX_ADMIN_BODY = 16 * 1024;
/** Longest password accepted (bytes of UTF-8). */
export const MAX_PASSWORD_BYTES = 1024;

/** The JSON object body of a request, with exactly the keys allowed. */
export function jsonObject(req: Request, keys: Record<string, 'string' | 'boolean'>): Record<string, unknown> {
  const obj = jsonObjectBody(req);
  for (const key of Object.keys(obj)) if (!(key in keys)) throw badRequest(`unknown key ${quote(key)} (expected ${Object.keys(keys).join(', ')})`);
  for (const [key, kind] of Object.entries(keys)) {
    if (typeof obj[key] !== kind) throw badRequest(`'${key}' must be a ${kind}`);
  }
  return obj;
}

export function userName(raw: unknown): string {
  if (typeof raw !== 'string' || !USER_NAME.test(raw)) {
    throw badRequest(`invalid user name ${quote(String(raw))}: 1 to 64 of letters, digits, '.', '_', '@' and '-'`);
  }
  return raw;
}

export function repositoryName(raw: unknown): string {
  if (typeof raw !== 'string' || !validRepositoryName(raw)) throw badRequest(`invalid repository name ${quote(String(raw))}`);
  return raw;
}

/** NAME and NS of /admin/users/NAME/namespaces/NS (NS: a repository name's grammar, e.g. 'team' or 'org/team'). */
function namespaceParams(req: Request): [string, string] {
  const params = req.params as Record<string, string | undefined>;
  const name = userName(params[0]);
  const raw = params[1] ?? '';
  if (!validRepositoryName(raw)) throw badRequest(`invalid namespace ${quote(raw)}: a repository name such as 'team' or 'org/team'`);
  return [name, raw];
}

/** An audit line in the daemon's log (there is no request logger in a bare app). */
export function audit(req: Request, message: string): void {
  (req as { log?: { info(msg: string): void } }).log?.info(message);
}

export function adminRouter(deps: AdminDeps): Router {
  const { accounts, trustedClient } = deps;
  const hasher = deps.hasher ?? new PasswordHasher();
  const router = express.Router();
  const body = express.text({ type: () => true, limit: MAX_ADMIN_BODY });

  router.get('/admin/users', trustedClient, async (_req, res) => {
    res.json({ users: await accounts.listUsers() });
  });

  router.post('/admin/users', trustedClient, body, async (req, res) => {
    const obj = jsonObject(req, { name: 'string', password: 'string' });
    const name = userName(obj.name);
    const password = obj.password as string;
    if (password === '') throw badRequest('the password must not be empty');
    if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) throw badRequest(`the password is longer than ${MAX_PASSWORD_BYTES} bytes`);
    // A login flood may fill the hashing queue: say so instead of failing with 500.
    const hash = await hasher.hash(password).catch((err: unknown) => {
      throw err instanceof HashingBusy ? serviceUnavailable('password hashing is busy: try again shortly') : err;
    });
    const outcome = await accounts.addUser(name, hash);
    if (outcome === 'exists') throw conflict(`user '${name}' already exists`);
    audit(req, `standalone user '${name}' added`);
    res.status(201).json({ user: name });
  });

  router.delete('/admin/users/:name', trustedClient, async (req, res) => {
    const name = userName(req.params.name);
    const removed = await accounts.removeUser(name);
    if (!removed) throw notFound(`user '${name}' not found`);
    audit(req, `standalone user '${name}' removed; ${removed.orphaned.length} repositories left without owner`);
    res.json({ user: name, removed: true, orphaned: removed.orphaned });
  });

  router.get('/admin/users/:name/namespaces', trustedClient, async (req, res) => {
    const name = userName(req.params.name);
    const namespaces = await accounts.namespaces(name);
    if (!namespaces) throw notFound(`user '${name}' not found`);
    res.json({ user: name, namespaces });
  });

  // A regular expression: namespaces may contain '/'.
  router.put(/^\/admin\/users\/([^/]+)\/namespaces\/(.+?)\/?$/, trustedClient, async (req, res) => {
    const [name, namespace] = namespaceParams(req);
    if (!(await accounts.grantNamespace(name, namespace))) throw notFound(`user '${name}' not found`);
    audit(req, `namespace '${namespace}' granted to standalone user '${name}'`);
    res.json({ user: name, namespace, granted: true });
  });

  router.delete(/^\/admin\/users\/([^/]+)\/namespaces\/(.+?)\/?$/, trustedClient, async (req, res) => {
    const [name, namespace] = namespaceParams(req);
    if (!(await accounts.revokeNamespace(name, namespace))) throw notFound(`user '${name}' has no namespace '${namespace}'`);
    audit(req, `namespace '${namespace}' taken back from standalone user '${name}'`);
    res.json({ user: name, namespace, granted: false });
  });

  router.get('/admin/repositories', trustedClient, async (_req, res) => {
    const repositories = await accounts.listRepositories();
    res.json({ repositories: repositories.map((r) => ({ name: r.name, public: r.public, ...(r.owner === undefined ? {} : { owner: r.owner }) })) });
  });

  // A regular expression: repository names contain '/'.
  router.put(/^\/admin\/repositories\/(.+)\/visibility\/?$/, trustedClient, body, async (req, res) => {
    const raw = (req.params as Record<string, string | undefined>)[0];
    const name = repositoryName(raw);
    const obj = jsonObject(req, { public: 'boolean' });
    const isPublic = obj.public as boolean;
    if (!(await accounts.setPublic(name, isPublic))) throw notFound(`repository '${name}' not found`);
    audit(req, `repository '${name}' made ${isPublic ? 'public' : 'private'}`);
    res.json({ name, public: isPublic });
  });

  router.use('/admin', jsonErrors);
  return router;
}
