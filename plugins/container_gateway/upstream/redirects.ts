// Following a registry's redirects: Katello answers blob GETs with a 302 to
// Pulp's content app (or S3). Like Go's client, the Authorization goes only
// to the origin it was meant for, and is dropped for good once a redirect
// leaves it.
import type http from 'node:http';

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export type SendTo = (target: URL, headers: Record<string, string>) => Promise<http.IncomingMessage>;

/** `res` answered `url`; follow its redirects (at most `max`, else `tooMany()` is thrown). */
export async function followRedirects(
  res: http.IncomingMessage,
  url: URL,
  headers: Record<string, string>,
  authorization: string | undefined,
  send: SendTo,
  max: number,
  tooMany: () => Error,
): Promise<http.IncomingMessage> {
  let current = url;
  let auth = authorization;
  for (let hop = 0; REDIRECTS.has(res.statusCode ?? 0) && res.headers.location; hop++) {
    res.resume();
    if (hop >= max) throw tooMany();
    const target = new URL(res.headers.location, current);
    if (target.origin !== current.origin) auth = undefined;
    res = await send(target, { ...headers, ...(auth ? { Authorization: auth } : {}) });
    current = target;
  }
  return res;
}
