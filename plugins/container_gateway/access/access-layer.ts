// Who may do what, decided once per registry request before any content is
// touched, the same way for every content backend. Standalone mode: the
// grants of a token this gateway issued, re-checked against who owns the
// repository now (a grant is a ticket, not a title). Smart-proxy mode: reads
// follow the lists Katello keeps in the database; writes, and the probes a
// client makes before a push, are the main server's to decide, so nothing
// here refuses them.
//
// Refusals answer as registries do: no credentials → 401 with a challenge
// naming the repository and the action; a user or host that may not read the
// repository → 404 NAME_UNKNOWN, whether it is private or absent; a token
// that may read but lacks the action to write → 401 insufficient_scope, so
// that the client asks for a wider token.
import type { Request, Response } from 'express';
import type { ClientIdentity, Logger } from '../../../lib/plugins/api.ts';
import { identifyClient, viewerOf, type RegistryClient } from '../auth/client.ts';
import { allowedActions, mayCreateRepository, tokenAllows, type GrantedScope, type StandaloneAccounts } from '../auth/standalone.ts';
import type { GatewayDb } from '../db/database.ts';
import { RegistryError } from '../oci/errors.ts';
import type { GatewaySettings } from '../settings.ts';
import type { KatelloClient } from '../upstream/katello.ts';
import type { Access, RepositoryAction } from './access.ts';
import { clientOrigin, scopeOf, setChallenge } from './challenge.ts';
import { HostCatalogs } from './host-catalogs.ts';

/** What a route needs: an action, or `read` (a pull, or a push probe: a HEAD by a client whose token asked for push). */
export type Requirement = 'read' | RepositoryAction;

export interface AccessOptions {
  db: GatewayDb;
  settings: GatewaySettings;
  /** Katello of the main server; undefined in standalone mode. */
  katello: KatelloClient | undefined;
  /** The daemon's verified view of the connection (certificate, address). */
  identity: (req: Request) => ClientIdentity;
  /** The repository's id where content is kept (undefined: it does not exist yet). */
  repositoryId: (name: string) => Promise<number | undefined>;
  logger: Logger;
}

type RepositoryRow = Awaited<ReturnType<GatewayDb['repositoryInfo']>>;

/** Repository rows read within one access decision. */
interface RepositoryLookup {
  get(name: string): Promise<RepositoryRow | undefined>;
  /** The row if this decision read it already (undefined: not read, or no such listed repository). */
  known(name: string): Promise<RepositoryRow | undefined> | undefined;
}

function grantsOf(client: RegistryClient): GrantedScope[] {
  return client.kind === 'user' && Array.isArray(client.grants) ? (client.grants as GrantedScope[]) : [];
}

export class AccessLayer {
  /** No main server: users, tokens and repositories are this gateway's own. */
  readonly standalone: boolean;
  private readonly clients = new WeakMap<Request, Promise<RegistryClient>>();
  private readonly hosts: HostCatalogs;
  private readonly db: GatewayDb;
  private readonly settings: GatewaySettings;

  constructor(private readonly options: AccessOptions) {
    this.db = options.db;
    this.settings = options.settings;
    this.standalone = !options.katello;
    this.hosts = new HostCatalogs(options.db, options.katello, options.settings.host_lookup_interval * 1000, options.logger);
  }

  /** Who is calling: identified once per request, however often it is asked. */
  client(req: Request): Promise<RegistryClient> {
    let client = this.clients.get(req);
    if (!client) {
      client = identifyClient(req, this.options.identity(req), this.db, this.settings.trusted_proxies);
      this.clients.set(req, client);
    }
    return client;
  }

  origin(req: Request): string {
    return clientOrigin(this.settings.registry_url, req);
  }

  /** The Bearer challenge (401 and hidden-repository answers carry it). */
  challenge(req: Request, res: Response, scope?: string): void {
    setChallenge(res, this.origin(req), scope);
  }

  learnHost(uuid: string): Promise<void> {
    return this.hosts.learn(uuid);
  }

  /** Standalone mode's users, repositories and grants, as the token service and these checks read them. */
  standaloneAccounts(): StandaloneAccounts {
    const db = this.db;
    return {
      passwordHash: (user) => db.passwordHash(user),
      repository: (name) => db.repositoryInfo(name),
      userMapped: (user, repo) => db.userMapped(user, repo),
      mayCreate: async (user, name) => mayCreateRepository(user, name, await db.namespacesOf(user), this.settings.open_top_level_names),
      storeToken: async (checksum, expireAtMs, user, scopes) => {
        // Anonymous tokens are not stored: the anonymous one is `unauthenticated`.
        if (user !== undefined) await db.storeToken(checksum, expireAtMs, user, scopes);
      },
    };
  }

