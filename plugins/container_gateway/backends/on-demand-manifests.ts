// Manifests read from the main server for on-demand serving, as this proxy's
// own account. Asked with every manifest type the store keeps (so the main
// server never converts), read whole within MANIFEST_LIMIT, verified against
// the digest asked for and the one the main server claims, and parsed as a
// pushed manifest would be. What went wrong upstream is told apart: gone
// (404), unreachable (the caller serves what it has, or 503), or failing.
import type { Request, Response } from 'express';
import { RegistryError } from '../oci/errors.ts';
import { isSha256Digest, sha256Digest } from '../oci/grammar.ts';
import { accepts, MANIFEST_ACCEPT, MANIFEST_LIMIT, parseManifest, type ParsedManifest } from '../oci/manifest.ts';
import { readBounded, UpstreamError } from '../upstream/http-upstream.ts';
import { MainRegistryError, MainRegistryUnavailable, type MainRegistry } from '../upstream/main-registry.ts';

export interface FetchedManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
  parsed: ParsedManifest;
}

/** The main server could not be reached (connection refused, timeout, 5xx): no request was retried. */
export class MainUnreachable extends Error {
  override readonly name = 'MainUnreachable';
}

/** Is this failure the main server being out of reach (as opposed to a definite answer)? */
export function unreachable(err: unknown): boolean {
  return err instanceof MainUnreachable || err instanceof MainRegistryUnavailable || (err instanceof UpstreamError && err.kind !== 'aborted');
}

/** A definite answer that the main server's content is unusable: the client hears 502. */
function badUpstream(message: string): RegistryError {
  return new RegistryError('UNAVAILABLE', `the main server: ${message}`, undefined, 502);
}

/** What the main server says a tag points to now: its digest, undefined when gone, or 'unknown' when its answer does not say (then GET). */
export async function headTag(main: MainRegistry, name: string, tag: string): Promise<string | undefined | 'unknown'> {
  const res = await request(main, 'HEAD', `/${name}/manifests/${tag}`);
  res.resume();
  if (res.statusCode === 404) return undefined;
  const digest = res.headers['docker-content-digest'];
  if (res.statusCode === 200 && typeof digest === 'string' && isSha256Digest(digest)) return digest;
  if (res.statusCode === 200) return 'unknown';
  throw refused(res.statusCode, `HEAD ${name}:${tag}`);
}

/** GET a manifest by tag or digest; undefined when the main server does not have it (404). */
export async function fetchManifest(main: MainRegistry, name: string, reference: string): Promise<FetchedManifest | undefined> {
  const what = `manifest ${name}${isSha256Digest(reference) ? '@' : ':'}${reference}`;
  const res = await request(main, 'GET', `/${name}/manifests/${reference}`);
  if (res.statusCode === 404) {
    res.resume();
    return undefined;
  }
  if (res.statusCode !== 200) {
    res.resume();
    throw refused(res.statusCode, `GET ${what}`);
  }
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > MANIFEST_LIMIT) {
    res.destroy();
    throw badUpstream(`${what} is ${declared} bytes, more than the ${MANIFEST_LIMIT} a manifest may have`);
  }
  const { body, complete } = await readBounded(res, MANIFEST_LIMIT).catch((err: Error) => {
    throw badUpstream(`${what}: ${err.message}`);
  });
  if (!complete) throw new MainUnreachable(`${what}: the body ended early`);
  const digest = sha256Digest(body);
  if (isSha256Digest(reference) && digest !== reference) throw badUpstream(`${what}: the content's digest is ${digest}`);
  const claimed = res.headers['docker-content-digest'];
  if (typeof claimed === 'string' && claimed.startsWith('sha256:') && claimed !== digest) throw badUpstream(`${what}: Docker-Content-Digest says ${claimed}, the content is ${digest}`);
  let parsed: ParsedManifest;
  try {
    parsed = parseManifest(body, res.headers['content-type']);
  } catch (err) {
    throw badUpstream(`${what}: ${(err as Error).message}`);
  }
  for (const d of [...parsed.blobs, ...parsed.manifests]) if (!isSha256Digest(d)) throw badUpstream(`${what} refers to ${d}: only sha256 digests are supported`);
  return { digest, mediaType: parsed.mediaType, body, parsed };
}

/** A manifest held in memory (streamed policy) answered as the embedded store answers a stored one. */
export function sendManifest(req: Request, res: Response, m: { digest: string; mediaType: string; body: Buffer }, reference: string): void {
  if (!accepts(req.get('accept'), m.mediaType)) {
    throw new RegistryError('MANIFEST_UNKNOWN', `the manifest is a ${m.mediaType}, which the Accept header does not admit`, { reference });
  }
  res.status(200).set({ 'Content-Type': m.mediaType, 'Content-Length': String(m.body.length), 'Docker-Content-Digest': m.digest, ETag: `"${m.digest}"` });
  res.end(req.method === 'HEAD' ? undefined : m.body);
}

async function request(main: MainRegistry, method: 'GET' | 'HEAD', path: string) {
  try {
    return await main.request(method, path, { Accept: MANIFEST_ACCEPT });
  } catch (err) {
    if (unreachable(err)) throw new MainUnreachable((err as Error).message);
    if (err instanceof MainRegistryError) throw badUpstream(err.message);
    throw err;
  }
}

/** The main server refused this proxy's account, or answered oddly: a definite answer, not an outage. */
function refused(status: number | undefined, what: string): RegistryError {
  if (status === 401 || status === 403) {
    return badUpstream(`${what} was refused to this proxy's account (${status}): check sync_username and sync_password`);
  }
  return badUpstream(`${what} answered ${status ?? 'no status'}`);
}
