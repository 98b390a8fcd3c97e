// smart-proxy's `logs` module: GET /logs/ returns the in-memory log buffer and
// the failure messages of plugins, for Foreman's "Logs" tab. Enabled by
// default, as in smart-proxy.
import { badRequest, definePlugin } from '../../lib/plugins/api.ts';

export default definePlugin({
  name: 'logs',
  version: '0.1.0',
  defaultEnabled: true,
  setup(ctx) {
    ctx.router.get('/', ctx.auth.trustedClient, (req, res) => {
      const raw = req.query.from_timestamp;
      const from = raw === undefined ? 0 : Number(raw);
      if (typeof raw !== 'undefined' && (typeof raw !== 'string' || !Number.isFinite(from))) {
        throw badRequest(`from_timestamp must be a number (seconds since the epoch), got ${JSON.stringify(raw)}`);
      }
      const buffer = ctx.daemon.logBuffer;
      const failed = Object.fromEntries(
        ctx.daemon
          .plugins()
          .filter((p) => p.state === 'failed')
          .map((p) => [p.name, p.message ?? 'failed']),
      );
      res.json({
        info: { size: buffer.size, tail_size: buffer.tailSize, level: null, level_tail: 3, failed_modules: failed },
        logs: buffer.since(from),
      });
    });
  },
});
