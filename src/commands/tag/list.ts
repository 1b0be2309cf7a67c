import { CloudCommand, scopeOf, tagScopeFlags } from '../../cli/cloud.js';
import type { Tag } from '../../lib/api/resources.js';

export default class TagList extends CloudCommand<Tag[]> {
  static override summary = 'List the tags of a fleet, a device or a release.';
  static override examples = ['<%= config.bin %> tag list --fleet kiosks', '<%= config.bin %> tag list --release 3f2a9c1 --json'];
  static override flags = tagScopeFlags;

  async run(): Promise<Tag[]> {
    const { flags } = await this.parse(TagList);
    const tags = await (await this.cloud()).tags(scopeOf(flags, ['fleet', 'device', 'release']));
    await this.table(['KEY', 'VALUE'], tags.map((t) => [t.key, t.value]));
    return tags;
  }
}
