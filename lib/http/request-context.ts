// Per-request context: an id (X-Request-Id honoured, else a new UUID) carried
// by a child logger into every log line of the request, smart-proxy's
// Started/Finished access lines, and removal of client-sent identity headers.
import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from '../logging/logger.ts';
import { IDENTITY_HEADERS } from './identity.ts';

declare module 'express-serve-static-core' {
  interface Request {
    /** The request id, also sent back as X-Request-Id. */
    id: string;
    /** Logger whose records carry this request's id. */
    log: Logger;
  }
}

const SAFE_ID = /^[\w.:@-]{1,128}$/;

export function requestContext(logger: Logger, isStopping: () => boolean): RequestHandler {
  return (req, res, next) => {
    const offered = req.get('x-request-id');
    req.id = offered && SAFE_ID.test(offered) ? offered : randomUUID();
    const session = req.get('x-session-id');
    req.log = logger.child({
      request: req.id,
      ...(session && SAFE_ID.test(session) ? { session } : {}),
      remote_ip: (req.socket.remoteAddress ?? '').replace(/^::ffff:/, ''),
    });
    for (const header of IDENTITY_HEADERS) delete req.headers[header];
    res.setHeader('X-Request-Id', req.id);
    // Every body is what its Content-Type says; browsers must not guess otherwise.
    res.setHeader('X-Content-Type-Options', 'nosniff');
    // While shutting down, finish this request but don't keep the connection.
    if (isStopping()) res.setHeader('Connection', 'close');

    // Access lines cost string work on every request: only when they are written.
    if (!req.log.isLevelEnabled('info')) return next();
    const started = process.hrtime.bigint();
    const query = req.originalUrl.includes('?') ? ` ${req.originalUrl.slice(req.originalUrl.indexOf('?') + 1)}` : '';
    const path = req.originalUrl.split('?')[0];
    req.log.info(`Started ${req.method} ${path}${query}`);
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const outcome = res.writableFinished ? `with ${res.statusCode}` : `aborted after ${res.statusCode}`;
      req.log.info(`Finished ${req.method} ${path} ${outcome} (${ms.toFixed(1)} ms)`);
    });
    next();
  };
}
