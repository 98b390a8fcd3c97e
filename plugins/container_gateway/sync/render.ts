// Text for `proxyctl sync` and `proxyctl status`: a progress line (a bar on a
// terminal, redrawn in place) and one-line summaries of a run. Pure functions
// over the admin API's run objects (routes/admin-sync.ts).
import type { RetryNotice } from '../upstream/main-registry.ts';

/** A run as GET /container_gateway/sync answers it (the fields proxyctl uses). */
export interface RunView {
  id: number;
  state: 'running' | 'succeeded' | 'failed' | 'interrupted';
  started_at?: string;
  finished_at?: string;
  progress: {
    repositories: { done: number; total: number };
    tags?: { done: number; total: number };
    blobs: { done: number; total: number; transferred: number };
    bytes: number;
    untagged?: string[];
  };
  error?: string;
  retrying?: RetryNotice;
}

export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  do {
    v /= 1000;
    i++;
  } while (v >= 1000 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** `12/20 repositories, 55/100 tags, 340/800 blobs (25 downloaded, 1.23 GB)`. */
export function counters(run: RunView): string {
  const p = run.progress;
  const tags = p.tags ? `${p.tags.done}/${p.tags.total} tags, ` : '';
  return `${p.repositories.done}/${p.repositories.total} repositories, ${tags}${p.blobs.done}/${p.blobs.total} blobs (${p.blobs.transferred} downloaded, ${formatBytes(p.bytes)})`;
}

/** One terminal line: a bar over the repositories, the counters, or the retry notice; cut to `width`. */
export function progressLine(run: RunView, width: number): string {
  const p = run.progress;
  const cells = 20;
  // Repositories done, plus the blob share of the current ones, so the bar moves within big repositories too.
  const partial = p.blobs.total > 0 && p.repositories.total > 0 ? (p.blobs.done / p.blobs.total) * 0.999 : 0;
  const fraction = p.repositories.total > 0 ? Math.min(1, Math.max(p.repositories.done / p.repositories.total, (p.repositories.done + partial) / p.repositories.total)) : 0;
  const filled = Math.round(fraction * cells);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(cells - filled)}]`;
  const tags = p.tags ? ` ${p.tags.done}/${p.tags.total} tags` : '';
  // Short words: the line must fit a terminal row to be redrawn in place.
  const text = `sync #${run.id} ${bar} ${p.repositories.done}/${p.repositories.total} repos${tags} ${p.blobs.done}/${p.blobs.total} blobs ${p.blobs.transferred} new ${formatBytes(p.bytes)}${run.retrying ? ` - ${run.retrying.message}` : ''}`;
  return text.length > width ? `${text.slice(0, Math.max(0, width - 1))}…` : text;
}

/** `; 2 repositories without tags on the main server (synced as empty): a/b, c/d`, or ''. */
function untagged(run: RunView): string {
  const names = run.progress.untagged ?? [];
  if (names.length === 0) return '';
  const shown = names.slice(0, 5).join(', ') + (names.length > 5 ? ', ...' : '');
  return `; ${names.length} ${names.length === 1 ? 'repository' : 'repositories'} without tags on the main server (synced as empty): ${shown}`;
}

/** The final line: `sync #3 succeeded: ...` or `sync #3 failed: <reason> (...)`. */
export function summary(run: RunView): string {
  if (run.state === 'succeeded') return `sync #${run.id} succeeded: ${counters(run)}${untagged(run)}`;
  if (run.state === 'running') return `sync #${run.id} running: ${counters(run)}${run.retrying ? ` - ${run.retrying.message}` : ''}`;
  return `sync #${run.id} ${run.state}: ${run.error ?? 'no reason given'} (${counters(run)})`;
}

/** For `proxyctl status`: the last run in one line. */
export function statusLine(run: RunView): string {
  const when = run.state === 'running' ? `since ${run.started_at}` : `at ${run.finished_at ?? run.started_at}`;
  const detail = run.state === 'succeeded' ? counters(run) + untagged(run) : run.state === 'running' ? counters(run) : (run.error ?? 'no reason given');
  return `last sync: #${run.id} ${run.state} ${when}: ${detail}`;
}
