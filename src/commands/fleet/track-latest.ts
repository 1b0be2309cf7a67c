import { Args } from '@oclif/core';
import { CloudCommand, short } from '../../cli/cloud.js';
import type { Fleet } from '../../lib/api/resources.js';

export default class FleetTrackLatest extends CloudCommand<Fleet> {
  static override summary = 'Unpin a fleet: its devices follow the latest final release again.';
  static override examples = ['<%= config.bin %> fleet track-latest kiosks'];
  static override args = { name: Args.string({ description: 'Fleet name.', required: true }) };

  async run(): Promise<Fleet> {
    const { args } = await this.parse(FleetTrackLatest);
    const fleet = await (await this.cloud()).updateFleet(args.name, { pinnedRelease: null });
    (await this.output()).info(`Fleet ${fleet.name} tracks the latest release (${short(fleet.targetRelease)}).`);
    return fleet;
  }
}
