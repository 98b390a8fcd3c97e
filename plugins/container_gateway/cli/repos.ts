// `proxyctl repos ...` and `proxyctl tags list`: the gateway's repositories,
// who may read a private one (grants), deletion, and the tags stored.
import type { Command } from 'commander';
import type { PluginCli } from '../../../lib/plugins/api.ts';
import { ADMIN, call, checkRepository, checkUser, repoPath, table } from './common.ts';

interface RepositoryRow {
  name: string;
  public: boolean;
  owner?: string;
}

export const registerRepos: PluginCli = (program, ctx) => {
  const repos = program
    .command('repos')
    .description('repositories of the container gateway: created private on first push');

  repos
    .command('list')
    .description('every repository: name, public or private, owner')
    .action(async (_opts: unknown, cmd: Command) => {
      const data = (await call(ctx, cmd, 'GET', `${ADMIN}/repositories`)) as { repositories?: RepositoryRow[] };
      const rows = data.repositories ?? [];
      const text = rows.length > 0
        ? table([['REPOSITORY', 'VISIBILITY', 'OWNER'], ...rows.map((r) => [r.name, r.public ? 'public' : 'private', r.owner ?? '-'])])
        : '(no repositories)';
      ctx.print(cmd, rows, text);
    });

  for (const visibility of ['public', 'private'] as const) {
    repos
      .command(`set-${visibility}`)
      .description(visibility === 'public' ? 'let anyone pull the repository, anonymous clients included' : "only its owner and the users granted it ('repos grant') may pull the repository")
      .argument('<name>', 'repository name, e.g. team/app')
      .action(async (name: string, _opts: unknown, cmd: Command) => {
        checkRepository(name);
        const data = await call(ctx, cmd, 'PUT', `${ADMIN}/repositories/${repoPath(name)}/visibility`, { public: visibility === 'public' });
        ctx.print(cmd, data, `repository '${name}' is now ${visibility}`);
      });
  }

  repos
    .command('grant')
    .description('let a user pull a private repository (standalone mode)')
    .argument('<user>', 'user name')
    .argument('<repo>', 'repository name, e.g. team/app')
    .action(async (user: string, repo: string, _opts: unknown, cmd: Command) => {
      checkUser(user);
      checkRepository(repo);
      const data = await call(ctx, cmd, 'PUT', `${ADMIN}/repositories/${repoPath(repo)}/users/${encodeURIComponent(user)}`);
      ctx.print(cmd, data, `user '${user}' may pull repository '${repo}'`);
    });

  repos
    .command('revoke')
    .description("take a grant back: the user no longer pulls the private repository (its owner always does)")
    .argument('<user>', 'user name')
    .argument('<repo>', 'repository name')
    .action(async (user: string, repo: string, _opts: unknown, cmd: Command) => {
      checkUser(user);
      checkRepository(repo);
      const data = await call(ctx, cmd, 'DELETE', `${ADMIN}/repositories/${repoPath(repo)}/users/${encodeURIComponent(user)}`);
      ctx.print(cmd, data, `user '${user}' may no longer pull repository '${repo}'`);
    });

  repos
    .command('delete')
    .description("delete a repository with its tags, manifests and grants (standalone mode); 'proxyctl gc' then reclaims its blobs")
    .argument('<name>', 'repository name')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      checkRepository(name);
      const data = await call(ctx, cmd, 'DELETE', `${ADMIN}/repositories/${repoPath(name)}`);
      ctx.print(cmd, data, `repository '${name}' deleted; its content is reclaimed by 'proxyctl gc'`);
    });

  program
    .command('tags')
    .description('tags of the repositories in the embedded store')
    .command('list')
    .description('the tags of a repository and the manifest digest each points to')
    .argument('<repo>', 'repository name')
    .action(async (repo: string, _opts: unknown, cmd: Command) => {
      checkRepository(repo);
      const data = (await call(ctx, cmd, 'GET', `${ADMIN}/repositories/${repoPath(repo)}/tags`, undefined, undefined, 'is container_gateway running there?')) as { tags?: Array<{ tag: string; digest: string }> };
      const tags = data.tags ?? [];
      ctx.print(cmd, data, tags.length > 0 ? table([['TAG', 'DIGEST'], ...tags.map((t) => [t.tag, t.digest])]) : '(no tags)');
    });
};
