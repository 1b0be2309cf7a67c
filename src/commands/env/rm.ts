import { Args } from '@oclif/core';
import { CloudCommand, scopeOf, variableScopeFlags } from '../../cli/cloud.js';

export default class EnvRm extends CloudCommand<{ name: string; removed: true }> {
  static override summary = 'Remove an environment variable of a fleet or a device.';
  static override examples = ['<%= config.bin %> env rm GREETING --fleet kiosks', '<%= config.bin %> env rm PORT --fleet kiosks --service web'];
  static override args = { name: Args.string({ description: 'Variable name.', required: true }) };
  static override flags = variableScopeFlags;

  async run(): Promise<{ name: string; removed: true }> {
    const { args, flags } = await this.parse(EnvRm);
    await (await this.cloud()).removeVariable(scopeOf(flags, ['fleet', 'device']), args.name);
    (await this.output()).info(`${args.name} removed.`);
    return { name: args.name, removed: true };
  }
}
