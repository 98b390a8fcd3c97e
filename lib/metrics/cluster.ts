// /metrics with `workers`: the primary serves nothing, so the worker that gets
// the scrape asks the primary, which gathers every worker's registry
// (prom-client's AggregatorRegistry over node:cluster) and answers with one
// page: counters and histograms summed, gauges as each one says.
import cluster, { type Worker } from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { AggregatorRegistry, type Registry } from 'prom-client';

export type MetricsRequest = { type: 'metrics-request'; id: string };
type MetricsReply = { type: 'metrics-reply'; id: string; text?: string; error?: string };

const REPLY_TIMEOUT_MS = 10_000;

/** In the primary: answer workers' requests for the aggregated page. */
export function serveClusterMetrics(): (worker: Worker, msg: MetricsRequest) => void {
  const aggregator = new AggregatorRegistry();
  return (worker, msg) => {
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: 'metrics-reply', id: msg.id, text } satisfies MetricsReply),
      (err: Error) => worker.send({ type: 'metrics-reply', id: msg.id, error: err.message } satisfies MetricsReply),
    );
  };
}

/** In a worker: offer `registry` to the primary's aggregation. */
export function joinClusterMetrics(registry: Registry): void {
  AggregatorRegistry.setRegistries([registry]);
  // Made in a worker, it only starts answering the primary's requests.
  new AggregatorRegistry();
}

/** In a worker: the aggregated page of every worker, from the primary. */
export function clusterMetricsText(): Promise<string> {
  return new Promise((resolve, reject) => {
    const id = randomUUID();
    const onMessage = (msg: MetricsReply) => {
      if (msg?.type !== 'metrics-reply' || msg.id !== id) return;
      done();
      if (msg.text !== undefined) resolve(msg.text);
      else reject(new Error(`the primary could not gather the workers' metrics: ${msg.error}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`the primary did not answer with the workers' metrics within ${REPLY_TIMEOUT_MS / 1000} s`));
    }, REPLY_TIMEOUT_MS);
    const done = () => {
      clearTimeout(timer);
      process.off('message', onMessage);
    };
    process.on('message', onMessage);
    process.send!({ type: 'metrics-request', id } satisfies MetricsRequest);
  });
}

export const inCluster = (): boolean => cluster.isWorker;
