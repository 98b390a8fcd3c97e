// Counting what reached a docker-registry, from its access log: tests of a
// proxy in front of it (on-demand pulls, pushes) assert how often each
// manifest and blob was asked for. A mark taken before a step and read after
// it (flushed, so every request answered so far is in) gives that step's
// requests only.
import type { AccessLogEntry } from './registry.ts';

/** Something with an access log that can be flushed (a RunningRegistry, a MainServer). */
export interface Logged {
  accessLog(): AccessLogEntry[];
  flushAccessLog(): Promise<AccessLogEntry[]>;
}

export interface AccessMark {
  /** Every request since the mark, once flushed. */
  since(): Promise<AccessLogEntry[]>;
}

export async function markAccessLog(log: Logged): Promise<AccessMark> {
  const at = (await log.flushAccessLog()).length;
  return { since: async () => (await log.flushAccessLog()).slice(at) };
}

/** `GET /v2/<name>/blobs/<digest>` and `/manifests/<ref>`, split up; undefined for other paths. */
export function contentPath(path: string): { name: string; kind: 'blobs' | 'manifests'; ref: string } | undefined {
  const m = /^\/v2\/(.+)\/(blobs|manifests)\/([^/]+)$/.exec(path);
  return m ? { name: decodeURIComponent(m[1]!), kind: m[2] as 'blobs' | 'manifests', ref: decodeURIComponent(m[3]!) } : undefined;
}

/** How many times each `METHOD path` appears, e.g. `GET /v2/a/b/blobs/sha256:..` → 1. */
export function countRequests(entries: AccessLogEntry[], filter: (e: AccessLogEntry) => boolean = () => true): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of entries.filter(filter)) {
    const key = `${e.method} ${e.path}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** Entries whose path is under `/v2/<name>/` (the repository's manifests, blobs, tags, uploads). */
export function ofRepository(entries: AccessLogEntry[], name: string): AccessLogEntry[] {
  return entries.filter((e) => e.path.startsWith(`/v2/${name}/`));
}

/** One line per entry, for assertion messages. */
export function describe(entries: AccessLogEntry[]): string {
  return entries.map((e) => `${e.method} ${e.url} ${e.status}`).join('\n') || '(none)';
}
