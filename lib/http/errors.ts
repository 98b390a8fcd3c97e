// The one error form of the daemon's own routes (everything but the registry,
// which answers in the OCI form): {"error": "..."} with the status. A route
// throws an HttpError; a body that cannot be read (too large, unknown charset,
// cut off) is the client's error too; anything else is a 500 that is logged
// here and says nothing of the inside to the client.
import type { ErrorRequestHandler, RequestHandler, Response } from 'express';
import type { Logger } from '../logging/logger.ts';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** More fields of the JSON answer, beside `error` (e.g. the `id` of what conflicts). */
    readonly extra: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export const badRequest = (message: string): HttpError => new HttpError(400, message);
export const notFound = (message: string): HttpError => new HttpError(404, message);
export const conflict = (message: string, extra?: Record<string, unknown>): HttpError => new HttpError(409, message, extra);
export const tooLarge = (message: string): HttpError => new HttpError(413, message);
export const serviceUnavailable = (message: string): HttpError => new HttpError(503, message);

export function sendJsonError(res: Response, status: number, message: string, extra: Readonly<Record<string, unknown>> = {}): void {
  if (res.headersSent) return;
  res.status(status).json({ error: message, ...extra });
}

/** After every route: a path nothing answered. */
export const noRoute: RequestHandler = (_req, res) => {
  sendJsonError(res, 404, 'Requested url was not found');
};

/** The client's error that `err` is, if it is one. */
function clientError(err: unknown): HttpError | undefined {
  if (err instanceof HttpError) return err;
  // A malformed percent-escape anywhere a route decodes the URL.
  if (err instanceof URIError) return badRequest('the URL has a malformed percent-escape');
  // Errors with a 4xx status: the body parsers' (too large, unknown charset, cut off...).
  const e = (typeof err === 'object' && err !== null ? err : {}) as { status?: unknown; type?: unknown; limit?: unknown; message?: unknown };
  if (typeof e.status !== 'number' || e.status < 400 || e.status >= 500) return undefined;
  // Say the limit: the parser's own message does not.
  if (e.type === 'entity.too.large') return tooLarge(`the body is larger than ${String(e.limit)} bytes`);
  return new HttpError(e.status, String(e.message));
}

/**
 * The error handler of the daemon and of every router of JSON routes (mounted
 * on its own paths, so the router answers alike wherever it is mounted).
 */
export const jsonErrors: ErrorRequestHandler = (err, req, res, _next) => {
  const refused = clientError(err);
  if (!refused) (req as { log?: Logger }).log?.error({ err }, `${req.method} ${req.originalUrl} failed: ${(err as Error)?.message ?? err}`);
  if (res.headersSent) {
    // Half an answer cannot be corrected: the client sees it cut.
    res.destroy();
    return;
  }
  if (refused) sendJsonError(res, refused.status, refused.message, refused.extra);
  else sendJsonError(res, 500, 'Internal server error');
};
