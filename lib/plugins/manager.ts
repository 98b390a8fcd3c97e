// Plugin lifecycle, as smart-proxy's PluginInitializer: load settings (→
// starting | disabled | failed), check requirements, then set up and start in
// dependency order (→ running | failed). A failure is confined to its plugin
// and to the plugins that require it; the daemon and the others go on.
import { basename } from 'node:path';
import express, { type Router } from 'express';
import type { Logger } from '../logging/logger.ts';
import type { GlobalSettings } from '../settings/global.ts';
import { loadPluginSettings } from '../settings/plugin.ts';
import type { DiscoveredPlugin } from './loader.ts';
import type { PluginMetrics } from '../metrics/metrics.ts';
import type { DaemonView, PluginContext, PluginDefinition, PluginSettings, PluginState, PluginStatus } from './types.ts';
import { satisfies } from './version.ts';

interface Entry {
  name: string;
  version: string;
  def?: PluginDefinition;
  state: PluginState;
  message?: string;
  http: boolean;
  https: boolean;
  settings?: PluginSettings;
  ctx?: PluginContext;
  /** What setup returned: offered to dependents, handed to start and stop. */
  api?: unknown;
  /** setup ran (fully or partly), so stop must run. */
  needsStop: boolean;
}

export interface MountedPlugin {
  name: string;
  http: boolean;
  https: boolean;
  router: Router;
  rootRouter: Router;
}

type Auth = PluginContext['auth'];

export class PluginManager {
  private readonly entries = new Map<string, Entry>();
  private readonly started: Entry[] = [];

  constructor(
    private readonly global: GlobalSettings,
    private readonly logger: Logger,
    private readonly auth: Auth,
    private readonly daemon: DaemonView,
    private readonly metrics: PluginMetrics,
  ) {}

  /** Settings, requirements, setup and start of every discovered plugin. */
  async initialize(discovered: DiscoveredPlugin[]): Promise<void> {
    for (const found of discovered) this.load(found);
    this.checkRequirements();
    for (const entry of this.startOrder()) await this.configure(entry);
    // A plugin may have failed while starting after its dependents passed the first check.
    this.checkRequirements();
  }

  private load(found: DiscoveredPlugin): void {
    const def = found.definition;
    const entry: Entry = { name: def?.name ?? basename(found.folder), version: def?.version ?? '0.0.0', def, state: 'uninitialized', http: false, https: false, needsStop: false };
    this.entries.set(entry.name, entry);
    if (!def) return this.fail(entry, found.error ?? 'could not be loaded');
    try {
      const loaded = loadPluginSettings(def, this.global);
      // A missing file means the defaults: only worth a warning when the plugin would not run without one.
      if (!loaded.fileFound) {
        const note = `No settings file ${loaded.file}: '${entry.name}' uses its default settings (${def.defaultEnabled ? 'enabled' : 'disabled'})`;
        if (def.defaultEnabled) this.logger.debug(note);
        else this.logger.info(note);
      }
      // What the plugin really serves on: enabled for it, and that listener configured.
      entry.http = loaded.http && this.global.http_port !== undefined;
      entry.https = loaded.https && this.global.ssl_certificate !== undefined;
      if (loaded.settings && !entry.http && !entry.https) {
        this.logger.warn(`'${entry.name}' is enabled for ${loaded.http && loaded.https ? 'http and https' : loaded.http ? 'http' : 'https'}, but that listener is not configured: it serves on no listener`);
      }
      if (!loaded.settings) {
        entry.state = 'disabled';
        this.logger.info(`'${entry.name}' is disabled`);
        return;
      }
      entry.settings = loaded.settings;
      entry.state = 'starting';
      this.logger.debug({ settings: loaded.settings }, `'${entry.name}' settings loaded from ${loaded.fileFound ? loaded.file : 'defaults'}`);
    } catch (err) {
      this.fail(entry, (err as Error).message);
    }
  }

  private fail(entry: Entry, error: string, plain = false): void {
    entry.state = 'failed';
    entry.http = entry.https = false;
    entry.message = plain ? error : `Disabling all modules in the group ['${entry.name}'] due to a failure in one of them: ${error}`;
    this.logger.error(entry.message);
  }

  /** Fail every starting/running plugin whose requirement is absent, failed or the wrong version; repeat until stable. */
  private checkRequirements(): void {
    let changed = true;
    while (changed) {
      changed = false;
      for (const entry of this.entries.values()) {
        if (entry.state !== 'starting' && entry.state !== 'running') continue;
        const problem = this.requirementProblem(entry);
        if (problem) {
          if (entry.state === 'running') void this.stopEntry(entry);
          this.fail(entry, problem, true);
          changed = true;
        }
      }
    }
  }

  private requirementProblem(entry: Entry): string | undefined {
    for (const [depName, range] of Object.entries(entry.def?.requires ?? {})) {
      const dep = this.entries.get(depName);
      if (!dep || dep.state === 'disabled' || dep.state === 'uninitialized') return `'${depName}' required by '${entry.name}' could not be found.`;
      if (dep.state === 'failed') return `'${depName}' required by '${entry.name}' failed to start.`;
      let ok: boolean;
      try {
        ok = satisfies(dep.version.replace(/-(develop|rc\d*).*$/i, ''), range);
      } catch (err) {
        return `'${entry.name}' has an invalid requirement on '${depName}': ${(err as Error).message}`;
      }
      if (!ok) return `Available version '${dep.version}' of '${depName}' doesn't match version '${range}' required by '${entry.name}'`;
    }
    return undefined;
  }

