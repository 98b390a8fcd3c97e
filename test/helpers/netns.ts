// A peer that is not loopback, without sending anything off this machine: a
// network namespace made for the test, joined to the host by a veth pair on a
// private /30. The daemon listens on the host end; requests made from inside
// the namespace (curl, through `ip netns exec`) arrive from the peer end's
// address. Needs root and iproute2, as CI has.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Reply, RequestOptions } from './http.ts';

export interface PeerNamespace {
  /** The host end: bind the daemon here. */
  hostAddress: string;
  /** The namespace end: where the requests come from. */
  peerAddress: string;
  /** A plain-HTTP request made from inside the namespace. */
  request(url: string, opts?: Pick<RequestOptions, 'method' | 'headers' | 'body'>): Promise<Reply>;
  destroy(): void;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function createPeerNamespace(): PeerNamespace {
  const id = randomBytes(3).toString('hex');
  const ns = `proxyd-${id}`;
  const hostIf = `pdh${id}`;
  const peerIf = `pdp${id}`;
  const subnet = `10.231.${randomBytes(1)[0]!}`;
  const hostAddress = `${subnet}.1`;
  const peerAddress = `${subnet}.2`;
  ip('netns', 'add', ns);
  try {
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', peerIf);
    ip('link', 'set', peerIf, 'netns', ns);
    ip('addr', 'add', `${hostAddress}/30`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${peerAddress}/30`, 'dev', peerIf);
    ip('netns', 'exec', ns, 'ip', 'link', 'set', peerIf, 'up');
  } catch (err) {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    throw err;
  }
  const request = (url: string, opts: Pick<RequestOptions, 'method' | 'headers' | 'body'> = {}): Promise<Reply> => {
    const args = ['netns', 'exec', ns, 'curl', '-sS', '-i', '--max-time', '15', '-X', opts.method ?? 'GET'];
    for (const [name, value] of Object.entries(opts.headers ?? {})) args.push('-H', `${name}: ${value}`);
    if (opts.body !== undefined) args.push('--data-binary', '@-');
    args.push(url);
    return new Promise((resolve, reject) => {
      const curl = spawn('ip', args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      curl.stdout.on('data', (c: Buffer) => out.push(c));
      curl.stderr.on('data', (c: Buffer) => err.push(c));
      curl.on('error', reject);
      curl.on('close', (code) => {
        const text = Buffer.concat(out).toString('utf8');
        const split = text.indexOf('\r\n\r\n');
        if (code !== 0 || split < 0) return reject(new Error(`curl from ${peerAddress} to ${url} failed (${code}): ${Buffer.concat(err).toString('utf8')}`));
        const [statusLine, ...lines] = text.slice(0, split).split('\r\n');
        const headers: Record<string, string> = {};
        for (const line of lines) {
          const colon = line.indexOf(':');
          if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        const body = text.slice(split + 4);
        resolve({ status: Number(/^HTTP\/[\d.]+ (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0), headers, body, json: () => JSON.parse(body) });
      });
      curl.stdin.end(opts.body ?? '');
    });
  };
  return {
    hostAddress,
    peerAddress,
    request,
    destroy: () => execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }),
  };
}
