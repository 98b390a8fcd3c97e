// The gateway's Prometheus metrics, in the daemon's registry (GET /metrics):
// what it served and from where, how its caches did, what failed upstream,
// logins, syncs, and what the embedded store holds. Each part of the gateway
// calls one method here; nothing is counted twice.
import type { RequestHandler, Response } from 'express';
import { Counter, Gauge, type PluginMetrics } from '../../lib/plugins/api.ts';

export type ServedSource = 'store' | 'pulp' | 'main';

/** Route classes of the gateway (label `route` of proxyd_http_requests_total); order matters. */
const ROUTE_CLASSES: Array<[RegExp, string]> = [
  [/^\/v2\/?$/, 'registry_base'],
  [/^\/v2\/token$/, 'token'],
  [/^\/v2\/_catalog$/, 'catalog'],
  [/^\/v2\/.+\/blobs\/uploads(\/|$)/, 'uploads'],
  [/^\/v2\/.+\/blobs\//, 'blobs'],
  [/^\/v2\/.+\/manifests\//, 'manifests'],
  [/^\/v2\/.+\/tags\/list$/, 'tags'],
  [/^\/v2\/.+\/referrers\//, 'referrers'],
  [/^\/v1\//, 'v1'],
  [/^\/pulpcore_registry\//, 'pulpcore'],
];

export function gatewayRouteClass(path: string): string | undefined {
  const inner = path.startsWith('/container_gateway/') ? path.slice('/container_gateway'.length) : path;
  for (const [pattern, name] of ROUTE_CLASSES) if (pattern.test(inner)) return name;
  return path.startsWith('/container_gateway/') ? 'gateway_admin' : undefined;
}

/** Marks where this request's content came from when it is not the gateway's default source. */
export function servedFrom(res: Response, source: ServedSource): void {
  res.locals.servedFrom = source;
}

/** Marks that this request failed upstream (UpstreamError.kind, or `katello_unreachable`). */
export function failedUpstream(res: Response, kind: string): void {
  res.locals.upstreamFailure = kind;
}

export class GatewayMetrics {
  private readonly names: string[] = [];
  private readonly served: Counter<'source'>;
  private readonly manifestCache: Counter<'result'>;
  private readonly onDemandReads: Counter<'result'>;
  private readonly onDemandBytes: Counter;
  private readonly upstreamErrors: Counter<'kind'>;
  private readonly logins: Counter<'result'>;
  private readonly throttled: Counter;
  private readonly syncRuns: Counter<'state'>;
  private readonly syncBlobs: Counter;
  private readonly syncBytes: Counter;

  constructor(
    private readonly metrics: PluginMetrics,
    private readonly defaultSource: ServedSource,
    /** Blobs and bytes of the embedded store, read at scrape time; undefined with Pulp. */
    stored: (() => Promise<{ blobs: number; bytes: number }>) | undefined,
  ) {
    const registers = [metrics.registry];
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) => {
      this.names.push(name);
      return new Counter<L>({ name, help, labelNames, registers });
    };
    this.served = counter('container_gateway_served_bytes_total', 'Bytes of manifests and blobs answered to clients, by where they came from (store, pulp, main)', ['source']);
    this.manifestCache = counter('container_gateway_manifest_cache_lookups_total', 'Lookups in the cache of manifests read from Pulp, by result (hit, miss)', ['result']);
    this.onDemandReads = counter('container_gateway_on_demand_reads_total', 'On-demand reads: from the store (hit) or fetched from the main server (miss)', ['result']);
    this.onDemandBytes = counter('container_gateway_on_demand_fetched_bytes_total', 'Bytes fetched from the main server by on-demand reads');
    this.upstreamErrors = counter('container_gateway_upstream_errors_total', 'Requests failed by an upstream (content backend, main server), by kind (connect, timeout, reset, katello_unreachable)', ['kind']);
    this.logins = counter('container_gateway_logins_total', 'Password logins, by result (success, failure, unknown: the answer said nothing of the password)', ['result']);
    this.throttled = counter('container_gateway_logins_throttled_total', 'Logins refused with 429 (too many failures, or too many at once)');
    this.syncRuns = counter('container_gateway_sync_runs_total', 'Sync runs ended, by state (succeeded, failed)', ['state']);
    this.syncBlobs = counter('container_gateway_sync_blobs_total', 'Blobs downloaded by sync runs');
    this.syncBytes = counter('container_gateway_sync_bytes_total', 'Bytes downloaded by sync runs');
    if (stored) {
      // Every worker reads the same database: the cluster view takes one worker's value, not the sum.
      const gauge = (name: string, help: string, key: 'blobs' | 'bytes') => {
        this.names.push(name);
        new Gauge({ name, help, registers, aggregator: 'first', async collect() { this.set((await stored())[key]); } });
      };
      gauge('container_gateway_stored_blobs', 'Blobs in the embedded store', 'blobs');
      gauge('container_gateway_stored_bytes', 'Bytes of the blobs in the embedded store', 'bytes');
    }
    metrics.classifyRoutes(gatewayRouteClass);
  }

  /** Counts, when a registry answer ends, its content bytes by source and its upstream failure. */
  middleware(): RequestHandler {
    return (req, res, next) => {
      // Mounted at the root and under /container_gateway: a request passing both is counted once.
      if (res.locals.gatewayCounted) return next();
      res.locals.gatewayCounted = true;
      res.once('close', () => {
        const failure = res.locals.upstreamFailure as string | undefined;
        if (failure) this.upstreamErrors.inc({ kind: failure });
        if (req.method !== 'GET' || !res.writableFinished || res.statusCode < 200 || res.statusCode > 299) return;
        const length = Number(res.getHeader('content-length'));
        const path = req.originalUrl.split('?')[0]!;
        if (!(length > 0) || !/\/(manifests|blobs)\/[^/]+$/.test(path) || path.includes('/blobs/uploads/')) return;
        this.served.inc({ source: (res.locals.servedFrom as ServedSource | undefined) ?? this.defaultSource }, length);
      });
      next();
    };
  }

  manifestLookup(hit: boolean): void {
    this.manifestCache.inc({ result: hit ? 'hit' : 'miss' });
  }

  onDemandRead(hit: boolean): void {
    this.onDemandReads.inc({ result: hit ? 'hit' : 'miss' });
  }

  onDemandFetched(bytes: number): void {
    this.onDemandBytes.inc(bytes);
  }

  login(ok: boolean | undefined): void {
    this.logins.inc({ result: ok === true ? 'success' : ok === false ? 'failure' : 'unknown' });
  }

  loginThrottled(): void {
    this.throttled.inc();
  }

  syncEnded(state: 'succeeded' | 'failed', blobs: number, bytes: number): void {
    this.syncRuns.inc({ state });
    this.syncBlobs.inc(blobs);
    this.syncBytes.inc(bytes);
  }

  /** Out of the registry: a gateway set up again registers them anew. */
  close(): void {
    for (const name of this.names) this.metrics.registry.removeSingleMetric(name);
  }
}
