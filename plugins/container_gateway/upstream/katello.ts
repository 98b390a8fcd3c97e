// Calls to the main server (Katello) of katello-api.md §7: token requests with
// the client's credentials, and catalogs per user or per content host.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import axios, { type AxiosInstance } from 'axios';

export interface KatelloReply {
  status: number;
  contentType: string;
  /** The body exactly as Katello sent it. */
  text: string;
  date?: string;
}

/**
 * Katello did not answer (refused, reset, timed out). Carries only a message
 * and a code: axios errors hold the request's headers, including the
 * client's Authorization, and must never reach a log line.
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

export class KatelloClient {
  private readonly http: AxiosInstance;
  /** TLS towards Katello (system roots plus foreman_ssl_ca), for its other APIs. */
  readonly agent: https.Agent;

  /** `base`: Katello's registry API (Gateway.mainUrls.katelloRegistry), ending with '/'. */
  constructor(base: string, opts: { ca?: string; timeoutMs: number }) {
    // No client certificate: Katello would take it for a content host's identity.
    this.agent = new https.Agent({ keepAlive: true, ...(opts.ca ? { ca: [...rootCertificates, readFileSync(opts.ca, 'utf8')] } : {}) });
    this.http = axios.create({
      baseURL: base,
      timeout: opts.timeoutMs,
      httpsAgent: this.agent,
      validateStatus: () => true,
      responseType: 'text',
      transformResponse: (d) => d,
      proxy: false,
      maxRedirects: 0,
    });
  }

  private async get(path: string, params: URLSearchParams, headers: Record<string, string>): Promise<KatelloReply> {
    let res;
    try {
      res = await this.http.get(path, { params, headers: { Accept: 'application/json', ...headers } });
    } catch (err) {
      const { message, code } = err as { message?: unknown; code?: unknown };
      throw new KatelloUnreachable(`the main server is unreachable: ${String(message ?? 'no answer')}`, typeof code === 'string' ? code : undefined);
    }
    return { status: res.status, contentType: String(res.headers['content-type'] ?? 'application/json'), text: String(res.data ?? ''), date: res.headers.date as string | undefined };
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

  close(): void {
    this.agent.destroy();
  }

  hostCatalog(uuid: string): Promise<KatelloReply> {
    return this.get('_catalog', new URLSearchParams(), { HostUUID: uuid });
  }
}

export function repositoriesOf(reply: KatelloReply): string[] {
  const parsed = JSON.parse(reply.text) as { repositories?: unknown };
  return Array.isArray(parsed.repositories) ? parsed.repositories.filter((r): r is string => typeof r === 'string') : [];
}
