import { Args } from '@oclif/core';
import { CloudCommand, yesFlag } from '../../cli/cloud.js';

export default class UserRm extends CloudCommand<{ email: string; removed: true }> {
  static override summary = 'Remove a user (administrators only).';
  static override examples = ['<%= config.bin %> user rm ann@example.com --yes'];
  static override args = { email: Args.string({ description: 'Email of the user.', required: true }) };
  static override flags = { yes: yesFlag };

  async run(): Promise<{ email: string; removed: true }> {
    const { args, flags } = await this.parse(UserRm);
    const client = await this.cloud();
    await this.confirmOrStop(flags.yes, `Remove user ${args.email}?`);
    await client.removeUser(args.email);
    (await this.output()).info(`User ${args.email} removed.`);
    return { email: args.email, removed: true };
  }
}
