import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { Release } from '../../lib/api/resources.js';

export default class ReleaseInvalidate extends CloudCommand<Release> {
  static override summary = 'Invalidate a release: no device gets it any more (or validate it again).';
  static override examples = ['<%= config.bin %> release invalidate 3f2a9c1', '<%= config.bin %> release invalidate 3f2a9c1 --undo'];
  static override args = { commit: Args.string({ description: 'Release commit (a unique prefix of 7+ characters is enough).', required: true }) };
  static override flags = { undo: Flags.boolean({ description: 'Make the release valid again.' }) };

  async run(): Promise<Release> {
    const { args, flags } = await this.parse(ReleaseInvalidate);
    const release = await (await this.cloud()).updateRelease(args.commit, { isInvalidated: !flags.undo });
    (await this.output()).info(`Release ${release.commit} is ${release.isInvalidated ? 'invalidated' : 'valid again'}.`);
    return release;
  }
}
