// HTTP and HTTPS listeners on every bind_host. HTTPS asks for a client
// certificate and checks it against ssl_ca_file, but does not require one:
// routes decide (see trusted-client.ts). A request may take as long as it
// keeps moving bytes; a connection silent for idle_timeout is closed. Shutdown
// lets in-flight requests end within a bound, then cuts what is left.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { SecureVersion } from 'node:tls';
import type { Express } from 'express';
import type { GlobalSettings } from '../settings/global.ts';

export type ListenerKind = 'http' | 'https';

export interface Listener {
  kind: ListenerKind;
  server: http.Server;
  address: string;
}

function tlsOptions(global: GlobalSettings): https.ServerOptions {
  const disabled = new Set(global.tls_disabled_versions);
  // TLS 1.0 and 1.1 are always off, as in smart-proxy; '1.2' may be disabled too.
  const minVersion: SecureVersion = disabled.has('1.2') ? 'TLSv1.3' : 'TLSv1.2';
  const ciphers = global.ssl_disabled_ciphers.length > 0 ? ['DEFAULT', ...global.ssl_disabled_ciphers.map((c) => `!${c}`)].join(':') : undefined;
  return {
    key: readFileSync(global.ssl_private_key!),
    cert: readFileSync(global.ssl_certificate!),
    ca: readFileSync(global.ssl_ca_file!),
    requestCert: true,
    rejectUnauthorized: false,
    minVersion,
    ...(ciphers ? { ciphers } : {}),
  };
}

function listen(server: http.Server, port: number, host: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Headers must arrive within this (slowloris); the body and the answer have no total bound. */
const HEADERS_TIMEOUT_MS = 60_000;

/** Answers Node gives before any route (unparsable request, slow headers), with the headers every answer carries. */
function answerClientErrors(server: http.Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, duplex) => {
    const socket = duplex as Socket;
    const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    // As Node does: answer unless a response to this connection's request has begun; then close.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !inFlight?.headersSent && err.code !== 'ECONNRESET') {
      socket.write(`HTTP/1.1 ${status}\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    }
    socket.destroy();
  });
}

function applyTimeouts(server: http.Server, global: GlobalSettings): void {
  // Node's default requestTimeout (300 s) cut slow uploads that were still moving.
  server.requestTimeout = 0;
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  // Inactivity of the socket, either way: without a 'timeout' listener Node destroys it.
  server.timeout = global.idle_timeout * 1000;
  // Between requests of a kept-alive connection, the same bound (65 s at most, as before).
  server.keepAliveTimeout = Math.min(65_000, server.timeout);
}

/** Bind every listener; any bind error closes those already bound and throws. */
export async function startListeners(global: GlobalSettings, apps: Partial<Record<ListenerKind, Express>>): Promise<Listener[]> {
  const plan: Array<{ kind: ListenerKind; port: number }> = [];
  if (global.http_port !== undefined && apps.http) plan.push({ kind: 'http', port: global.http_port });
  if (global.ssl_certificate && apps.https) plan.push({ kind: 'https', port: global.https_port });
  const listeners: Listener[] = [];
  try {
    for (const { kind, port } of plan) {
      for (const bind of global.bind_host) {
        // 1 MiB stream buffers: blob bodies move in 64 KiB socket reads, and a
        // 16 KiB default would stall every chunk on backpressure.
        const buffers = { highWaterMark: 1024 * 1024 };
        const server = kind === 'https' ? https.createServer({ ...tlsOptions(global), ...buffers }, apps.https) : http.createServer(buffers, apps.http);
        applyTimeouts(server, global);
        answerClientErrors(server);
        const host = bind === '*' ? undefined : bind;
        try {
          await listen(server, port, host);
        } catch (err) {
          throw new Error(`cannot listen for ${kind} on ${bind}:${port}: ${(err as Error).message}`);
        }
        const a = server.address() as AddressInfo;
        listeners.push({ kind, server, address: `${kind}://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` });
      }
    }
  } catch (err) {
    await stopListeners(listeners, 0);
    throw err;
  }
  return listeners;
}

/** Stop accepting; let in-flight requests finish for up to `graceSeconds`; then cut. */
export async function stopListeners(listeners: Listener[], graceSeconds: number): Promise<{ forced: boolean }> {
  let forced = false;
  const closed = listeners.map(
    ({ server }) =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  );
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      forced = true;
      for (const { server } of listeners) server.closeAllConnections();
      resolve();
    }, graceSeconds * 1000);
  });
  // Idle keep-alive sockets that become idle after close() started must go too.
  const sweeper = setInterval(() => listeners.forEach(({ server }) => server.closeIdleConnections()), 100);
  await Promise.race([Promise.all(closed), deadline]);
  clearTimeout(timer);
  clearInterval(sweeper);
  await Promise.all(closed);
  return { forced };
}
