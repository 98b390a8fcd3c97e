// GET /metrics, parsed: the samples of the Prometheus text page, summed by name and labels.
import type t from 'tap';
import { request } from './http.ts';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

/** One scrape: `value(name, labels)` sums the samples of `name` carrying every given label. */
export interface Scrape {
  text: string;
  value(name: string, labels?: Record<string, string>): number;
}

export async function scrape(tt: Tap, base: string): Promise<Scrape> {
  const r = await request(`${base}/metrics`);
  tt.equal(r.status, 200, `GET /metrics: 200 (${r.body.slice(0, 200)})`);
  tt.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const samples = r.body
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(l)!;
      const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
      return { name: m[1]!, labels, value: Number(m[3]) };
    });
  return {
    text: r.body,
    value: (name, labels = {}) => samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0),
  };
}

