// proxyd: the daemon's command line. Settings errors and bind failures exit 1
// with smart-proxy's start-up message; SIGTERM/SIGINT exit 0 after a graceful
// stop; SIGUSR1 reopens the log file.
import { resolve } from 'node:path';
import { Command } from 'commander';
import { runPrimary, isWorker, reportToPrimary } from '../cluster.ts';
import { Daemon, VERSION } from '../daemon.ts';
import { createLogging } from '../logging/logger.ts';
import { DEFAULT_SETTINGS_FILE, loadGlobalSettings, locateSettings, type GlobalSettings } from '../settings/global.ts';

const program = new Command('proxyd')
  .description('Foreman smart-proxy daemon: serves the plugins under plugins/ configured by settings.d/<plugin>.yml')
  .version(VERSION)
  .option('-s, --settings <file>', `global settings file (default: $PROXYD_SETTINGS, else ${DEFAULT_SETTINGS_FILE}, else embedded defaults)`)
  .option('-d, --settings-dir <dir>', 'directory of plugin settings files (overrides settings_directory)')
  .option('--check', 'validate the settings and exit (0 valid, 1 invalid)')
  .addHelpText('after', '\nSignals: TERM/INT stop gracefully (exit 0), USR1 reopens the log file.\nExit codes: 0 stopped cleanly or settings valid, 1 start-up error.');

program.parse();
const opts = program.opts<{ settings?: string; settingsDir?: string; check?: boolean }>();

function startupError(err: unknown): never {
  process.stderr.write(`Errors detected on startup, see log for details. Exiting: ${(err as Error).message}\n`);
  process.exit(1);
}

function loadSettings(): GlobalSettings {
  try {
    return loadGlobalSettings(locateSettings(opts.settings), opts.settingsDir ? { settings_directory: resolve(opts.settingsDir) } : {});
  } catch (err) {
    startupError(err);
  }
}

const global = loadSettings();
if (opts.check) {
  process.stdout.write(`${global.source}: settings are valid\n`);
  process.exit(0);
}

if (global.workers > 1 && !isWorker()) {
  const { logger, flush } = createLogging({ logFile: global.log_file, level: global.log_level, bufferSize: 0, bufferErrors: 0 });
  const code = await runPrimary(global.workers, logger);
  flush();
  process.exit(code);
}

/**
 * Handlers go in before start-up so that a signal arriving while plugins start
 * (or just after the "launched" line) still gets a graceful stop: it waits
 * for `started`.
 */
function handleSignals(): { started(daemon: Daemon): void } {
  let daemon: Daemon | undefined;
  let pending: NodeJS.Signals | undefined;
  let signals = 0;
  const onStopSignal = (signal: NodeJS.Signals): void => {
    if (!daemon) {
      pending ??= signal;
      return;
    }
    if (++signals > 1) {
      daemon.logger.warn(`${signal} again: exiting without waiting`);
      daemon.logging.flush();
      process.exit(1);
    }
    void daemon.stop(signal).then(() => process.exit(0));
  };
  process.on('SIGTERM', onStopSignal);
  process.on('SIGINT', onStopSignal);
  process.on('SIGUSR1', () => {
    if (!daemon) return;
    daemon.logging.reopen();
    daemon.logger.info('SIGUSR1: log file reopened');
  });
  return {
    started(d) {
      daemon = d;
      if (pending) onStopSignal(pending);
    },
  };
}

const signals = handleSignals();
try {
  const daemon = await Daemon.start(global);
  reportToPrimary({ type: 'ready' });
  signals.started(daemon);
} catch (err) {
  reportToPrimary({ type: 'startup-failed', message: (err as Error).message });
  startupError(err);
}
