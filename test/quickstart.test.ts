// The README's quickstart, as a new user pastes it: `bin/proxyd` with no
// settings file runs on its embedded defaults (127.0.0.1:8000), `curl
// /features` answers, and `bin/proxyctl status` exits 0.
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from './helpers/http.ts';
import { launch, PROXYCTL, PROXYD, ROOT, run } from './helpers/proxyd.ts';

function portInUse(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

// The embedded defaults apply only without a system settings file, and need port 8000.
const skip = existsSync('/etc/proxyd/settings.yml')
  ? '/etc/proxyd/settings.yml exists: the embedded defaults do not apply'
  : (await portInUse(8000))
    ? 'port 8000 is taken by another program'
    : false;

t.test('proxyd on embedded defaults, then proxyctl status', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'proxyd-quickstart-'));
  const p = await launch([PROXYD], { dir, settingsFile: '', httpPort: 8000, httpsPort: 8443, cwd: ROOT });
  t.teardown(() => p.stop());
  t.match(p.lines.join('\n'), /starting with settings from \(embedded defaults\)/);
  const features = await request('http://127.0.0.1:8000/features');
  t.same([features.status, features.json()], [200, ['logs']]);
  const status = await run([PROXYCTL, 'status']);
  t.equal(status.code, 0, status.stdout + status.stderr);
  t.match(status.stdout, /^logs\s+\S+\s+running\s+http, https$/m);
  t.equal(await p.stop(), 0);
});
