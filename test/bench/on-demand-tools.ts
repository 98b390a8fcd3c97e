// Measuring tools of the on-demand section (on-demand.ts): a skopeo pull timed
// with skopeo's own CPU time, a GET timed to its first body byte, the wait for
// a blob's commit in the embedded store, and 20 concurrent cold pulls whose
// upstream traffic is counted by a relay in front of the main server.
import http from 'node:http';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { exec } from './measure.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface SkopeoPull {
  seconds: number;
  /** skopeo's user + system CPU seconds. */
  cpuSeconds: number;
}

/**
 * `skopeo copy --src-tls-verify=false docker://<ref> dir:<dest>`, timed; no
 * stray credentials (an empty auth file). The destination must hold the layer
 * whole afterwards; it is removed.
 */
export async function skopeoPull(ref: string, dest: string, layer: { digest: string; size: number }): Promise<SkopeoPull> {
  mkdirSync(dest, { recursive: true });
  const auth = join(dest, '..', 'empty-auth.json');
  writeFileSync(auth, '{"auths":{}}\n', { mode: 0o600 });
  // sh's `times` prints the children's user and system time on its second line.
  const script = 'skopeo "$@"; rc=$?; times >&2; exit $rc';
  const t0 = process.hrtime.bigint();
  const r = await exec('sh', ['-c', script, 'sh', 'copy', '--src-tls-verify=false', '--src-authfile', auth, `docker://${ref}`, `dir:${dest}`], 600_000);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  try {
    if (r.code !== 0) throw new Error(`skopeo copy docker://${ref} failed (code ${r.code}): ${r.stderr.trim()}`);
    const file = join(dest, layer.digest.slice('sha256:'.length));
    const got = existsSync(file) ? statSync(file).size : -1;
    if (got !== layer.size) throw new Error(`skopeo copy docker://${ref}: the layer is ${got} bytes in ${dest} (${readdirSync(dest).join(', ')}), not ${layer.size}`);
    const m = /(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s\s*$/.exec(r.stderr.trim());
    const cpuSeconds = m ? Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]) : NaN;
    return { seconds, cpuSeconds };
  } finally {
    rmSync(dest, { recursive: true, force: true });
  }
}

/** The machine's busy and total CPU seconds so far, all cores (the first line of /proc/stat). */
export function machineCpu(ticks: number): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  // idle and iowait are the 4th and 5th.
  return { busy: (total - fields[3]! - fields[4]!) / ticks, total: total / ticks };
}

export interface TimedGet {
  status: number;
  bytes: number;
  /** From sending the request to the response head, and to the first body byte (ms). */
  headMs: number;
  firstByteMs: number;
  seconds: number;
}

/** GET with node:http, body discarded: when the head and the first body byte arrived, and the whole. */
export function timedGet(url: string, headers: Record<string, string> = {}): Promise<TimedGet> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
    const req = http.get(url, { headers, agent: false }, (res) => {
      const headMs = ms();
      let firstByteMs = -1;
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        if (firstByteMs < 0) firstByteMs = ms();
        bytes += c.length;
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`${url}: connection closed after ${bytes} bytes`)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, headMs, firstByteMs, seconds: ms() / 1000 }));
    });
    req.setTimeout(300_000, () => req.destroy(new Error(`${url}: no progress in 300 s`)));
    req.on('error', reject);
  });
}

/** The layer's file in the embedded store, once committed (the relay may end just before the commit). */
export async function waitForStored(storage: string, layer: { digest: string; size: number }): Promise<boolean> {
  const hex = layer.digest.slice(7);
  const file = join(storage, 'blobs', 'sha256', hex.slice(0, 2), hex);
  for (let i = 0; i < 300; i++) {
    if (existsSync(file) && statSync(file).size === layer.size) return true;
    await sleep(100);
  }
  return false;
}

/** An HTTP relay to `target` counting the response body bytes it passes, and the blob GETs. */
async function countingRelay(target: string): Promise<{ url: string; bodyBytes(): number; blobGets(): number; close(): Promise<void> }> {
  const to = new URL(target);
  let bodyBytes = 0;
  let blobGets = 0;
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')) blobGets++;
    const up = http.request({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers: { ...req.headers, host: to.host } }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.on('data', (c: Buffer) => (bodyBytes += c.length));
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    bodyBytes: () => bodyBytes,
    blobGets: () => blobGets,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

/** GET, body counted and discarded; rejects unless 200 with `size` bytes (when given). */
function getCounted(url: string, headers: Record<string, string>, size?: number): Promise<Buffer | number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      const keep: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (size === undefined) keep.push(c);
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`${url}: connection closed after ${bytes} bytes`)));
      res.on('end', () => {
        if (res.statusCode !== 200 || (size !== undefined && bytes !== size)) reject(new Error(`${url}: ${res.statusCode}, ${bytes} bytes${size !== undefined ? ` of ${size}` : ''}`));
        else resolve(size === undefined ? Buffer.concat(keep) : bytes);
      });
    });
    req.setTimeout(300_000, () => req.destroy(new Error(`${url}: no progress in 300 s`)));
    req.on('error', reject);
  });
}

/**
 * `clients` pulls at once through a fresh proxy (started by `startProxy` with
 * the relay as its main server): each GETs the manifest, then every blob;
 * sizes checked. Returns the body bytes the relay passed from the registry.
 */
export async function concurrentColdPulls(o: {
  registryUrl: string;
  clients: number;
  startProxy(mainUrl: string): Promise<{ httpUrl: string; stop(): Promise<number | null> }>;
  repository: string;
  tag: string;
  manifestType: string;
}): Promise<{ upstreamBodyBytes: number; blobGets: number; seconds: number }> {
  const relay = await countingRelay(o.registryUrl);
  try {
    const gw = await o.startProxy(relay.url);
    try {
      const t0 = process.hrtime.bigint();
      await Promise.all(
        Array.from({ length: o.clients }, async () => {
          const manifest = (await getCounted(`${gw.httpUrl}/v2/${o.repository}/manifests/${o.tag}`, { Accept: o.manifestType })) as Buffer;
          const m = JSON.parse(manifest.toString('utf8')) as { config: { digest: string; size: number }; layers: Array<{ digest: string; size: number }> };
          for (const b of [m.config, ...m.layers]) await getCounted(`${gw.httpUrl}/v2/${o.repository}/blobs/${b.digest}`, {}, b.size);
        }),
      );
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      // A blob's fetch may still be committing when its last client is served: let the upstream body end.
      await sleep(500);
      return { upstreamBodyBytes: relay.bodyBytes(), blobGets: relay.blobGets(), seconds };
    } finally {
      await gw.stop();
    }
  } finally {
    await relay.close();
  }
}
