// The plugin contract. A plugin is a folder under plugins/ whose index.ts
// default-exports `definePlugin({...})`, in the shape of smart-proxy's DSL:
// name, version, default settings (and their schema), validation, exposed
// settings, capabilities, requirements, and named setup/start/stop hooks.
import type { Router, RequestHandler, Request } from 'express';
import type { Logger } from '../logging/logger.ts';
import type { GlobalSettings } from '../settings/global.ts';
import type { PropertySchema } from '../settings/schema.ts';
import type { ClientIdentity } from '../http/identity.ts';
import type { LogBuffer } from '../logging/buffer.ts';
import type { PluginMetrics } from '../metrics/metrics.ts';

export type PluginState = 'uninitialized' | 'starting' | 'running' | 'disabled' | 'failed';
export type Enabled = boolean | 'http' | 'https';
export type PluginSettings = Readonly<Record<string, unknown>>;

export interface PluginStatus {
  name: string;
  version: string;
  state: PluginState;
  httpEnabled: boolean;
  httpsEnabled: boolean;
  /** Why the plugin failed, in smart-proxy's wording. */
  message?: string;
  exposedSettings: Record<string, unknown>;
  capabilities: string[];
}

/** What a plugin can see of the daemon it runs in. */
export interface DaemonView {
  readonly version: string;
  readonly logBuffer: LogBuffer;
  plugins(): PluginStatus[];
  /** Running plugins that say they cannot serve now, with their reason (their `ready` hooks, asked now). */
  unready(): Promise<Record<string, string>>;
}

export interface PluginContext<S extends PluginSettings = PluginSettings> {
  readonly name: string;
  /** The plugin's settings: defaults merged with its file, validated, frozen. */
  readonly settings: S;
  readonly global: GlobalSettings;
  /** A child logger whose records carry `plugin: <name>`. */
  readonly logger: Logger;
  /** Mounted at /<name> on the listeners `enabled` allows. */
  readonly router: Router;
  /** Mounted at the listener root, after the root API (e.g. /v2/ for a registry). */
  readonly rootRouter: Router;
  readonly daemon: DaemonView;
  /** Authorization helpers of the daemon, so plugins never re-implement them. */
  readonly auth: {
    /** Trusted host + verified client certificate, or 403 JSON. */
    trustedClient: RequestHandler;
    /** Who the client is, from what the daemon verified itself. */
    identity(req: Request): ClientIdentity;
  };
  /** The daemon's Prometheus registry (GET /metrics) and the plugin's route classes. */
  readonly metrics: PluginMetrics;
  /** The value a required plugin's setup returned. */
  dependency<T = unknown>(name: string): T;
}

/**
 * `P` is what setup() returns: the parts it made (offered to dependents too),
 * handed back to start() and stop() so that a plugin keeps no state of its own
 * outside them.
 */
export interface PluginDefinition<S extends PluginSettings = PluginSettings, P = unknown> {
  name: string;
  version: string;
  /** `enabled` when the settings file does not say; smart-proxy's default is false. */
  defaultEnabled?: Enabled;
  /** JSON Schema per key; `default` values are the plugin's default settings. */
  settings?: Record<string, PropertySchema>;
  /** Keys that must have a non-empty value (smart-proxy: a nil default). */
  required?: string[];
  /** Checks across keys; throw an Error whose message names the key. */
  validate?(settings: S, global: GlobalSettings): void;
  /** Settings published in /v2/features. */
  exposeSettings?: string[];
  /** Strings, or functions evaluated only while running. */
  capabilities?: Array<string | ((settings: S) => string | string[])>;
  /** Other plugins this one needs, with a version requirement ('~> 1.2', '>= 1.0'). */
  requires?: Record<string, string>;
  /** Open resources and add routes; the return value is offered to dependents. */
  setup?(ctx: PluginContext<S>): P | Promise<P>;
  /** Start background services; runs after every setup of its dependencies. */
  start?(ctx: PluginContext<S>, parts: P): void | Promise<void>;
  /**
   * Release what setup/start took; called in reverse start order. `parts` is
   * undefined when setup did not return (it threw or timed out): a setup
   * that throws releases what it made itself.
   */
  stop?(ctx: PluginContext<S>, parts: P | undefined): void | Promise<void>;
  /**
   * Asked by GET /readyz while the plugin runs: why it cannot serve requests
   * now (e.g. its database does not answer), or undefined when it can. Keep
   * it quick: a load balancer's health check waits for it.
   */
  ready?(ctx: PluginContext<S>, parts: P): Promise<string | undefined>;
}

const NAME = /^[a-z][a-z0-9_]*$/;

export function definePlugin<S extends PluginSettings, P = unknown>(def: PluginDefinition<S, P>): PluginDefinition<S, P> {
  return def;
}

/** Structural check of a module's default export; returns a problem or undefined. */
export function checkDefinition(value: unknown): string | undefined {
  if (!value || typeof value !== 'object') return 'does not default-export a plugin definition';
  const def = value as Partial<PluginDefinition>;
  if (typeof def.name !== 'string' || !NAME.test(def.name)) return `has an invalid name ${JSON.stringify(def.name)} (lower case, digits and _)`;
  if (typeof def.version !== 'string' || !/^\d+(\.\d+){0,2}([-+].*)?$/.test(def.version)) return `has an invalid version ${JSON.stringify(def.version)}`;
  for (const hook of ['setup', 'start', 'stop', 'validate', 'ready'] as const) {
    if (def[hook] !== undefined && typeof def[hook] !== 'function') return `has a ${hook} that is not a function`;
  }
  return undefined;
}