  /** Dependencies before dependents; plugins in a cycle fail. */
  private startOrder(): Entry[] {
    const order: Entry[] = [];
    const mark = new Map<string, 'visiting' | 'done'>();
    const visit = (entry: Entry, path: string[]): boolean => {
      const m = mark.get(entry.name);
      if (m === 'done') return true;
      if (m === 'visiting') {
        this.fail(entry, `circular requirement: ${[...path, entry.name].join(' -> ')}`, true);
        return false;
      }
      mark.set(entry.name, 'visiting');
      let ok = true;
      for (const dep of Object.keys(entry.def?.requires ?? {})) {
        const depEntry = this.entries.get(dep);
        if (depEntry && depEntry.state === 'starting') ok = visit(depEntry, [...path, entry.name]) && ok;
      }
      mark.set(entry.name, 'done');
      if (ok && entry.state === 'starting') order.push(entry);
      return ok;
    };
    for (const entry of this.entries.values()) if (entry.state === 'starting') visit(entry, []);
    return order;
  }

  private context(entry: Entry): PluginContext {
    const entries = this.entries;
    return Object.freeze({
      name: entry.name,
      settings: entry.settings!,
      global: this.global,
      logger: this.logger.child({ plugin: entry.name }),
      router: express.Router(),
      rootRouter: express.Router(),
      daemon: this.daemon,
      auth: this.auth,
      metrics: this.metrics,
      dependency<T>(name: string): T {
        if (!(name in (entry.def?.requires ?? {}))) throw new Error(`'${entry.name}' does not declare a requirement on '${name}'`);
        return entries.get(name)?.api as T;
      },
    });
  }

  private async withTimeout<T>(work: () => T | Promise<T>, what: string): Promise<T> {
    const seconds = this.global.plugin_hook_timeout;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        Promise.resolve().then(work),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${what} did not finish within ${seconds} s`)), seconds * 1000);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async configure(entry: Entry): Promise<void> {
    const problem = this.requirementProblem(entry);
    if (problem) return this.fail(entry, problem, true);
    const def = entry.def!;
    const ctx = this.context(entry);
    entry.ctx = ctx;
    try {
      entry.needsStop = true;
      entry.api = await this.withTimeout(() => def.setup?.(ctx), `setup of '${entry.name}'`);
      await this.withTimeout(() => def.start?.(ctx, entry.api), `start of '${entry.name}'`);
      entry.state = 'running';
      this.started.push(entry);
      this.logger.info(`'${entry.name}' ${entry.version} is running (${[entry.http && 'http', entry.https && 'https'].filter(Boolean).join(', ') || 'no listener'})`);
    } catch (err) {
      // As smart-proxy: stop what the group already started before marking it failed.
      await this.stopEntry(entry);
      this.fail(entry, (err as Error).message ?? String(err));
    }
  }

  private async stopEntry(entry: Entry): Promise<void> {
    if (!entry.needsStop || !entry.ctx) return;
    entry.needsStop = false;
    try {
      await this.withTimeout(() => entry.def?.stop?.(entry.ctx!, entry.api), `stop of '${entry.name}'`);
    } catch (err) {
      this.logger.error({ err }, `stopping '${entry.name}' failed: ${(err as Error).message}`);
    }
  }

  /** Stop running plugins in reverse start order. */
  async stopAll(): Promise<void> {
    for (const entry of [...this.started].reverse()) {
      await this.stopEntry(entry);
      this.logger.info(`'${entry.name}' stopped`);
    }
  }

  /** Routers of running plugins, with the listeners they may use. */
  mounted(): MountedPlugin[] {
    return [...this.entries.values()]
      .filter((e) => e.state === 'running' && e.ctx)
      .map((e) => ({ name: e.name, http: e.http, https: e.https, router: e.ctx!.router, rootRouter: e.ctx!.rootRouter }));
  }

  /** Running plugins whose `ready` hook gives a reason they cannot serve now (a hook that throws: its message). */
  async unready(): Promise<Record<string, string>> {
    const asked = [...this.entries.values()].filter((e) => e.state === 'running' && e.ctx && e.def?.ready);
    const reasons = await Promise.all(asked.map((e) => e.def!.ready!(e.ctx!, e.api).catch((err: unknown) => (err as Error).message)));
    return Object.fromEntries(asked.flatMap((e, i) => (reasons[i] === undefined ? [] : [[e.name, reasons[i]!]])));
  }

  statuses(): PluginStatus[] {
    return [...this.entries.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((e) => ({
        name: e.name,
        version: e.version,
        state: e.state,
        httpEnabled: e.state === 'running' && e.http,
        httpsEnabled: e.state === 'running' && e.https,
        ...(e.message ? { message: e.message } : {}),
        exposedSettings: this.exposed(e),
        capabilities: this.capabilities(e),
      }));
  }

  private exposed(e: Entry): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    if (!e.settings) return out;
    for (const key of e.def?.exposeSettings ?? []) if (e.settings[key] !== undefined) out[key] = e.settings[key];
    return out;
  }

  private capabilities(e: Entry): string[] {
    if (e.state === 'uninitialized' || !e.def) return [];
    const caps = new Set<string>();
    for (const cap of e.def.capabilities ?? []) {
      if (typeof cap === 'string') caps.add(cap);
      else if (e.state === 'running') {
        try {
          [cap(e.settings!)].flat().forEach((c) => caps.add(c));
        } catch (err) {
          this.logger.warn(`capability of '${e.name}' failed: ${(err as Error).message}`);
        }
      }
    }
    return [...caps].sort();
  }
}
