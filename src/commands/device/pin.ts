import { Args } from '@oclif/core';
import { CloudCommand, short } from '../../cli/cloud.js';
import type { Device } from '../../lib/api/resources.js';

export default class DevicePin extends CloudCommand<Device> {
  static override summary = 'Pin a device to a release of its fleet, whatever the fleet runs.';
  static override examples = ['<%= config.bin %> device pin 7cf02a6 3f2a9c1'];
  static override args = {
    uuid: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters is enough).', required: true }),
    release: Args.string({ description: 'Release commit (a unique prefix of 7+ characters is enough).', required: true }),
  };

  async run(): Promise<Device> {
    const { args } = await this.parse(DevicePin);
    const device = await (await this.cloud()).updateDevice(args.uuid, { pinnedRelease: args.release });
    (await this.output()).info(`Device ${device.uuid.slice(0, 7)} is pinned to ${short(device.pinnedRelease ?? args.release)}.`);
    return device;
  }
}
