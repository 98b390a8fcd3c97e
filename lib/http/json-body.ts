// JSON request bodies of the daemon's own routes, read strictly: the routes
// take their bodies as text (express.text) so that a wrong Content-Type or a
// body that does not parse is refused with a message that says which, rather
// than arriving as an empty object.
import type { Request } from 'express';
import { badRequest } from './errors.ts';

/** A client's value in a message: JSON-quoted, cut after 100 characters. */
export function quoteValue(value: string): string {
  return JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}...` : value);
}

/** The media type of the request's body, lower case, without parameters ('' when none). */
export function bodyType(req: Request): string {
  return (req.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
}

/** The request's body (read as text) as a JSON object; a 400 HttpError when it is not sent as one. */
export function jsonObjectBody(req: Request): Record<string, unknown> {
  const type = bodyType(req);
  if (type !== 'application/json') throw badRequest(`unsupported Content-Type '${type || '(none)'}': send application/json`);
  let body: unknown;
  try {
    body = JSON.parse(typeof req.body === 'string' ? req.body : '');
  } catch (err) {
    throw badRequest(`the body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the body must be a JSON object');
  return body as Record<string, unknown>;
}
