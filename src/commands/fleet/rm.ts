import { Args } from '@oclif/core';
import { CloudCommand, yesFlag } from '../../cli/cloud.js';

export default class FleetRm extends CloudCommand<{ fleet: string; removed: true }> {
  static override summary = 'Remove a fleet with its devices, releases and keys.';
  static override description = "Its devices' keys stop working at once. Asks first; --yes answers for scripts.";
  static override examples = ['<%= config.bin %> fleet rm kiosks', '<%= config.bin %> fleet rm kiosks --yes'];
  static override args = { name: Args.string({ description: 'Fleet name.', required: true }) };
  static override flags = { yes: yesFlag };

  async run(): Promise<{ fleet: string; removed: true }> {
    const { args, flags } = await this.parse(FleetRm);
    const client = await this.cloud();
    const fleet = await client.fleet(args.name); // a wrong name fails before the question
    await this.confirmOrStop(flags.yes, `Remove fleet ${fleet.name} with its ${fleet.deviceCount} device(s) and all its releases?`);
    await client.removeFleet(fleet.name);
    (await this.output()).info(`Fleet ${fleet.name} removed.`);
    return { fleet: fleet.name, removed: true };
  }
}
