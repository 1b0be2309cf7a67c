import { Args } from '@oclif/core';
import { CloudCommand, yesFlag } from '../../cli/cloud.js';

export default class DeviceRm extends CloudCommand<{ uuid: string; removed: true }> {
  static override summary = 'Remove a device from the cloud; its key stops working at once.';
  static override examples = ['<%= config.bin %> device rm 7cf02a6 --yes'];
  static override args = { uuid: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters is enough).', required: true }) };
  static override flags = { yes: yesFlag };

  async run(): Promise<{ uuid: string; removed: true }> {
    const { args, flags } = await this.parse(DeviceRm);
    const client = await this.cloud();
    const device = await client.device(args.uuid);
    await this.confirmOrStop(flags.yes, `Remove device ${device.name} (${device.uuid.slice(0, 7)}) of fleet ${device.fleet}?`);
    await client.removeDevice(device.uuid);
    (await this.output()).info(`Device ${device.uuid.slice(0, 7)} removed.`);
    return { uuid: device.uuid, removed: true };
  }
}
