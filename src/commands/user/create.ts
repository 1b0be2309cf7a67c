import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import { SkiffError } from '../../lib/errors/errors.js';
import type { User } from '../../lib/api/resources.js';

export default class UserCreate extends CloudCommand<User> {
  static override summary = 'Add a user to the server (administrators only).';
  static override description = 'The password comes from --password-file, or is asked for (twice) on a terminal. At least 8 characters.';
  static override examples = ['<%= config.bin %> user create ann@example.com --password-file ann.pw', '<%= config.bin %> user create ops@example.com --admin'];
  static override args = { email: Args.string({ description: 'Email of the new user.', required: true }) };
  static override flags = {
    'password-file': Flags.string({ description: 'File whose first line is the password.' }),
    admin: Flags.boolean({ description: 'Make the user an administrator (may add and remove users).' }),
  };

  async run(): Promise<User> {
    const { args, flags } = await this.parse(UserCreate);
    const [{ readPasswordFile }, { isInteractive }] = await Promise.all([import('../../lib/cloud/credentials.js'), import('../../ui/terminal.js')]);
    let password: string;
    if (flags['password-file'] !== undefined) password = readPasswordFile(flags['password-file']);
    else if (isInteractive()) {
      const { password: ask } = await import('../../ui/prompt.js');
      password = await ask(`Password for ${args.email}:`);
      if ((await ask('Again:')) !== password) throw new SkiffError('usage', 'the two passwords differ');
    } else throw new SkiffError('notInteractive', `a password is needed for ${args.email}`, { hint: 'pass --password-file FILE' });
    const client = await this.cloud();
    const user = await client.createUser({ email: args.email, password, ...(flags.admin ? { isAdmin: true } : {}) });
    (await this.output()).info(`User ${user.email} created${user.isAdmin ? ' (admin)' : ''}.`);
    return user;
  }
}
