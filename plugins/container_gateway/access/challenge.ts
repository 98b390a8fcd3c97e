// The one Bearer challenge of this registry: every refusal that a token could
// cure names the token endpoint here (never the main server's), the service,
// and the scope the client should ask for.
import type { Request, Response } from 'express';
import type { RepositoryAction } from './access.ts';

/** The client-facing origin (registry_url, else the request's own), for token realms, Locations and Links. */
export function clientOrigin(registryUrl: string | undefined, req: Request): string {
  return (registryUrl ?? `${req.protocol}://${req.get('host') ?? 'localhost'}`).replace(/\/$/, '');
}

/** The scope a client needs for an action (a push reads too). */
export function scopeOf(name: string, action: RepositoryAction): string {
  return `repository:${name}:${action === 'pull' ? 'pull' : action === 'push' ? 'pull,push' : 'delete'}`;
}

/** Set WWW-Authenticate; `insufficient` marks a token that may be widened. */
export function setChallenge(res: Response, origin: string, scope?: string, insufficient = false): void {
  const service = new URL(origin).host;
  res.set('WWW-Authenticate', `Bearer realm="${origin}/v2/token",service="${service}"${scope ? `,scope="${scope}"` : ''}${insufficient ? ',error="insufficient_scope"' : ''}`);
}
