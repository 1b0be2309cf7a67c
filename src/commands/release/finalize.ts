import { Args } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { Release } from '../../lib/api/resources.js';

export default class ReleaseFinalize extends CloudCommand<Release> {
  static override summary = 'Make a draft release final: devices tracking the latest release get it.';
  static override examples = ['<%= config.bin %> release finalize 3f2a9c1'];
  static override args = { commit: Args.string({ description: 'Release commit (a unique prefix of 7+ characters is enough).', required: true }) };

  async run(): Promise<Release> {
    const { args } = await this.parse(ReleaseFinalize);
    const client = await this.cloud();
    const current = await client.release(args.commit);
    const out = await this.output();
    if (current.isFinal) {
      out.info(`Release ${current.commit} is final already.`);
      return current;
    }
    const release = await client.updateRelease(current.commit, { isFinal: true });
    out.info(`Release ${release.commit} is final.`);
    return release;
  }
}
