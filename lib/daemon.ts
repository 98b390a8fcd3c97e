// The daemon: logging, plugins, listeners, in that order up; the reverse down.
import { closeSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import express, { type Express } from 'express';
import { jsonErrors, noRoute } from './http/errors.ts';
import { clientIdentity } from './http/identity.ts';
import { startListeners, stopListeners, type Listener, type ListenerKind } from './http/listeners.ts';
import { requestContext } from './http/request-context.ts';
import { rootApi } from './http/root-api.ts';
import { trustedClient } from './http/trusted-client.ts';
import { createLogging, type DaemonLogging } from './logging/logger.ts';
import { joinClusterMetrics, inCluster } from './metrics/cluster.ts';
import { DaemonMetrics } from './metrics/metrics.ts';
import { metricsRouter } from './metrics/route.ts';
import { discoverPlugins } from './plugins/loader.ts';
import { PluginManager } from './plugins/manager.ts';
import type { DaemonView } from './plugins/types.ts';
import { SettingsError } from './settings/errors.ts';
import { APP_ROOT, CODE_ROOT, ignoredSettingsDirectory, type GlobalSettings } from './settings/global.ts';

export const VERSION: string = (JSON.parse(readFileSync(join(APP_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function checkLogFile(global: GlobalSettings): void {
  if (['STDOUT', 'JOURNAL', 'JOURNALD'].includes(global.log_file.toUpperCase())) return;
  try {
    closeSync(openSync(global.log_file, 'a'));
  } catch (err) {
    throw new SettingsError(global.source, 'log_file', `names a file that cannot be opened for writing (${(err as NodeJS.ErrnoException).code}): '${global.log_file}' in ${dirname(global.log_file)}`);
  }
}

export class Daemon {
  private listeners: Listener[] = [];
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly global: GlobalSettings,
    readonly logging: DaemonLogging,
    readonly plugins: PluginManager,
    readonly metrics: DaemonMetrics,
  ) {}

  get logger() {
    return this.logging.logger;
  }

  get addresses(): string[] {
    return this.listeners.map((l) => l.address);
  }

  /** Start everything; throws (after cleaning up) if the daemon cannot run at all. */
  static async start(global: GlobalSettings): Promise<Daemon> {
    checkLogFile(global);
    const logging = createLogging({ logFile: global.log_file, level: global.log_level, bufferSize: global.log_buffer, bufferErrors: global.log_buffer_errors });
    logging.logger.info(`proxyd ${VERSION} starting with settings from ${global.source}`);
    const ignored = ignoredSettingsDirectory(global);
    if (ignored) logging.logger.info(`plugin settings are read from ${global.settings_directory}; ${ignored} beside the settings file is not used (set settings_directory: settings.d in ${global.source}, or pass --settings-dir ${ignored})`);
    let manager: PluginManager | undefined;
    const view: DaemonView = { version: VERSION, logBuffer: logging.buffer, plugins: () => manager?.statuses() ?? [], unready: async () => (manager ? manager.unready() : {}) };
    const auth = { trustedClient: trustedClient(global), identity: clientIdentity };
    const metrics = new DaemonMetrics();
    if (inCluster()) joinClusterMetrics(metrics.registry);
    manager = new PluginManager(global, logging.logger, auth, view, metrics);
    const daemon = new Daemon(global, logging, manager, metrics);
    try {
      await manager.initialize(await discoverPlugins([join(CODE_ROOT, 'plugins'), ...global.plugin_directories]));
      daemon.listeners = await startListeners(global, { http: daemon.app('http', view, auth.trustedClient), https: daemon.app('https', view, auth.trustedClient) });
    } catch (err) {
      await manager.stopAll();
      logging.flush();
      throw err;
    }
    if (global.trusted_hosts === undefined && global.http_port !== undefined) {
      logging.logger.info('trusted_hosts is unset: over plain HTTP, trusted-client routes (admin API, /v2/features, /logs) answer loopback peers only');
    }
    logging.logger.info({ addresses: daemon.addresses }, `Smart proxy has launched on ${daemon.listeners.length} socket(s), waiting for requests`);
    return daemon;
  }

  private app(kind: ListenerKind, view: DaemonView, trusted: express.RequestHandler): Express {
    const app = express();
    app.disable('x-powered-by');
    app.set('etag', false);
    app.set('query parser', 'extended');
    app.use(requestContext(this.logger, () => this.stopping !== undefined));
    if (this.global.metrics_access !== 'disabled') {
      app.use(this.metrics.middleware());
      app.use(metricsRouter(this.metrics, this.global.metrics_access, trusted));
    }
    app.use(rootApi(view, trusted));
    for (const plugin of this.plugins.mounted()) {
      if (!plugin[kind]) continue;
      app.use(`/${plugin.name}`, plugin.router);
      app.use(plugin.rootRouter);
    }
    app.use(noRoute);
    app.use(jsonErrors);
    return app;
  }

  /** Stop accepting, let in-flight requests finish (bounded), stop plugins in reverse order. */
  stop(reason: string): Promise<void> {
    this.stopping ??= (async () => {
      // Close the listening sockets first, then say so: whoever reads the line
      // can rely on new connections being refused.
      const drained = stopListeners(this.listeners, this.global.shutdown_timeout);
      this.logger.info(`${reason}: stopping; no longer accepting connections; waiting up to ${this.global.shutdown_timeout} s for in-flight requests`);
      const { forced } = await drained;
      if (forced) this.logger.warn('in-flight requests did not finish in time and were cut');
      await this.plugins.stopAll();
      this.logger.info('proxyd stopped');
      this.logging.flush();
    })();
    return this.stopping;
  }
}
