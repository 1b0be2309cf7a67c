import { Args } from '@oclif/core';
import { CloudCommand, short, when } from '../../cli/cloud.js';
import type { Release } from '../../lib/api/resources.js';

export default class ReleaseList extends CloudCommand<Release[]> {
  static override summary = "List a fleet's releases, newest first.";
  static override examples = ['<%= config.bin %> release list kiosks', '<%= config.bin %> release list kiosks --json'];
  static override args = { fleet: Args.string({ description: 'Fleet name.', required: true }) };

  async run(): Promise<Release[]> {
    const { args } = await this.parse(ReleaseList);
    const releases = await (await this.cloud()).releases(args.fleet);
    await this.table(['COMMIT', 'STATUS', 'FINAL', 'SEMVER', 'SERVICES', 'CREATED', 'NOTES'], releases.map((r) => [
      short(r.commit), r.isInvalidated ? 'invalidated' : r.status, r.isFinal ? 'yes' : 'draft', r.semver ?? '-',
      r.services.map((s) => s.name).join(','), when(r.createdAt), (r.notes ?? '').split('\n', 1).join('').slice(0, 40),
    ]));
    return releases;
  }
}
