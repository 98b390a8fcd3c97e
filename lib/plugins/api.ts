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
export { HttpError } from '../http/errors.ts';
export type { DaemonTarget } from '../cli/daemon-client.ts';
export type { PluginCli, PluginCliContext, PluginStatus as PluginStatusHook } from '../cli/plugin-commands.ts';
