// Process behaviour an init system relies on: graceful SIGTERM/SIGINT with
// in-flight requests, a bounded wait, SIGUSR1 log reopening, start-up failure.
import { existsSync, readFileSync, renameSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { PROXYD, run, startProxyd, writeSettings } from './helpers/proxyd.ts';

t.test('SIGTERM during a slow request: the request completes, new connections are refused, exit 0', async (t) => {
  const p = await startProxyd({ plugins: { hello: { enabled: true } } });
  const slow = request(`${p.httpUrl}/hello/slow?ms=1500`);
  await p.waitForLog(/slow request started/);
  p.proc.kill('SIGTERM');
  await p.waitForLog(/SIGTERM: stopping/);
  const refused = await request(`${p.httpUrl}/healthz`).then(
    () => 'answered',
    (err: NodeJS.ErrnoException) => err.code,
  );
  t.equal(refused, 'ECONNREFUSED', 'no new connections once stopping');
  const res = await slow;
  t.same([res.status, res.json()], [200, { slept: 1500 }], 'the in-flight request completed');
  t.equal(await p.exited, 0, 'exit code 0');
});

t.test('SIGINT also stops gracefully with exit 0', async (t) => {
  const p = await startProxyd({});
  t.equal(await p.stop('SIGINT'), 0);
  t.ok(p.lines.some((l) => l.includes('proxyd stopped')));
});

t.test('in-flight requests are cut after shutdown_timeout, and the process still exits 0', async (t) => {
  const p = await startProxyd({ settings: { shutdown_timeout: 0.5 }, plugins: { hello: { enabled: true } } });
  const slow = request(`${p.httpUrl}/hello/slow?ms=30000`).then(
    (r) => `answered ${r.status}`,
    (err: NodeJS.ErrnoException) => err.code ?? err.message,
  );
  await p.waitForLog(/slow request started/);
  p.proc.kill('SIGTERM');
  t.equal(await slow, 'ECONNRESET', 'the client sees the connection close, not a hang');
  t.equal(await p.exited, 0);
  t.ok(p.lines.some((l) => l.includes('did not finish in time')), 'the cut is logged');
});

t.test('an idle keep-alive connection does not hold up shutdown', async (t) => {
  const p = await startProxyd({ settings: { shutdown_timeout: 30 } });
  const socket = net.connect(Number(new URL(p.httpUrl).port), '127.0.0.1');
  await new Promise((r) => socket.once('connect', r));
  socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n');
  await new Promise((r) => socket.once('data', r));
  const closed = new Promise((r) => socket.once('close', r));
  p.proc.kill('SIGTERM');
  await closed;
  t.pass('the idle connection was closed by the daemon');
  t.equal(await p.exited, 0);
  t.notOk(p.lines.some((l) => l.includes('did not finish in time')), 'without waiting for the bound');
});

t.test('SIGUSR1 reopens the log file after logrotate moved it', async (t) => {
  const p0 = await startProxyd({});
  await p0.stop();
  const logFile = join(p0.dir, 'proxy.log');
  const p = await launchWithLogFile(p0.dir, logFile);
  t.teardown(() => p.stop());
  await request(`${p.url}/healthz`, { headers: { 'X-Request-Id': 'before-rotate' } });
  renameSync(logFile, `${logFile}.1`);
  p.proc.kill('SIGUSR1');
  await waitFor(() => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('log file reopened'));
  await request(`${p.url}/healthz`, { headers: { 'X-Request-Id': 'after-rotate' } });
  await waitFor(() => readFileSync(logFile, 'utf8').includes('after-rotate'));
  t.match(readFileSync(`${logFile}.1`, 'utf8'), /before-rotate/, 'earlier lines stay in the rotated file');
  t.notMatch(readFileSync(`${logFile}.1`, 'utf8'), /after-rotate/, 'later lines are not written to the rotated file');
  t.match(readFileSync(logFile, 'utf8'), /after-rotate/, 'later lines go to the new file');
});

t.test('a port already in use stops start-up with exit 1 and a clear message', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as net.AddressInfo).port;
  const p0 = await startProxyd({});
  await p0.stop();
  const file = join(p0.dir, 'busy.yml');
  writeSettings(file, { bind_host: '127.0.0.1', http_port: port, log_file: 'STDOUT' });
  const r = await run([PROXYD, '--settings', file]);
  t.equal(r.code, 1);
  t.match(r.stderr, `Errors detected on startup, see log for details. Exiting: cannot listen for http on 127.0.0.1:${port}`);
  t.match(r.stderr, /EADDRINUSE/);
});

async function waitFor(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A daemon logging to a file (not stdout), so readiness is read from the file. */
async function launchWithLogFile(dir: string, logFile: string) {
  const { freePort, spawnNode, childEnv } = await import('./helpers/proxyd.ts');
  const port = await freePort();
  const file = join(dir, 'file-log.yml');
  writeSettings(file, { bind_host: '127.0.0.1', http_port: port, log_file: logFile, settings_directory: join(dir, 'settings.d') });
  const proc = spawnNode([PROXYD, '--settings', file], { cwd: dir, env: childEnv() });
  const exited = new Promise<number | null>((r) => proc.on('exit', r));
  await waitFor(() => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('Smart proxy has launched'));
  return {
    proc,
    url: `http://127.0.0.1:${port}`,
    stop: () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

t.test('workers: several processes serve one port; SIGTERM stops them all with exit 0', async (t) => {
  const p = await startProxyd({ settings: { workers: 2 }, plugins: { hello: { enabled: true } } });
  const launched = () => new Set(p.lines.filter((l) => l.includes('Smart proxy has launched')).map((l) => JSON.parse(l).pid as number));
  for (let i = 0; i < 50 && launched().size < 2; i++) await new Promise((r) => setTimeout(r, 100));
  t.equal(launched().size, 2, 'two worker processes are listening');
  const pids = new Set<number>();
  for (let i = 0; i < 20; i++) {
    t.equal((await request(`${p.httpUrl}/hello/ping`)).status, 200);
    const line = p.lines.filter((l) => l.includes('Finished GET /hello/ping')).at(-1);
    if (line) pids.add(JSON.parse(line).pid as number);
  }
  t.equal(pids.size, 2, 'requests are served by both workers');
  t.equal(await p.stop('SIGTERM'), 0);
  t.equal(p.lines.filter((l) => l.includes('proxyd stopped')).length, 2, 'each worker stopped gracefully');
});

t.test('workers: a worker that cannot start fails start-up with exit 1', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as net.AddressInfo).port;
  const p0 = await startProxyd({});
  await p0.stop();
  const file = join(p0.dir, 'busy-workers.yml');
  writeSettings(file, { bind_host: '127.0.0.1', http_port: port, log_file: 'STDOUT', workers: 2 });
  const r = await run([PROXYD, '--settings', file]);
  t.equal(r.code, 1);
  t.match(r.stderr, /Exiting: cannot listen for http on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
});
