// Standalone mode (no foreman_url): the gateway is the token authority, as
// Docker's token specification has it, so that registry clients log in here
// as they would anywhere: Basic credentials are checked against the gateway's
// own users, the requested scopes are intersected with what the user may do,
// and an opaque token is returned whose sha256 is stored with the grants. A
// partial or empty grant is not an error; bad credentials are 401.
//
// This module knows nothing of SQL: the database layer implements
// StandaloneAccounts, and the registry routes check a stored token's grants
// with tokenAllows / tokenAllowsCatalog.
import { createHash, randomBytes } from 'node:crypto';
import { NAME } from '../oci/grammar.ts';
import type { PasswordHasher } from './passwords.ts';

export type RepositoryAction = 'pull' | 'push' | 'delete';
const REPOSITORY_ACTIONS: readonly RepositoryAction[] = ['pull', 'push', 'delete'];

/** A grant stored with a token. */
export type GrantedScope =
  | { type: 'repository'; name: string; actions: RepositoryAction[] }
  | { type: 'registry'; name: 'catalog'; actions: ['*'] };

/** A syntactically valid requested scope (`type:name:actions`); what it asks for may not exist. */
export interface RequestedScope {
  type: 'repository' | 'registry';
  name: string;
  /** Known actions only (`pull`, `push`, `delete`, `*`), deduplicated, in request order. */
  actions: Array<RepositoryAction | '*'>;
}

/** A repository as standalone access sees it. */
type RepositoryView = { authRequired: boolean; owner?: string };

/** What the token service needs of the database; implemented by the DB layer. */
export interface StandaloneAccounts {
  /** The stored hashPassword() result of a standalone user, or undefined when there is no such user. */
  passwordHash(user: string): string | undefined | Promise<string | undefined>;
  /**
   * A repository by name, or undefined when it does not exist (yet).
   * `authRequired: false` is a public repository; `owner` is the current name
   * of the user who created it by pushing (absent once that user was removed).
   */
  repository(name: string): RepositoryView | undefined | Promise<RepositoryView | undefined>;
  /** May this user create a repository of this (valid, not yet existing) name? See mayCreateRepository. */
  mayCreate(user: string, name: string): boolean | Promise<boolean>;
  /**
   * Is the user explicitly linked to the repository (a users↔repositories mapping)?
   * Must NOT be true merely because the repository is public: a mapping
   * allows push and delete, which a public repository does not give anyone.
   * Ownership is checked separately (through `repository().owner`), so
   * returning true for the owner as well is harmless.
   */
  userMapped(user: string, repo: string): boolean | Promise<boolean>;
  /**
   * Remember a token: its sha256 (hex), when it expires (epoch ms), whose it is
   * (undefined: an anonymous token) and what it grants. Never the token itself.
   */
  storeToken(checksum: string, expireAtMs: number, user: string | undefined, scopes: GrantedScope[]): void | Promise<void>;
}

/** User names of standalone accounts. */
export const USER_NAME = /^[a-zA-Z0-9._@-]{1,64}$/;

/** A repository name of the OCI grammar (what a push may create). */
export function validRepositoryName(name: string): boolean {
  return name.length <= 255 && NAME.test(name);
}

/**
 * Who may create a repository by pushing to a new name: its namespace (every
 * component but the last) must be the user's own name or start with it
 * (`alice/app`, `alice/team/app`), or be or start with a namespace an
 * administrator granted the user; a one-component name (`app`) only when
 * top-level names are open to everyone. So no user can claim a name under
 * another user's namespace.
 */
export function mayCreateRepository(user: string, name: string, granted: readonly string[], openTopLevel: boolean): boolean {
  const slash = name.lastIndexOf('/');
  if (slash < 0) return openTopLevel;
  const namespace = name.slice(0, slash);
  return [user, ...granted].some((ns) => namespace === ns || namespace.startsWith(`${ns}/`));
}

/** `req.query.scope` (absent, one string, or repeated) as a list of strings. */
export function scopeQuery(raw: unknown): string[] {
  const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  return list.filter((s): s is string => typeof s === 'string');
}

/**
 * Parse scopes of the form `type:name:action[,action...]`, several per string
 * separated by spaces. The type is what precedes the first ':' and the actions
 * what follows the last one; the name in between may contain ':' (a
 * `host:port/` prefix). Invalid scopes (unknown type, empty name, no known
 * action) are ignored, as are unknown actions within a scope.
 */
export function parseScopes(raw: string[]): RequestedScope[] {
  const out: RequestedScope[] = [];
  for (const text of raw) {
    for (const scope of text.split(/\s+/)) {
      const first = scope.indexOf(':');
      const last = scope.lastIndexOf(':');
      if (first <= 0 || last <= first + 1) continue;
      const type = scope.slice(0, first);
      const name = scope.slice(first + 1, last);
      if (type !== 'repository' && type !== 'registry') continue;
      const actions: RequestedScope['actions'] = [];
      for (const a of scope.slice(last + 1).split(',')) {
        if ((a === 'pull' || a === 'push' || a === 'delete' || a === '*') && !actions.includes(a)) actions.push(a);
      }
      if (actions.length > 0) out.push({ type, name, actions });
    }
  }
  return out;
}

export interface TokenRequest {
  /** The Authorization header of the token request (Basic credentials, or none). */
  authorization?: string;
  /** The `scope` query parameters, as sent (parsed here). */
  scopes: string[];
  /** The `account` query parameter: when given with credentials it must name the same user. */
  account?: string;
  /** The time of issue, epoch ms. */
  now: number;
  /** How long the token lives; less than 60 s (or not a number) becomes 60 s. */
  lifetimeSeconds: number;
}

export interface TokenBody {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
}

