import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { Fleet } from '../../lib/api/resources.js';

export default class FleetCreate extends CloudCommand<Fleet> {
  static override summary = 'Create a fleet for one device type.';
  static override description = "The device type decides the architecture every release of the fleet is built for ('skiff devices supported' lists them). Names: letters, digits, '_', '.', '-'.";
  static override examples = ['<%= config.bin %> fleet create kiosks --type raspberrypi4-64', '<%= config.bin %> fleet create lab --type intel-nuc --json'];
  static override args = { name: Args.string({ description: 'Fleet name.', required: true }) };
  static override flags = { type: Flags.string({ char: 't', description: 'Device type slug, e.g. raspberrypi4-64.', required: true }) };

  async run(): Promise<Fleet> {
    const { args, flags } = await this.parse(FleetCreate);
    // Checked here first, so a typo gets a did-you-mean without a round trip.
    const { canonicalDeviceType } = await import('../../lib/os/config-json.js');
    const deviceType = canonicalDeviceType(flags.type);
    const fleet = await (await this.cloud()).createFleet({ name: args.name, deviceType });
    (await this.output()).info(`Fleet ${fleet.name} created (${fleet.deviceType}, ${fleet.arch}).`);
    return fleet;
  }
}
