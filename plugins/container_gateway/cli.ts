// proxyctl commands of the container gateway (the file the plugin loader
// finds; the commands live in cli/): users, tokens and repositories of
// standalone mode (no foreman_url, where the gateway keeps its own), tags,
// the embedded store's gc and verify, and sync from a main server. Each calls
// the gateway's admin API; what it answers decides the exit code: 1 refused or
// not found (the daemon's message on stderr), 2 daemon unreachable or failing
// (5xx), 64 usage (a bad name, an empty password, passwords that differ), 130
// interrupted at the password prompt. `proxyctl status` shows the database, the
// on-demand counters, the last sync and the node's name under the plugin's row
// (cli/status.ts). `proxyctl db migrate` alone works without the daemon: it
// copies an SQLite database into PostgreSQL directly (cli/db.ts).
import type { PluginCli } from '../../lib/plugins/api.ts';
import { registerDb } from './cli/db.ts';
import { registerRepos } from './cli/repos.ts';
import { registerStore } from './cli/store.ts';
import { registerSync } from './cli/sync.ts';
import { registerUsers } from './cli/users.ts';

export { status } from './cli/status.ts';

const register: PluginCli = async (program, ctx) => {
  for (const part of [registerUsers, registerRepos, registerStore, registerSync, registerDb]) await part(program, ctx);
};

export default register;
