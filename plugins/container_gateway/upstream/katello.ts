// Katello's own APIs, as this proxy calls them: its registry API (token
// requests with the client's credentials, catalogs per user, per content host
// or for anyone) and the capsule-sync request. Replies come back as Katello
// sent them; the callers decide what a status means.
import { Readable } from 'node:stream';
import { readBounded, UpstreamError, type HttpUpstream } from './http-upstream.ts';

export interface KatelloReply {
  status: number;
  contentType: string;
  /** The body exactly as Katello sent it. */
  text: string;
  date?: string;
}

/**
 * Katello did not answer (refused, reset, timed out). Carries only a message
 * and a code, never the request: its headers hold the client's Authorization,
 * which must never reach a log line.
 */
export class KatelloUnreachable extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'KatelloUnreachable';
  }
}

/** A reply that means Katello cannot serve logins now (proxy errors, maintenance). */
export function katelloDown(reply: KatelloReply): boolean {
  return reply.status === 502 || reply.status === 503 || reply.status === 504;
}

/** Large enough for the catalog of a user who sees every repository of a big Katello. */
const REPLY_LIMIT = 32 * 1024 * 1024;

export class KatelloClient {
  /**
   * `registryApi`: Katello's registry API, ending with '/'; `foreman`: foreman_url, ending with '/';
   * `upstreamFor`: the connection pool of an origin (TLS chosen there, never with a client certificate:
   * Katello would take it for a content host's identity).
   */
  constructor(
    private readonly registryApi: string,
    private readonly foreman: string,
    private readonly upstreamFor: (origin: string) => HttpUpstream,
  ) {}

  private async send(method: 'GET' | 'POST', url: URL, headers: Record<string, string>, body?: Buffer): Promise<KatelloReply> {
    try {
      const res = await this.upstreamFor(url.origin).request({
        method,
        path: url.pathname + url.search,
        headers: { Accept: 'application/json', ...headers, ...(body ? { 'Content-Type': 'application/json', 'Content-Length': String(body.length) } : {}) },
        ...(body ? { body: Readable.from([body]) } : {}),
      });
      const { body: text, complete } = await readBounded(res, REPLY_LIMIT);
      if (!complete) throw new UpstreamError('reset', `${url.origin}: the answer broke off`);
      const date = res.headers.date;
      return { status: res.statusCode ?? 502, contentType: String(res.headers['content-type'] ?? 'application/json'), text: text.toString('utf8'), ...(date ? { date } : {}) };
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      throw new KatelloUnreachable(`the main server is unreachable: ${err.message}`, err.code ?? err.kind);
    }
  }

  private get(path: string, params: URLSearchParams, headers: Record<string, string>): Promise<KatelloReply> {
    const url = new URL(path, this.registryApi);
    url.search = params.toString();
    return this.send('GET', url, headers);
  }

  /** GET <katello registry>token with only scope and account, and the client's Authorization. */
  token(scopes: string[], account: string | undefined, authorization: string | undefined): Promise<KatelloReply> {
    const params = new URLSearchParams();
    for (const scope of scopes) params.append('scope', scope);
    if (account) params.set('account', account);
    return this.get('token', params, authorization ? { Authorization: authorization } : {});
  }

  userCatalog(account: string, authorization: string | undefined): Promise<KatelloReply> {
    return this.get('_catalog', new URLSearchParams({ account }), authorization ? { Authorization: authorization } : {});
  }

  /** Without credentials: the repositories in lifecycle environments with unauthenticated pull. */
  anonymousCatalog(): Promise<KatelloReply> {
    return this.get('_catalog', new URLSearchParams(), {});
  }

  hostCatalog(uuid: string): Promise<KatelloReply> {
    return this.get('_catalog', new URLSearchParams(), { HostUUID: uuid });
  }

  /** Ask Katello to sync a capsule's content, as `authorization` (this proxy's own account). */
  capsuleSync(capsuleId: number, authorization: string | undefined): Promise<KatelloReply> {
    return this.send('POST', new URL(`katello/api/capsules/${capsuleId}/content/sync`, this.foreman), authorization ? { Authorization: authorization } : {}, Buffer.from('{}'));
  }
}

export function repositoriesOf(reply: KatelloReply): string[] {
  const parsed = JSON.parse(reply.text) as { repositories?: unknown };
  return Array.isArray(parsed.repositories) ? parsed.repositories.filter((r): r is string => typeof r === 'string') : [];
}
