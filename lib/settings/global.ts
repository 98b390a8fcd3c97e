// Global settings (settings.yml): smart-proxy's key names and defaults,
// loaded strictly and frozen once.
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SettingsError } from './errors.ts';
import { validateSettings, type SettingsSchema } from './schema.ts';
import { readSettingsFile, type RawSettings } from './yaml-file.ts';

/** Where the running code lives: the repository, or its compiled copy in dist/. */
export const CODE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The application: the nearest folder with package.json (settings.d/, plugins' sources). */
export const APP_ROOT = existsSync(resolve(CODE_ROOT, 'package.json')) ? CODE_ROOT : resolve(CODE_ROOT, '..');
export const DEFAULT_SETTINGS_FILE = '/etc/proxyd/settings.yml';

export const LOG_LEVELS = ['DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL', 'UNKNOWN'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface GlobalSettings {
  /** The file these settings came from, or '(embedded defaults)'. */
  readonly source: string;
  readonly settings_directory: string;
  readonly plugin_directories: readonly string[];
  readonly bind_host: readonly string[];
  readonly http_port?: number;
  readonly https_port: number;
  readonly ssl_certificate?: string;
  readonly ssl_private_key?: string;
  readonly ssl_ca_file?: string;
  readonly ssl_disabled_ciphers: readonly string[];
  readonly tls_disabled_versions: readonly string[];
  readonly trusted_hosts?: readonly string[];
  readonly forward_verify: boolean;
  readonly foreman_url?: string;
  readonly foreman_ssl_ca?: string;
  readonly foreman_ssl_cert?: string;
  readonly foreman_ssl_key?: string;
  readonly log_file: string;
  readonly log_level: LogLevel;
  readonly log_buffer: number;
  readonly log_buffer_errors: number;
  readonly shutdown_timeout: number;
  readonly plugin_hook_timeout: number;
  readonly idle_timeout: number;
  readonly workers: number;
  /** GET /metrics: trusted clients only (default), open to anyone, or not served. */
  readonly metrics_access: 'trusted' | 'open' | 'disabled';
}

const port = (d: string) => ({ type: 'integer', minimum: 0, maximum: 65535, description: `a TCP port number (0-65535)${d}` });
const file = { type: 'string', minLength: 1, fileReadable: true, description: 'the path of a readable file' };
const stringList = (what: string) => ({ type: 'array', items: { type: 'string', minLength: 1 }, description: `a list of ${what}` });

export const GLOBAL_SCHEMA: SettingsSchema = {
  properties: {
    settings_directory: { type: 'string', minLength: 1, default: resolve(APP_ROOT, 'settings.d'), description: 'a directory path' },
    plugin_directories: { ...stringList('directories holding extra plugins'), default: [] },
    bind_host: { ...stringList('host names or addresses (or "*")'), minItems: 1, default: ['*'] },
    http_port: port(''),
    https_port: { ...port(''), default: 8443 },
    ssl_certificate: file,
    ssl_private_key: file,
    ssl_ca_file: file,
    ssl_disabled_ciphers: { ...stringList('OpenSSL cipher names'), default: [] },
    tls_disabled_versions: {
      type: 'array',
      items: { enum: ['1.0', '1.1', '1.2'] },
      default: [],
      description: "a list of TLS versions to disable, from '1.0', '1.1', '1.2'",
    },
    trusted_hosts: stringList('trusted client host names'),
    forward_verify: { type: 'boolean', default: true, description: 'true or false' },
    foreman_url: { type: 'string', format: 'url' },
    foreman_ssl_ca: file,
    foreman_ssl_cert: file,
    foreman_ssl_key: file,
    log_file: { type: 'string', minLength: 1, default: 'STDOUT', description: 'a file path, or STDOUT' },
    log_level: { enum: [...LOG_LEVELS], default: 'INFO', description: `one of ${LOG_LEVELS.join(', ')}` },
    log_buffer: { type: 'integer', minimum: 0, default: 2000, description: 'a number of log records (0 or more)' },
    log_buffer_errors: { type: 'integer', minimum: 0, default: 1000, description: 'a number of log records (0 or more)' },
    shutdown_timeout: { type: 'number', minimum: 0, default: 30, description: 'seconds (0 or more)' },
    plugin_hook_timeout: { type: 'number', exclusiveMinimum: 0, default: 60, description: 'seconds (more than 0)' },
    idle_timeout: { type: 'number', exclusiveMinimum: 0, default: 120, description: 'seconds a connection may move no bytes before it is closed (more than 0)' },
    workers: { type: 'integer', minimum: 1, maximum: 64, default: 1, description: 'a number of daemon processes (1-64)' },
    // Trusted by default: no default exposes an admin action, and the page names repositories.
    metrics_access: { enum: ['trusted', 'open', 'disabled'], default: 'trusted', description: 'one of trusted, open, disabled' },
  },
};

/** smart-proxy keys we deliberately do not implement, with what to do instead. */
const UNSUPPORTED_HINTS: Record<string, string> = {
  file_rolling_keep: 'is not supported by proxyd: rotate with logrotate and send SIGUSR1 (copytruncate not needed)',
  file_rolling_size: 'is not supported by proxyd: rotate with logrotate and send SIGUSR1',
  file_rolling_age: 'is not supported by proxyd: rotate with logrotate and send SIGUSR1',
  file_logging_pattern: 'is not supported by proxyd: log lines are JSON (pino)',
  system_logging_pattern: 'is not supported by proxyd: log lines are JSON (pino)',
  daemon: 'is not supported by proxyd: it always runs in the foreground (use systemd)',
  daemon_pid: 'is not supported by proxyd: it always runs in the foreground (use systemd)',
  dns_resolv_timeouts: 'is not supported by proxyd',
  virsh_network: 'is not supported by proxyd',
};

/** Used when no settings file exists at all: a local development daemon. */
export const EMBEDDED_DEFAULTS: RawSettings = { bind_host: ['127.0.0.1'], http_port: 8000, log_file: 'STDOUT' };

function normaliseRaw(raw: RawSettings): RawSettings {
  const out = { ...raw };
  // smart-proxy wraps a scalar bind_host or trusted_hosts into a list.
  for (const key of ['bind_host', 'trusted_hosts', 'plugin_directories', 'ssl_disabled_ciphers']) {
    if (typeof out[key] === 'string') out[key] = [out[key]];
  }
  // tls_disabled_versions is often written as numbers (`[1.1]`).
  if (Array.isArray(out.tls_disabled_versions)) {
    out.tls_disabled_versions = out.tls_disabled_versions.map((v) => (typeof v === 'number' ? v.toFixed(1) : v));
  }
  if (typeof out.log_level === 'string') out.log_level = out.log_level.toUpperCase();
  return out;
}

/** Validate raw global settings; `source` names the file in messages. */
export function buildGlobalSettings(raw: RawSettings, source: string): GlobalSettings {
  const data = validateSettings(GLOBAL_SCHEMA, normaliseRaw(raw), source, UNSUPPORTED_HINTS);
  const base = source.startsWith('(') ? APP_ROOT : dirname(source);
  data.settings_directory = resolve(base, data.settings_directory as string);
  data.plugin_directories = (data.plugin_directories as string[]).map((d) => resolve(base, d));
  if (typeof data.foreman_url === 'string' && !data.foreman_url.endsWith('/')) data.foreman_url += '/';
  if (Array.isArray(data.trusted_hosts)) data.trusted_hosts = data.trusted_hosts.map((h: string) => h.toLowerCase());
  for (const key of ['ca', 'cert', 'key'] as const) {
    const sslKey = { ca: 'ssl_ca_file', cert: 'ssl_certificate', key: 'ssl_private_key' }[key];
    data[`foreman_ssl_${key}`] ??= data[sslKey];
  }
  const ssl = ['ssl_certificate', 'ssl_private_key', 'ssl_ca_file'].filter((k) => data[k] !== undefined);
  if (ssl.length > 0 && ssl.length < 3) {
    const missing = ['ssl_certificate', 'ssl_private_key', 'ssl_ca_file'].find((k) => data[k] === undefined)!;
    throw new SettingsError(source, missing, `must be set too: HTTPS needs ssl_certificate, ssl_private_key and ssl_ca_file`);
  }
  if (data.http_port === undefined && ssl.length === 0) {
    throw new SettingsError(source, 'http_port', 'is unset and HTTPS is not configured: both http and https are disabled, unable to start');
  }
  return Object.freeze({ ...data, source }) as unknown as GlobalSettings;
}

export interface SettingsLocation {
  file?: string;
  /** true when the file was named explicitly (flag or environment). */
  explicit: boolean;
}

/** --settings FILE, else $PROXYD_SETTINGS, else the default path. */
export function locateSettings(flag?: string, env: NodeJS.ProcessEnv = process.env): SettingsLocation {
  if (flag) return { file: resolve(flag), explicit: true };
  if (env.PROXYD_SETTINGS) return { file: resolve(env.PROXYD_SETTINGS), explicit: true };
  return existsSync(DEFAULT_SETTINGS_FILE) ? { file: DEFAULT_SETTINGS_FILE, explicit: false } : { explicit: false };
}

/** Load global settings from where `locateSettings` says; overrides win over the file. */
export function loadGlobalSettings(location: SettingsLocation, overrides: RawSettings = {}): GlobalSettings {
  if (location.file === undefined) return buildGlobalSettings({ ...EMBEDDED_DEFAULTS, ...overrides }, '(embedded defaults)');
  return buildGlobalSettings({ ...readSettingsFile(location.file), ...overrides }, location.file);
}

/**
 * A `settings.d` directory beside the settings file that is not the one plugin
 * settings are read from (settings_directory defaults to <app>/settings.d, not
 * to the settings file's neighbour): its files would be silently ignored.
 */
export function ignoredSettingsDirectory(global: GlobalSettings): string | undefined {
  if (global.source.startsWith('(')) return undefined;
  const beside = join(dirname(global.source), 'settings.d');
  if (resolve(beside) === resolve(global.settings_directory)) return undefined;
  try {
    return statSync(beside).isDirectory() ? beside : undefined;
  } catch {
    return undefined;
  }
}
