import { Args } from '@oclif/core';
import { CloudCommand, when } from '../../cli/cloud.js';
import type { Release } from '../../lib/api/resources.js';

export default class ReleaseInfo extends CloudCommand<Release> {
  static override summary = 'Show a release: status, services and their images, tags.';
  static override examples = ['<%= config.bin %> release info 3f2a9c1', '<%= config.bin %> release info 3f2a9c1 --json'];
  static override args = { commit: Args.string({ description: 'Release commit (a unique prefix of 7+ characters is enough).', required: true }) };

  async run(): Promise<Release> {
    const { args } = await this.parse(ReleaseInfo);
    const r = await (await this.cloud()).release(args.commit);
    await this.fields([
      ['COMMIT', r.commit], ['FLEET', r.fleet], ['STATUS', `${r.status}${r.isInvalidated ? ' (invalidated)' : ''}`], ['FINAL', r.isFinal ? 'yes' : 'no (draft)'],
      ['SEMVER', r.semver], ['CREATED', when(r.createdAt)], ['NOTES', r.notes],
      ['GIT COMMIT', r.gitCommit], ['BUILD', r.build],
      ['TAGS', Object.entries(r.tags).map(([k, v]) => `${k}=${v}`).join(', ')],
    ]);
    const { formatBytes } = await import('../../ui/format.js');
    await this.table(['SERVICE', 'IMAGE', 'SIZE'], r.services.map((s) => [s.name, s.image ?? '-', s.size === null ? '-' : formatBytes(s.size)]));
    return r;
  }
}
