// `proxyctl users ...` and `proxyctl tokens revoke`: standalone accounts
// (no foreman_url), their namespaces, passwords and stored tokens.
import type { Command } from 'commander';
import type { PluginCli } from '../../../lib/plugins/api.ts';
import { ADMIN, call, checkUser, userPath } from './common.ts';

/** The admin API path of one granted namespace (its '/' kept: namespaces are paths). */
function namespacePath(user: string, namespace: string): string {
  return `${userPath(user)}/namespaces/${namespace.split('/').map(encodeURIComponent).join('/')}`;
}

/** What `users remove` did to the user's repositories: they stay, ownerless, and a new user of that name gets none. */
function removedText(name: string, orphaned: string[]): string {
  if (orphaned.length === 0) return `user '${name}' removed`;
  return [
    `user '${name}' removed; the repositories it owned now have no owner: ${orphaned.join(', ')}`,
    'Their content and visibility are unchanged: public ones stay public, private ones are readable only by mapped',
    `users; nobody can push to them. A user added later as '${name}' does not get them.`,
  ].join('\n');
}

export const registerUsers: PluginCli = (program, ctx) => {
  const users = program
    .command('users')
    .description("standalone users of the container gateway (who may log in with 'podman login')");

  users
    .command('add')
    .description('add a user; the password is asked twice on a terminal, else read as one line of stdin')
    .argument('<name>', "user name: 1 to 64 of letters, digits, '.', '_', '@' and '-'")
    .option('--password-stdin', 'read the password as one line of stdin')
    .action(async (name: string, opts: { passwordStdin?: boolean }, cmd: Command) => {
      checkUser(name);
      const password = await ctx.readPassword(`Password for ${name}: `, { fromStdin: opts.passwordStdin === true, confirm: true });
      const data = await call(ctx, cmd, 'POST', `${ADMIN}/users`, { name, password });
      ctx.print(cmd, data, `user '${name}' added`);
    });

  users
    .command('passwd')
    .description("change a user's password (asked twice on a terminal, else one line of stdin); its tokens stay valid until they expire or 'proxyctl tokens revoke'")
    .argument('<name>', 'user name')
    .option('--password-stdin', 'read the password as one line of stdin')
    .action(async (name: string, opts: { passwordStdin?: boolean }, cmd: Command) => {
      checkUser(name);
      const password = await ctx.readPassword(`New password for ${name}: `, { fromStdin: opts.passwordStdin === true, confirm: true });
      const data = await call(ctx, cmd, 'PUT', `${userPath(name)}/password`, { password });
      ctx.print(cmd, data, `password of user '${name}' changed`);
    });

  users
    .command('remove')
    .description('remove a user (its tokens stop working; its repositories stay, without owner)')
    .argument('<name>', 'user name')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = (await call(ctx, cmd, 'DELETE', userPath(name))) as { orphaned?: string[] };
      ctx.print(cmd, data, removedText(name, data.orphaned ?? []));
    });

  users
    .command('list')
    .description('the users, one per line')
    .action(async (_opts: unknown, cmd: Command) => {
      const data = (await call(ctx, cmd, 'GET', `${ADMIN}/users`)) as { users?: string[] };
      const names = data.users ?? [];
      ctx.print(cmd, names, names.length > 0 ? names.join('\n') : '(no users)');
    });

  // Repositories are created only under the user's own name or a namespace granted here.
  users
    .command('grant')
    .description("let a user create repositories under NAMESPACE/... (besides its own name); to let it read one repository: 'proxyctl repos grant'")
    .argument('<name>', 'user name')
    .argument('<namespace>', "a namespace, e.g. 'team' or 'team/web'")
    .action(async (name: string, namespace: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = await call(ctx, cmd, 'PUT', namespacePath(name, namespace));
      ctx.print(cmd, data, `user '${name}' may create repositories under ${namespace}/`);
    });

  users
    .command('revoke')
    .description('take a namespace back (repositories already created there keep their owner)')
    .argument('<name>', 'user name')
    .argument('<namespace>', 'a namespace granted before')
    .action(async (name: string, namespace: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = await call(ctx, cmd, 'DELETE', namespacePath(name, namespace));
      ctx.print(cmd, data, `user '${name}' may no longer create repositories under ${namespace}/`);
    });

  users
    .command('namespaces')
    .description('the namespaces granted to a user, one per line')
    .argument('<name>', 'user name')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = (await call(ctx, cmd, 'GET', `${userPath(name)}/namespaces`)) as { namespaces?: string[] };
      const list = data.namespaces ?? [];
      ctx.print(cmd, data, list.length > 0 ? list.join('\n') : '(none granted)');
    });

  users
    .command('repos')
    .description("the repositories a user was granted ('proxyctl repos grant'), one per line")
    .argument('<name>', 'user name')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = (await call(ctx, cmd, 'GET', `${userPath(name)}/repositories`)) as { repositories?: string[] };
      const list = data.repositories ?? [];
      ctx.print(cmd, data, list.length > 0 ? list.join('\n') : '(none granted)');
    });

  program
    .command('tokens')
    .description('registry tokens the gateway issued and stores')
    .command('revoke')
    .description("delete every stored token of a user: its next registry request is answered 401 with a challenge, and it logs in again")
    .argument('<name>', 'user name')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      checkUser(name);
      const data = (await call(ctx, cmd, 'DELETE', `${userPath(name)}/tokens`, undefined, undefined, 'is container_gateway running there?')) as { revoked: number };
      ctx.print(cmd, data, `${data.revoked} tokens of user '${name}' revoked`);
    });
};
