import { Args } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { Fleet } from '../../lib/api/resources.js';

export default class FleetPin extends CloudCommand<Fleet> {
  static override summary = 'Pin a fleet to a release: its devices run it until track-latest.';
  static override examples = ['<%= config.bin %> fleet pin kiosks 3f2a9c1'];
  static override args = {
    name: Args.string({ description: 'Fleet name.', required: true }),
    release: Args.string({ description: 'Release commit (a unique prefix of 7+ characters is enough).', required: true }),
  };

  async run(): Promise<Fleet> {
    const { args } = await this.parse(FleetPin);
    const fleet = await (await this.cloud()).updateFleet(args.name, { pinnedRelease: args.release });
    (await this.output()).info(`Fleet ${fleet.name} is pinned to ${fleet.pinnedRelease ?? args.release}.`);
    return fleet;
  }
}