export type TokenResult = { status: 200; body: TokenBody; user?: string; granted: GrantedScope[] } | { status: 401; message: string };

/** Minimum token lifetime of the Docker token specification. */
export const MIN_TOKEN_LIFETIME = 60;

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Basic credentials, or undefined for no Authorization; null when the header is present but unusable. */
function basicCredentials(authorization: string | undefined): { user: string; password: string } | undefined | null {
  if (authorization === undefined || authorization.trim() === '') return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(authorization);
  if (!m) return null;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return null;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Are these a standalone user's credentials? An unknown user costs a hash too, as much as a wrong password. */
export async function authenticate(accounts: StandaloneAccounts, hasher: PasswordHasher, user: string, password: string): Promise<boolean> {
  const stored = USER_NAME.test(user) ? await accounts.passwordHash(user) : undefined;
  if (stored === undefined) return hasher.verifyUnknown(password);
  return hasher.verify(password, stored);
}

/**
 * The repository actions `user` (undefined: anonymous) may have on `name` now.
 * Anonymous: pull of a public repository. A user: pull of a public one; pull,
 * push and delete of one they own or are mapped to, or of one that does not
 * exist yet and that they may create (mayCreate: their first push creates it,
 * private and owned by them; a push session also reads, e.g. HEAD of the
 * blobs it may skip).
 *
 * A token's grants were decided when it was issued: a registry route should
 * also check this (e.g. someone else may have created the repository since a
 * grant given because it did not exist), and create a repository atomically
 * with its owner.
 */
export async function allowedActions(accounts: StandaloneAccounts, user: string | undefined, name: string): Promise<Set<RepositoryAction>> {
  const allowed = new Set<RepositoryAction>();
  if (!validRepositoryName(name)) return allowed;
  const repo = await accounts.repository(name);
  if (user === undefined) {
    if (repo && !repo.authRequired) allowed.add('pull');
    return allowed;
  }
  if (!repo) return (await accounts.mayCreate(user, name)) ? new Set(REPOSITORY_ACTIONS) : allowed;
  const owns = repo.owner !== undefined && repo.owner === user;
  const mapped = owns || (await accounts.userMapped(user, name));
  if (!repo.authRequired || mapped) allowed.add('pull');
  if (mapped) allowed.add('push').add('delete');
  return allowed;
}

/** The intersection of the requested scopes and what `user` may do, merged per repository. */
export async function grantScopes(accounts: StandaloneAccounts, user: string | undefined, requested: RequestedScope[]): Promise<GrantedScope[]> {
  const perRepository = new Map<string, Set<RepositoryAction>>();
  let catalog = false;
  for (const scope of requested) {
    if (scope.type === 'registry') {
      // Anyone, anonymous included: the catalog route lists only what the caller may read.
      if (scope.name === 'catalog' && scope.actions.includes('*')) catalog = true;
      continue;
    }
    const wanted = scope.actions.includes('*') ? REPOSITORY_ACTIONS : (scope.actions as RepositoryAction[]);
    const allowed = await allowedActions(accounts, user, scope.name);
    const granted = perRepository.get(scope.name) ?? new Set<RepositoryAction>();
    for (const a of wanted) if (allowed.has(a)) granted.add(a);
    if (granted.size > 0) perRepository.set(scope.name, granted);
  }
  const grants: GrantedScope[] = [...perRepository].map(([name, actions]) => ({
    type: 'repository' as const,
    name,
    actions: REPOSITORY_ACTIONS.filter((a) => actions.has(a)),
  }));
  if (catalog) grants.push({ type: 'registry', name: 'catalog', actions: ['*'] });
  return grants;
}

/**
 * GET /v2/token in standalone mode. Without credentials: an anonymous token
 * (pull of the requested public repositories, and the catalog). With Basic
 * credentials: checked by the hasher, 401 when wrong. The route adds
 * the WWW-Authenticate challenge to a 401 and sends the body as JSON.
 */
export async function issueToken(accounts: StandaloneAccounts, request: TokenRequest, hasher: PasswordHasher): Promise<TokenResult> {
  const credentials = basicCredentials(request.authorization);
  if (credentials === null) return { status: 401, message: 'the token endpoint accepts Basic credentials only' };
  let user: string | undefined;
  if (credentials) {
    if (request.account !== undefined && request.account !== '' && request.account !== credentials.user) {
      return { status: 401, message: `the account '${request.account.slice(0, 64)}' does not match the credentials` };
    }
    if (!(await authenticate(accounts, hasher, credentials.user, credentials.password))) return { status: 401, message: 'invalid username or password' };
    user = credentials.user;
  }
  const granted = await grantScopes(accounts, user, parseScopes(request.scopes));
  const lifetime = Number.isFinite(request.lifetimeSeconds) ? Math.max(MIN_TOKEN_LIFETIME, Math.floor(request.lifetimeSeconds)) : MIN_TOKEN_LIFETIME;
  const token = randomBytes(32).toString('base64url');
  await accounts.storeToken(sha256Hex(token), request.now + lifetime * 1000, user, granted);
  return {
    status: 200,
    body: { token, access_token: token, expires_in: lifetime, issued_at: new Date(request.now).toISOString() },
    ...(user === undefined ? {} : { user }),
    granted,
  };
}

/** Does a token with these grants allow `action` on repository `repo`? */
export function tokenAllows(grants: readonly GrantedScope[], repo: string, action: RepositoryAction): boolean {
  return grants.some((g) => g.type === 'repository' && g.name === repo && (g.actions as readonly string[]).includes(action));
}

/** Does a token with these grants allow listing the catalog (registry:catalog:*)? */
export function tokenAllowsCatalog(grants: readonly GrantedScope[]): boolean {
  return grants.some((g) => g.type === 'registry' && g.name === 'catalog');
}
