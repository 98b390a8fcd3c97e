// Errors of the daemon's own (non-registry) routes, rendered as JSON.
import type { ErrorRequestHandler, RequestHandler } from 'express';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function sendJsonError(res: Parameters<RequestHandler>[1], status: number, message: string): void {
  if (res.headersSent) return;
  res.status(status).json({ error: message });
}

export const notFound: RequestHandler = (_req, res) => {
  sendJsonError(res, 404, 'Requested url was not found');
};

/** Last handler: known HttpErrors keep their status; anything else is a logged 500. */
export const errorHandler: ErrorRequestHandler = (err, req, res, _next) => {
  if (err instanceof HttpError) return sendJsonError(res, err.status, err.message);
  // A malformed percent-escape anywhere a route decodes the URL is the client's error.
  if (err instanceof URIError) return sendJsonError(res, 400, 'the URL has a malformed percent-escape');
  const status = typeof err?.status === 'number' && err.status >= 400 && err.status < 500 ? err.status : 500;
  if (status === 500) req.log.error({ err }, `${req.method} ${req.originalUrl} failed: ${err?.message ?? err}`);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJsonError(res, status, status === 500 ? 'Internal server error' : String(err.message ?? err));
};
