import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { Device } from '../../lib/api/resources.js';

export default class DeviceMove extends CloudCommand<Device> {
  static override summary = 'Move a device to another fleet of the same architecture.';
  static override examples = ['<%= config.bin %> device move 7cf02a6 --fleet lab'];
  static override args = { uuid: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters is enough).', required: true }) };
  static override flags = { fleet: Flags.string({ char: 'f', description: 'The fleet to move it to.', required: true }) };

  async run(): Promise<Device> {
    const { args, flags } = await this.parse(DeviceMove);
    const device = await (await this.cloud()).updateDevice(args.uuid, { fleet: flags.fleet });
    (await this.output()).info(`Device ${device.uuid.slice(0, 7)} moved to fleet ${device.fleet}.`);
    return device;
  }
}
