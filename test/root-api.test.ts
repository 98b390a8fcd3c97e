// The root API Foreman reads (exact shapes), /logs, request ids in log lines,
// and the liveness/readiness probes, against a real daemon over HTTP.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { ROOT, startProxyd } from './helpers/proxyd.ts';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

t.test('GET /features and GET /version list running plugins only', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: true }, broken_setup: { enabled: true } } });
  t.teardown(() => p.stop());
  const features = await request(`${p.httpUrl}/features`);
  t.equal(features.status, 200);
  t.match(features.headers['content-type'], /application\/json/);
  t.same(features.json(), ['hello', 'logs']);
  const version = await request(`${p.httpUrl}/version`);
  t.same(version.json(), { version: VERSION, modules: { hello: '1.2.3', logs: '0.1.0' } });
});

t.test('GET /logs: shape, from_timestamp, request ids, and a bad parameter', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: true } } });
  t.teardown(() => p.stop());
  const before = Date.now() / 1000;
  await request(`${p.httpUrl}/hello/ping`, { headers: { 'X-Request-Id': 'req-logs-1' } });
  const all = (await request(`${p.httpUrl}/logs/`)).json();
  t.same(all.info, { size: 2000, tail_size: 1000, level: null, level_tail: 3, failed_modules: {} });
  t.ok(all.logs.length > 0);
  for (const r of all.logs) {
    t.equal(typeof r.timestamp, 'number');
    t.match(r.level, /^(DEBUG|INFO|WARN|ERROR|FATAL|UNKNOWN)$/);
    t.equal(typeof r.message, 'string');
  }
  const started = all.logs.find((r: { message: string }) => r.message === 'Started GET /hello/ping');
  t.equal(started?.request_id, 'req-logs-1', 'records of a request carry its id');
  t.ok(all.logs.some((r: { message: string }) => /^Finished GET \/hello\/ping with 200 \(\d+\.\d ms\)$/.test(r.message)), 'access line with status and time');

  const recent = (await request(`${p.httpUrl}/logs/?from_timestamp=${before}`)).json();
  t.ok(recent.logs.every((r: { timestamp: number }) => r.timestamp >= before), 'from_timestamp keeps later records');
  t.ok(recent.logs.length < all.logs.length, 'and drops earlier ones');
  const future = (await request(`${p.httpUrl}/logs/?from_timestamp=${before + 3600}`)).json();
  t.same(future.logs, []);

  const bad = await request(`${p.httpUrl}/logs/?from_timestamp=yesterday`);
  t.equal(bad.status, 400);
  t.match(bad.json(), { error: /from_timestamp must be a number/ });
});

t.test('the log ring keeps the last log_buffer records and moves errors that fall off to the tail', async (t) => {
  const p = await startProxyd({ settings: { log_buffer: 6, log_buffer_errors: 2, log_level: 'INFO' }, plugins: { hello: { enabled: true } } });
  t.teardown(() => p.stop());
  for (let i = 0; i < 3; i++) t.equal((await request(`${p.httpUrl}/hello/boom`, { headers: { 'X-Request-Id': `boom-${i}` } })).status, 500);
  for (let i = 0; i < 5; i++) await request(`${p.httpUrl}/hello/ping`);
  const body = (await request(`${p.httpUrl}/logs/`)).json();
  t.equal(body.info.size, 6);
  t.equal(body.info.tail_size, 2);
  t.ok(body.logs.length <= 8, `at most size + tail_size records (got ${body.logs.length})`);
  const errors = body.logs.filter((r: { level: string }) => r.level === 'ERROR');
  t.same(errors.map((r: { request_id: string }) => r.request_id), ['boom-1', 'boom-2'], 'the last two errors survive in the tail');
  t.ok(errors[0].backtrace?.length > 0, 'errors keep their backtrace');
  t.notOk(body.logs.some((r: { level: string }) => r.level === 'DEBUG'), 'records below log_level are not buffered');
});

t.test('X-Request-Id is honoured, a bad one replaced, and every line of a request carries it', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: true } } });
  t.teardown(() => p.stop());
  const mine = await request(`${p.httpUrl}/hello/slow?ms=10`, { headers: { 'X-Request-Id': 'abc-123', 'X-Session-Id': 'sess-9' } });
  t.equal(mine.headers['x-request-id'], 'abc-123');
  const lines = p.lines.map((l) => JSON.parse(l)).filter((r) => r.request === 'abc-123');
  t.same(lines.map((r) => r.msg).filter((m) => !m.startsWith('Finished')), ['Started GET /hello/slow ms=10', 'slow request started'], "the route's own log line carries the id");
  t.ok(lines.every((r) => r.session === 'sess-9' && r.remote_ip === '127.0.0.1'), 'session and peer address are in the context');

  const generated = await request(`${p.httpUrl}/hello/ping`, { headers: { 'X-Request-Id': 'bad id with spaces' } });
  t.match(generated.headers['x-request-id'], /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'an unsafe id is replaced by a UUID');
});

t.test('/healthz and /readyz', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: true } } });
  t.teardown(() => p.stop());
  const health = await request(`${p.httpUrl}/healthz`);
  t.same([health.status, health.json()], [200, { status: 'alive' }]);
  const ready = await request(`${p.httpUrl}/readyz`);
  t.same([ready.status, ready.json()], [200, { ready: true, not_running: [] }]);
});
