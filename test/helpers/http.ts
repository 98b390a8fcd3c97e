// A small HTTP(S) client for tests: real requests, optional client certificate.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { CertPair } from './pki.ts';

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json<T = any>(): T;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  /** CA to verify the server with (HTTPS). */
  ca?: string;
  /** Client certificate to present (HTTPS). */
  client?: CertPair;
  body?: string;
  timeoutMs?: number;
}

export function request(url: string, opts: RequestOptions = {}): Promise<Reply> {
  const u = new URL(url);
  const tls = u.protocol === 'https:';
  const options: https.RequestOptions = {
    method: opts.method ?? 'GET',
    headers: opts.headers ?? {},
    agent: false,
    ...(tls && opts.ca ? { ca: readFileSync(opts.ca) } : {}),
    ...(tls && opts.client ? { cert: readFileSync(opts.client.cert), key: readFileSync(opts.client.key) } : {}),
  };
  return new Promise((resolve, reject) => {
    const req = (tls ? https : http).request(u, options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) });
      });
    });
    req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** The status of a plain-HTTP GET, or 0 when there is no answer within a second (readiness polls). */
export function statusOf(url: string): Promise<number> {
  return new Promise((res) => {
    const req = http.get(url, { agent: false, timeout: 1000 }, (r) => {
      r.resume();
      r.on('end', () => res(r.statusCode ?? 0));
      r.on('error', () => res(0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => res(0));
  });
}
