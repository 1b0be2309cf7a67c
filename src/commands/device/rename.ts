import { Args } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { Device } from '../../lib/api/resources.js';

export default class DeviceRename extends CloudCommand<Device> {
  static override summary = 'Rename a cloud device.';
  static override examples = ['<%= config.bin %> device rename 7cf02a6 lobby-screen'];
  static override args = {
    uuid: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters is enough).', required: true }),
    newName: Args.string({ description: 'New name.', required: true }),
  };

  async run(): Promise<Device> {
    const { args } = await this.parse(DeviceRename);
    const device = await (await this.cloud()).updateDevice(args.uuid, { name: args.newName });
    (await this.output()).info(`Device ${device.uuid.slice(0, 7)} is now ${device.name}.`);
    return device;
  }
}
