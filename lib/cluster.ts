// Several daemon processes on one set of listeners (node:cluster), so the
// daemon uses every core. The primary serves nothing: it forks the workers,
// forwards TERM/INT/USR1, restarts a worker that dies after it was ready,
// and fails start-up (exit 1) if a worker cannot start.
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from './logging/logger.ts';
import { serveClusterMetrics, type MetricsRequest } from './metrics/cluster.ts';

export type WorkerMessage = { type: 'ready' } | { type: 'startup-failed'; message: string } | MetricsRequest;

const RESTART_DELAY_MS = 1000;

export function isWorker(): boolean {
  return cluster.isWorker;
}

/** In a worker: tell the primary how start-up went. */
export function reportToPrimary(message: WorkerMessage): void {
  if (cluster.isWorker) process.send?.(message);
}

/** Run as the primary of `count` workers; resolves with the process exit code. */
export function runPrimary(count: number, logger: Logger): Promise<number> {
  return new Promise((resolveExit) => {
    let stopping = false;
    let startupDone = false;
    let ready = 0;
    const live = new Set<Worker>();
    const metrics = serveClusterMetrics();

    const finish = (code: number) => {
      if (live.size === 0) resolveExit(code);
    };
    const stopAll = (signal: NodeJS.Signals) => {
      stopping = true;
      for (const w of live) w.process.kill(signal);
      if (live.size === 0) resolveExit(0);
    };

    const fork = () => {
      const worker = cluster.fork();
      live.add(worker);
      let workerReady = false;
      worker.on('message', (msg: WorkerMessage) => {
        if (msg.type === 'metrics-request') {
          metrics(worker, msg);
        } else if (msg.type === 'ready') {
          workerReady = true;
          if (!startupDone && ++ready === count) {
            startupDone = true;
            logger.info(`all ${count} workers are serving`);
          }
        } else if (msg.type === 'startup-failed' && !startupDone) {
          // The worker printed the message itself; stop the others.
          logger.error(`a worker could not start: ${msg.message}`);
          stopAll('SIGTERM');
          stopping = true;
        }
      });
      worker.on('exit', (code, signal) => {
        live.delete(worker);
        if (stopping) return finish(startupDone ? 0 : 1);
        if (!workerReady) {
          // Died during start-up: a restart would fail the same way.
          stopping = true;
          for (const w of live) w.process.kill('SIGTERM');
          return finish(1);
        }
        logger.error(`worker ${worker.process.pid} exited (${signal ?? code}); starting another`);
        setTimeout(() => {
          if (!stopping) fork();
        }, RESTART_DELAY_MS);
      });
    };

    process.on('SIGTERM', () => stopAll('SIGTERM'));
    process.on('SIGINT', () => stopAll('SIGTERM'));
    process.on('SIGUSR1', () => {
      for (const w of live) w.process.kill('SIGUSR1');
    });
    // Memory flags of bin/proxyd's #! line (a small young generation, V8's
    // memory-saving heuristics): `node bin/proxyd` lacks them, so they are added.
    const flags = ['--max-semi-space-size=2', '--optimize-for-size'];
    const missing = flags.filter((f) => !process.execArgv.some((a) => a.startsWith(f.split('=')[0]!)));
    cluster.setupPrimary({ execArgv: [...process.execArgv, ...missing] });
    logger.info(`proxyd primary ${process.pid} starting ${count} workers`);
    for (let i = 0; i < count; i++) fork();
  });
}
