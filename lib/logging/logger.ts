// JSON logs (pino) to a file or stdout. Every record that is written also goes
// to the /logs ring buffer, with its request id when it has one.
import { pino, type Logger, type LevelWithSilent } from 'pino';
import type { LogLevel } from '../settings/global.ts';
import { LogBuffer } from './buffer.ts';

export type { Logger };

const PINO_LEVEL: Record<LogLevel, LevelWithSilent> = {
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
  FATAL: 'fatal',
  UNKNOWN: 'fatal',
};
const SMART_PROXY_LEVEL: Record<number, string> = { 10: 'DEBUG', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

export interface DaemonLogging {
  logger: Logger;
  buffer: LogBuffer;
  /** Reopen the log file (after logrotate moved it); no-op for stdout. */
  reopen(): void;
  /** Write out anything buffered; call before exiting. */
  flush(): void;
}

function messageOf(args: unknown[]): { message: string; backtrace?: string[] } {
  const [first, second] = args;
  if (first instanceof Error) return { message: typeof second === 'string' ? second : first.message, backtrace: first.stack?.split('\n').slice(1).map((l) => l.trim()) };
  if (typeof first === 'string') return { message: first };
  const err = (first as { err?: unknown } | null)?.err;
  const message = typeof second === 'string' ? second : '';
  if (err instanceof Error) return { message: message || err.message, backtrace: err.stack?.split('\n').slice(1).map((l) => l.trim()) };
  return { message };
}

/**
 * Errors are logged as type, message, code and stack only. Other fields of
 * error objects (an HTTP client's request settings, its socket's raw header
 * text) can hold a client's Authorization header.
 */
export function errorForLog(err: unknown): Record<string, unknown> | unknown {
  if (!(err instanceof Error)) return err;
  const code = (err as { code?: unknown }).code;
  return { type: err.name, message: err.message, ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}), stack: err.stack };
}

export function createLogging(opts: { logFile: string; level: LogLevel; bufferSize: number; bufferErrors: number }): DaemonLogging {
  const buffer = new LogBuffer(opts.bufferSize, opts.bufferErrors);
  const toStdout = ['STDOUT', 'JOURNAL', 'JOURNALD'].includes(opts.logFile.toUpperCase());
  // sync writes to stdout keep ordering with process exit; the file uses an
  // async destination (reopenable) flushed on shutdown.
  const destination = toStdout ? pino.destination({ dest: 1, sync: true }) : pino.destination({ dest: opts.logFile, sync: false, mkdir: true });
  const logger = pino(
    {
      level: PINO_LEVEL[opts.level],
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: errorForLog },
      formatters: { level: (label) => ({ level: label }) },
      hooks: {
        logMethod(args, method, level) {
          const { message, backtrace } = messageOf(args);
          const bindings = this.bindings() as { request?: string; plugin?: string };
          const record: Parameters<LogBuffer['push']>[0] = {
            timestamp: Date.now() / 1000,
            level: SMART_PROXY_LEVEL[level] ?? 'UNKNOWN',
            message: bindings.plugin ? `[${bindings.plugin}] ${message}` : message,
          };
          if (bindings.request) record.request_id = bindings.request;
          if (backtrace) record.backtrace = backtrace;
          buffer.push(record);
          method.apply(this, args as Parameters<typeof method>);
        },
      },
    },
    destination,
  );
  return {
    logger,
    buffer,
    reopen: () => {
      if (!toStdout) destination.reopen();
    },
    flush: () => {
      try {
        destination.flushSync();
      } catch {
        // an async destination not yet opened has nothing to flush
      }
    },
  };
}
