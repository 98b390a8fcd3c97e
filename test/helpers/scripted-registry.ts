// A main-server registry that misbehaves on cue: a plain node:http server in
// front of a real registry (docker-registry). Every request is forwarded as
// it came (Host included, so the registry's Locations name this front), unless
// the test's script says otherwise for it:
//   'hangup'  answer 201 with the headers a registry would send (the digest
//             the client asked for), then close the connection before the body;
//             nothing reaches the registry
//   'forward-then-hangup'  the registry stores it; its status line and headers
//             are relayed, then the connection closes before the body ends
//   'wrong-digest'  forwarded, the registry stores it, its Docker-Content-Digest
//             is replaced by another one
//   '500'     answer 500 with an OCI error; nothing reaches the registry
//   'silence' read the request, never answer (until stop())
//   { hold, answered }  forwarded; once the registry answered, `answered()` is
//             called and its answer is relayed only when `hold` resolves
import { createHash } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';

export type Misbehaviour = 'hangup' | 'forward-then-hangup' | 'wrong-digest' | '500' | 'silence' | { hold: Promise<void>; answered?: () => void };

export interface ScriptedRequest {
  method: string;
  /** Path without the query. */
  path: string;
  query: URLSearchParams;
}

/** What to do with a request; undefined forwards it. */
export type Script = (req: ScriptedRequest) => Misbehaviour | undefined;

export class ScriptedRegistry {
  private readonly server: http.Server;
  private readonly sockets = new Set<net.Socket>();
  private script: Script = () => undefined;
  port = 0;

  /** `target`: the real registry's origin, e.g. `http://127.0.0.1:5000`. */
  constructor(private readonly target: string) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s: net.Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  start(): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = (this.server.address() as net.AddressInfo).port;
        resolve(this.url);
      });
    });
  }

  /** `http://127.0.0.1:PORT` (the main_registry_url is this + `/v2/`). */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Misbehave from now on as `script` says (null: forward everything). */
  set(script: Script | null): void {
    this.script = script ?? (() => undefined);
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x');
    const how = this.script({ method: req.method ?? 'GET', path: u.pathname, query: u.searchParams });
    if (how === 'silence') {
      req.resume();
      return;
    }
    if (how === '500') {
      req.resume();
      req.once('end', () => {
        const body = JSON.stringify({ errors: [{ code: 'UNKNOWN', message: 'scripted failure' }] });
        res.writeHead(500, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    if (how === 'hangup') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.once('end', () => {
        const digest = u.searchParams.get('digest') ?? `sha256:${createHash('sha256').update(Buffer.concat(chunks)).digest('hex')}`;
        res.writeHead(201, { 'Docker-Content-Digest': digest, Location: u.pathname, 'Content-Type': 'application/json', 'Content-Length': '100' });
        res.flushHeaders();
        res.socket?.destroy();
      });
      return;
    }
    const up = http.request(`${this.target}${req.url}`, { method: req.method, headers: req.headers });
    up.on('error', () => res.destroy());
    req.pipe(up);
    const answer = await new Promise<http.IncomingMessage | undefined>((resolve) => {
      up.once('response', resolve);
      up.once('error', () => resolve(undefined));
    });
    if (!answer) return;
    if (typeof how === 'object') {
      how.answered?.();
      await how.hold;
    }
    const headers = { ...answer.headers };
    if (how === 'wrong-digest') headers['docker-content-digest'] = `sha256:${createHash('sha256').update(`not ${headers['docker-content-digest'] ?? ''}`).digest('hex')}`;
    if (how === 'forward-then-hangup') {
      answer.resume();
      // The registry's head, a body promised and never sent.
      res.writeHead(answer.statusCode ?? 502, { ...headers, 'content-length': String(Number(headers['content-length'] ?? 0) + 100) });
      res.flushHeaders();
      answer.once('end', () => res.socket?.destroy());
      return;
    }
    res.writeHead(answer.statusCode ?? 502, headers);
    answer.pipe(res);
  }
}

export async function startScriptedRegistry(target: string): Promise<ScriptedRegistry> {
  const s = new ScriptedRegistry(target);
  await s.start();
  return s;
}