  /** Can this client read `name`? (Also asked of the source of a cross-repository mount.) */
  async canPull(client: RegistryClient, name: string, repositories = this.repositoryLookup()): Promise<boolean> {
    const repo = await repositories.get(name);
    if (!repo) return false;
    if (!repo.authRequired && !repo.pending) return true;
    if (this.standalone && client.kind !== 'host') {
      return client.kind === 'user' && tokenAllows(grantsOf(client), name, 'pull') && (await this.allowedNow(client.name, name, repositories)).has('pull');
    }
    return this.db.canRead(viewerOf(client), name);
  }

  /**
   * The access middleware of the registry routes: decides `need` on `name`
   * for this request, throws the refusal, or records the Access on the
   * response (res.locals.access) and returns it.
   */
  async authorize(req: Request, res: Response, name: string, need: Requirement): Promise<Access> {
    const access = await this.decide(req, res, name, need);
    res.locals.access = access;
    return access;
  }

  private async decide(req: Request, res: Response, name: string, need: Requirement): Promise<Access> {
    const client = await this.client(req);
    const action: RepositoryAction = need === 'read' ? (this.pushProbe(req, client, name) ? 'push' : 'pull') : need;
    const repositories = this.repositoryLookup();
    const granted = async (user?: string): Promise<Access> => ({
      client,
      name,
      action,
      deferred: !this.standalone && action !== 'pull',
      // The row the check just read has the id (a pull by a user: one query fewer on every request).
      repositoryId: (await repositories.known(name))?.id ?? (await this.options.repositoryId(name)),
      ...(user === undefined ? {} : { user }),
      canPull: (other) => this.canPull(client, other),
    });
    if (!this.standalone && action !== 'pull') return granted();
    if (client.kind === 'invalid') return this.refuse(req, res, client, name, action);
    if (action === 'pull') {
      if (client.kind === 'host') await this.learnHost(client.uuid);
      if (await this.canPull(client, name, repositories)) return granted();
      // Includes a pusher probing a repository it is about to create: 404 (what clients expect).
      return this.refuse(req, res, client, name, action);
    }
    if (client.kind === 'user' && tokenAllows(grantsOf(client), name, action) && (await this.allowedNow(client.name, name, repositories)).has(action)) return granted(client.name);
    return this.refuse(req, res, client, name, action);
  }

  /**
   * Is this HEAD a probe before a push to the main server? Clients ask for a
   * token with push scope before pushing; the proxy remembers the scopes a
   * main-server token was asked for (the main server decides what they grant).
   */
  private pushProbe(req: Request, client: RegistryClient, name: string): boolean {
    return req.method === 'HEAD' && !this.standalone && client.kind === 'user' && tokenAllows(grantsOf(client), name, 'push');
  }

  /** What the user may do on `name` now: a token issued before someone else created the name grants nothing there. */
  private allowedNow(user: string, name: string, repositories: RepositoryLookup): Promise<Set<RepositoryAction>> {
    return allowedActions({ ...this.standaloneAccounts(), repository: (n) => repositories.get(n) }, user, name);
  }

  /**
   * The repositories one decision reads, each read once: the read check, the
   * grant check and the repository's id all want the same row, and on a
   * database server each read is a round trip.
   */
  private repositoryLookup(): RepositoryLookup {
    const read = new Map<string, Promise<RepositoryRow | undefined>>();
    return {
      get: (name) => {
        let row = read.get(name);
        if (!row) read.set(name, (row = this.db.repositoryInfo(name)));
        return row;
      },
      known: (name) => read.get(name),
    };
  }

  private async refuse(req: Request, res: Response, client: RegistryClient, name: string, action: RepositoryAction): Promise<never> {
    const origin = this.origin(req);
    if (client.kind === 'anonymous' || client.kind === 'invalid') {
      setChallenge(res, origin, scopeOf(name, action));
      throw new RegistryError('UNAUTHORIZED', client.kind === 'invalid' ? 'the token is unknown or expired: log in again' : 'authentication required', { name });
    }
    if (action !== 'pull') {
      // The user may do it but the token does not say so; or the repository is readable but not
      // writable by this client (someone else's public repository, a host): a wider token, or none.
      const allowed = client.kind === 'user' && this.standalone ? await this.allowedNow(client.name, name, this.repositoryLookup()) : new Set<RepositoryAction>();
      if (allowed.has(action) || allowed.has('pull') || (await this.canPull(client, name))) {
        setChallenge(res, origin, scopeOf(name, action), true);
        throw new RegistryError('UNAUTHORIZED', `the token does not grant ${action} on ${name}`);
      }
    }
    // Whoever may not read it: private and absent look the same.
    setChallenge(res, origin, scopeOf(name, action));
    throw new RegistryError('NAME_UNKNOWN', 'Repository name unknown', { name });
  }
}
