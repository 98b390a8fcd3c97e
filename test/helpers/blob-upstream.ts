// A scripted upstream for BlobFetches (a plain node http server that can be
// slow, stop halfway, lie or reset), a store in a temp dir, and readers that
// fail a test rather than hang. `lent: true` fetches through the gateway's own
// upstream client (HttpUpstream's pool) and lends every body (lent-body.ts),
// however small, so one suite covers both ways a body is read.
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type t from 'tap';
import { BlobFetches, DEFAULT_FETCH_LIMIT } from '../../plugins/container_gateway/store/blob-fetches.ts';
import { BlobStore } from '../../plugins/container_gateway/store/blob-store.ts';
import { HttpUpstream } from '../../plugins/container_gateway/upstream/http-upstream.ts';
import { lendBody } from '../../plugins/container_gateway/upstream/lent-body.ts';

export type Tap = Parameters<Parameters<typeof t.test>[0]>[0];
export const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
export const MiB = 1024 * 1024;

/** Deterministic, non-repeating content. */
export function content(size: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed * 2654435761;
  for (let i = 0; i < size; i += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    b.writeUInt32LE(x, i < size - 3 ? i : size - 4);
  }
  return b;
}

/** A gate the upstream waits on; `open()` lets it go on. */
export function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

export type Script = (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>;

export interface ScriptedUpstream {
  open: (path?: string) => () => Promise<http.IncomingMessage>;
  requests: string[];
  /** Connections the server accepted. */
  connections: () => number;
  active: () => number;
  maxActive: () => number;
}

/** `idleMs`: the client's idle timeout, when `lent`. */
export async function upstream(t: Tap, script: Script, opts: { lent?: boolean; idleMs?: number } = {}): Promise<ScriptedUpstream> {
  const requests: string[] = [];
  let active = 0;
  let maxActive = 0;
  let connections = 0;
  const server = http.createServer((req, res) => {
    requests.push(req.url!);
    active++;
    maxActive = Math.max(maxActive, active);
    res.on('close', () => active--);
    void Promise.resolve(script(req, res)).catch(() => res.destroy());
  });
  server.on('connection', () => connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  const client = opts.lent ? new HttpUpstream(`http://127.0.0.1:${port}`, { connectMs: 5000, responseMs: 30_000, idleMs: opts.idleMs ?? 30_000 }) : undefined;
  t.teardown(() => {
    client?.close();
    server.closeAllConnections();
    return new Promise((r) => server.close(() => r(undefined)));
  });
  const open = (path = '/blob') => () =>
    client
      ? client.request({ method: 'GET', path })
      : new Promise<http.IncomingMessage>((resolve, reject) => {
          http.get({ host: '127.0.0.1', port, path, agent: false }, resolve).on('error', reject);
        });
  return { open, requests, connections: () => connections, active: () => active, maxActive: () => maxActive };
}

/** The downloads of `store`, lending every body when `lent`. */
export function fetchesOf(store: BlobStore, opts: { lent?: boolean; limit?: number } = {}): BlobFetches {
  return new BlobFetches(store, opts.limit ?? DEFAULT_FETCH_LIMIT, opts.lent ? (res) => lendBody(res, 1) : undefined);
}

export function storeIn(t: Tap): BlobStore {
  const dir = mkdtempSync(join(tmpdir(), 'blob-fetches-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return new BlobStore(join(dir, 'storage'));
}

/** Everything a reader gives, or its error; fails the test instead of hanging. */
export function collect(r: Readable, ms = 10_000): Promise<{ body: Buffer; error?: Error }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => reject(new Error(`reader still open after ${ms} ms`)), ms);
    r.on('data', (c: Buffer) => chunks.push(c));
    r.on('end', () => (clearTimeout(timer), resolve({ body: Buffer.concat(chunks) })));
    r.on('error', (error) => (clearTimeout(timer), resolve({ body: Buffer.concat(chunks), error })));
  });
}

/** Resolves once `cond` holds (polled), or fails after `ms`. */
export async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Serves `body` in two halves with `between` awaited in the middle. */
export function halves(body: Buffer, between: Promise<void>, headers: http.OutgoingHttpHeaders = { 'Content-Length': body.length }): Script {
  return async (_req, res) => {
    res.writeHead(200, headers);
    res.write(body.subarray(0, body.length / 2));
    await between;
    res.end(body.subarray(body.length / 2));
  };
}

export function leftovers(store: BlobStore): string[] {
  try {
    return readdirSync(store.uploadsDir);
  } catch {
    return [];
  }
}
