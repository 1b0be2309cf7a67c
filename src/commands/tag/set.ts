import { Args } from '@oclif/core';
import { CloudCommand, scopeOf, tagScopeFlags } from '../../cli/cloud.js';
import type { Tag } from '../../lib/api/resources.js';

export default class TagSet extends CloudCommand<Tag> {
  static override summary = 'Set a tag on a fleet, a device or a release.';
  static override examples = ['<%= config.bin %> tag set location lobby --device 7cf02a6', '<%= config.bin %> tag set qa passed --release 3f2a9c1'];
  static override args = {
    key: Args.string({ description: 'Tag key (no spaces).', required: true }),
    value: Args.string({ description: 'Value (default: empty).', default: '' }),
  };
  static override flags = tagScopeFlags;

  async run(): Promise<Tag> {
    const { args, flags } = await this.parse(TagSet);
    const tag = await (await this.cloud()).setTag({ ...scopeOf(flags, ['fleet', 'device', 'release']), key: args.key, value: args.value });
    (await this.output()).info(`Tag ${tag.key} set.`);
    return tag;
  }
}
