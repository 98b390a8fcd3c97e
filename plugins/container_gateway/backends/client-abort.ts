// A request to an upstream made for one client is abandoned when that client
// goes away: nobody would read its answer.
import type { Request, Response } from 'express';

export function abortOnClose(req: Request, res: Response): AbortSignal {
  const controller = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  req.on('aborted', () => controller.abort());
  return controller.signal;
}
