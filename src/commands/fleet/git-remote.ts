import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import { SkiffError } from '../../lib/errors/errors.js';

/** What `fleet git-remote` prints with --json. */
export interface GitRemoteResult {
  fleet: string;
  /** `<server url>/git/<fleet>.git` */
  url: string;
  /** With --add: the remote's name and whether it was added now or was there already. */
  remote?: { name: string; outcome: 'added' | 'exists' };
}

export default class FleetGitRemote extends CloudCommand<GitRemoteResult> {
  static override summary = "Print a fleet's git remote URL; with --add, add it to the project's repository.";
  static override description = `A git push of the default branch to this remote builds that commit on the server exactly as 'skiff push <fleet>' does and makes the release, stamped with the commit; the build's output shows in git's 'remote:' lines and a commit that does not build is refused.

git asks for a username and a password: the username is your email, the password an API key ('skiff api-key generate'). git's credential helper can keep them (git config credential.helper store, or your system's keychain helper).

--add [NAME] adds the remote to the repository holding --source (default: the current folder) as NAME (default 'skiff'); a remote of that name pointing elsewhere is an error, never overwritten.`;
  static override examples = [
    '<%= config.bin %> fleet git-remote kiosks',
    '<%= config.bin %> fleet git-remote kiosks --add',
    '<%= config.bin %> fleet git-remote kiosks --add cloud --source ./app',
  ];
  static override args = {
    fleet: Args.string({ description: 'Fleet name.', required: true }),
    name: Args.string({ description: 'With --add: the remote name (default: skiff).' }),
  };
  static override flags = {
    add: Flags.boolean({ description: "Add the remote to the project's git repository." }),
    source: Flags.string({ char: 's', description: 'With --add: the project folder (any folder of its repository).', default: '.' }),
  };

  async run(): Promise<GitRemoteResult> {
    const { args, flags } = await this.parse(FleetGitRemote);
    if (args.name !== undefined && !flags.add) {
      throw new SkiffError('usage', `'${args.name}' is a remote name, which only --add takes`, { hint: `run: skiff fleet git-remote ${args.fleet} --add ${args.name}` });
    }
    const client = await this.cloud();
    // The fleet as the server knows it: a typo, or another user's fleet, is "not found" here and not at git push time.
    const fleet = await client.fleet(args.fleet);
    const url = `${client.url}/git/${encodeURIComponent(fleet.name)}.git`;
    const out = await this.output();
    const result: GitRemoteResult = { fleet: fleet.name, url };
    if (flags.add) {
      const name = args.name ?? 'skiff';
      if (!/^[A-Za-z0-9][A-Za-z0-9._/-]*$/.test(name)) throw new SkiffError('usage', `'${name}' is not a usable git remote name`, { hint: 'use letters, digits, ".", "_", "-" and "/"' });
      const { addGitRemote } = await import('../../lib/project/git-info.js');
      const outcome = await addGitRemote(flags.source, name, url);
      result.remote = { name, outcome };
      out.info(outcome === 'added' ? `Added remote '${name}' → ${url}` : `Remote '${name}' already points at ${url}`);
      out.info(`Deploy with: git push ${name} HEAD:main (a push to the fleet's main branch builds and releases; other branches are only stored)`);
    }
    out.result(url);
    out.info(out.chalk.dim(`git asks for a username and password: your email (${(await client.whoami().catch(() => undefined))?.user.email ?? 'the one you log in with'}) and an API key from 'skiff api-key generate'; git config credential.helper store keeps them.`));
    return result;
  }
}
