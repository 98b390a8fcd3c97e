// How proxyctl reaches proxyd: from the same settings file the daemon reads.
// HTTP when http_port is set; otherwise HTTPS with the client certificate of
// the settings (foreman_ssl_*, falling back to ssl_*), verifying the daemon's
// certificate against ssl_ca_file.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import axios from 'axios';
import type { DaemonTarget } from '../plugins/cli.ts';
import type { GlobalSettings } from '../settings/global.ts';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

function connectHost(bind: string): string {
  if (bind === '*' || bind === '0.0.0.0') return '127.0.0.1';
  if (bind === '::') return '[::1]';
  return bind.includes(':') ? `[${bind}]` : bind;
}

export interface TargetOverrides {
  url?: string;
  timeoutMs: number;
}

export function daemonTarget(global: GlobalSettings, o: TargetOverrides): DaemonTarget {
  const host = connectHost(global.bind_host[0] ?? '*');
  const url = (o.url ?? (global.http_port !== undefined ? `http://${host}:${global.http_port}` : `https://${host}:${global.https_port}`)).replace(/\/$/, '');
  let httpsAgent: https.Agent | undefined;
  if (url.startsWith('https:')) {
    const target = new URL(url).hostname.replace(/^\[|\]$/g, '');
    httpsAgent = new https.Agent({
      ...(global.foreman_ssl_cert && global.foreman_ssl_key ? { cert: readFileSync(global.foreman_ssl_cert), key: readFileSync(global.foreman_ssl_key) } : {}),
      ...(global.ssl_ca_file ? { ca: readFileSync(global.ssl_ca_file) } : {}),
      // On loopback the daemon's certificate names the host, not 127.0.0.1:
      // the chain is still verified against ssl_ca_file.
      ...(LOOPBACK.has(target) ? { checkServerIdentity: () => undefined } : {}),
    });
  }
  const http = axios.create({
    baseURL: url,
    timeout: o.timeoutMs,
    httpsAgent,
    validateStatus: () => true,
    headers: { Accept: 'application/json' },
    proxy: false,
  });
  return { url, http };
}
