import { Args } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { Fleet } from '../../lib/api/resources.js';

export default class FleetRename extends CloudCommand<Fleet> {
  static override summary = 'Rename a fleet (its devices and releases stay).';
  static override examples = ['<%= config.bin %> fleet rename kiosks lobby-kiosks'];
  static override args = {
    name: Args.string({ description: 'Current fleet name.', required: true }),
    newName: Args.string({ description: 'New name.', required: true }),
  };

  async run(): Promise<Fleet> {
    const { args } = await this.parse(FleetRename);
    const fleet = await (await this.cloud()).updateFleet(args.name, { name: args.newName });
    (await this.output()).info(`Fleet ${args.name} is now ${fleet.name}.`);
    return fleet;
  }
}
