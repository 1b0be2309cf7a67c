import { Args } from '@oclif/core';
import { CloudCommand, short } from '../../cli/cloud.js';
import type { Device } from '../../lib/api/resources.js';

export default class DeviceTrackFleet extends CloudCommand<Device> {
  static override summary = "Unpin a device: it runs its fleet's release again.";
  static override examples = ['<%= config.bin %> device track-fleet 7cf02a6'];
  static override args = { uuid: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters is enough).', required: true }) };

  async run(): Promise<Device> {
    const { args } = await this.parse(DeviceTrackFleet);
    const device = await (await this.cloud()).updateDevice(args.uuid, { pinnedRelease: null });
    (await this.output()).info(`Device ${device.uuid.slice(0, 7)} tracks fleet ${device.fleet} (${short(device.targetRelease)}).`);
    return device;
  }
}
