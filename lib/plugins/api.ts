// The one front of the core for plugins: everything a plugin may import from
// lib/ comes from here, so the core can move its insides without touching a
// plugin, and a plugin cannot reach what the daemon keeps to itself.
export { definePlugin } from './types.ts';
export type { PluginContext, PluginDefinition, PluginSettings, DaemonView, PluginStatus } from './types.ts';
export type { Logger } from '../logging/logger.ts';
export type { PropertySchema } from '../settings/schema.ts';
export type { GlobalSettings } from '../settings/global.ts';
export type { ClientIdentity } from '../http/identity.ts';
export { isValidHost } from '../http/host.ts';
export { HttpError, badRequest, notFound, conflict, tooLarge, serviceUnavailable, jsonErrors } from '../http/errors.ts';
export { bodyType, jsonObjectBody, quoteValue } from '../http/json-body.ts';
export { CliExit } from './cli.ts';
export type { DaemonTarget, PasswordOptions, PluginCli, PluginCliContext, PluginStatusDetail, PluginStatusHook } from './cli.ts';
export type { PluginMetrics, RouteClassifier } from '../metrics/metrics.ts';
export { Counter, Gauge, Histogram } from 'prom-client';
