import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { FleetPublicUrl } from '../../lib/api/tunnel.js';

export default class FleetPublicUrlCommand extends CloudCommand<FleetPublicUrl> {
  static override summary = "Show, enable or disable the default of a fleet's devices' public URLs.";
  static override description = "A device's own setting (skiff device public-url --enable/--disable) wins over the fleet's default.";
  static override examples = [
    '<%= config.bin %> fleet public-url kiosks',
    '<%= config.bin %> fleet public-url kiosks --enable',
    '<%= config.bin %> fleet public-url kiosks --disable',
  ];
  static override args = { fleet: Args.string({ description: 'Fleet name.', required: true }) };
  static override flags = {
    enable: Flags.boolean({ description: "Serve the fleet's devices' public URLs (unless a device says otherwise).", exclusive: ['disable', 'status'] }),
    disable: Flags.boolean({ description: 'Stop serving them (unless a device says otherwise).', exclusive: ['enable', 'status'] }),
    status: Flags.boolean({ description: "Print 'enabled' or 'disabled' (the default without a flag).", exclusive: ['enable', 'disable'] }),
  };

  async run(): Promise<FleetPublicUrl> {
    const { args, flags } = await this.parse(FleetPublicUrlCommand);
    const cloud = await this.cloud();
    const out = await this.output();
    const setting = flags.enable ? true : flags.disable ? false : undefined;
    const state = setting === undefined ? await cloud.fleetPublicUrl(args.fleet) : await cloud.setFleetPublicUrl(args.fleet, setting);
    if (setting !== undefined) out.info(`Public URLs of fleet ${state.fleet}'s devices are ${state.enabled ? 'enabled' : 'disabled'} by default.`);
    out.result(state.enabled ? 'enabled' : 'disabled');
    return state;
  }
}
