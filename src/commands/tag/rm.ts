import { Args } from '@oclif/core';
import { CloudCommand, scopeOf, tagScopeFlags } from '../../cli/cloud.js';

export default class TagRm extends CloudCommand<{ key: string; removed: true }> {
  static override summary = 'Remove a tag from a fleet, a device or a release.';
  static override examples = ['<%= config.bin %> tag rm location --device 7cf02a6'];
  static override args = { key: Args.string({ description: 'Tag key.', required: true }) };
  static override flags = tagScopeFlags;

  async run(): Promise<{ key: string; removed: true }> {
    const { args, flags } = await this.parse(TagRm);
    await (await this.cloud()).removeTag(scopeOf(flags, ['fleet', 'device', 'release']), args.key);
    (await this.output()).info(`Tag ${args.key} removed.`);
    return { key: args.key, removed: true };
  }
}
