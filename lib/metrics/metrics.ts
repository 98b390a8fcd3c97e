// Prometheus metrics of one daemon: its own registry (never prom-client's
// global one, so two daemons in one process count apart), the request
// counters and latency histograms every route gets from one middleware, and
// the registry handed to plugins so their metrics appear on the same page.
import type { Request, RequestHandler } from 'express';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Maps a request path to a route class; undefined: not one of this classifier's routes. */
export type RouteClassifier = (path: string, req: Request) => string | undefined;

/** What a plugin sees: the registry to register its metrics in, and its route classes. */
export interface PluginMetrics {
  readonly registry: Registry;
  /** Name the classes of the plugin's routes; a path no classifier knows counts as `other`. */
  classifyRoutes(classifier: RouteClassifier): void;
}

/** Seconds: from a cached manifest (~1 ms) to a large blob over a slow link. */
const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const CORE_ROUTES: Record<string, string> = {
  '/metrics': 'metrics',
  '/healthz': 'probe',
  '/readyz': 'probe',
  '/features': 'root',
  '/version': 'root',
  '/v2/features': 'root',
};

export class DaemonMetrics implements PluginMetrics {
  readonly registry = new Registry();
  private readonly classifiers: RouteClassifier[] = [];
  private readonly requests: Counter<'route' | 'method' | 'status'>;
  private readonly latency: Histogram<'route' | 'method' | 'status'>;

  constructor() {
    this.requests = new Counter({ name: 'proxyd_http_requests_total', help: 'HTTP requests answered, by route class, method and status', labelNames: ['route', 'method', 'status'], registers: [this.registry] });
    this.latency = new Histogram({
      name: 'proxyd_http_request_duration_seconds',
      help: 'Time from the request to the end of its answer, by route class, method and status',
      labelNames: ['route', 'method', 'status'],
      buckets: LATENCY_BUCKETS,
      registers: [this.registry],
    });
    // 1 per process: summed over a cluster, the number of workers the page counts.
    new Gauge({ name: 'proxyd_worker_processes', help: 'Daemon processes whose counts this page sums', registers: [this.registry] }).set(1);
  }

  classifyRoutes(classifier: RouteClassifier): void {
    this.classifiers.push(classifier);
  }

  routeClass(req: Request): string {
    const path = (req.originalUrl.split('?')[0] ?? '/').replace(/\/{2,}/g, '/');
    const core = CORE_ROUTES[path];
    if (core) return core;
    for (const classify of this.classifiers) {
      const c = classify(path, req);
      if (c) return c;
    }
    return 'other';
  }

  /** Counts every request when its answer ends (or the client goes): `aborted` if it did not end. */
  middleware(): RequestHandler {
    return (req, res, next) => {
      const started = process.hrtime.bigint();
      res.once('close', () => {
        const labels = { route: this.routeClass(req), method: METHODS.has(req.method) ? req.method : 'other', status: res.writableFinished ? String(res.statusCode) : 'aborted' };
        this.requests.inc(labels);
        this.latency.observe(labels, Number(process.hrtime.bigint() - started) / 1e9);
      });
      next();
    };
  }
}

/** Methods counted by name; anything else (a scanner's junk) is `other`, so labels stay few. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
