// The one place a failure of a registry request becomes its answer: our own
// OCI errors as they are, an unreachable main server as 503 with Retry-After,
// a failing upstream as 502/504 by its kind, a client that went away as
// nothing at all, anything else as a logged 500.
import type { Request, Response } from 'express';
import { RegistryError, sendOciError } from '../oci/errors.ts';
import { UpstreamError } from '../upstream/http-upstream.ts';
import { KatelloUnreachable } from '../upstream/katello.ts';
import { failedUpstream } from '../metrics.ts';
import { UNREACHABLE_RETRY_AFTER } from '../auth/katello-login.ts';

export function ociFailure(req: Request, res: Response, err: unknown): void {
  if (err instanceof RegistryError) return sendOciError(res, err);
  if (err instanceof KatelloUnreachable) {
    req.log.warn(`${req.method} ${req.path}: ${err.message}`);
    failedUpstream(res, 'katello_unreachable');
    res.set('Retry-After', String(UNREACHABLE_RETRY_AFTER));
    return sendOciError(res, new RegistryError('UNAVAILABLE', 'the main server is unreachable: try again later'));
  }
  if (err instanceof UpstreamError) {
    req.log.warn(`content backend: ${err.message}`);
    if (err.kind === 'aborted') return void res.destroy();
    failedUpstream(res, err.kind);
    return sendOciError(res, new RegistryError('UNAVAILABLE', `the content backend failed: ${err.message}`, undefined, err.kind === 'timeout' ? 504 : 502));
  }
  req.log.error({ err }, `${req.method} ${req.originalUrl} failed: ${(err as Error).message}`);
  sendOciError(res, new RegistryError('UNKNOWN', 'internal error'));
}
