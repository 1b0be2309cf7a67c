import { Args } from '@oclif/core';
import { DeviceActionCommand, type CloudActionResult } from '../../cli/device-action.js';

export default class DeviceIdentify extends DeviceActionCommand<CloudActionResult> {
  static override summary = 'Make a cloud device identify itself (balena blinks its LED; a skiff agent writes an identify line to its log).';
  static override examples = ['<%= config.bin %> device identify 7cf02a6'];
  static override args = { uuid: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters is enough).', required: true }) };

  async run(): Promise<CloudActionResult> {
    const { args } = await this.parse(DeviceIdentify);
    return this.cloudAction(args.uuid, { action: 'identify' }, 'Identifying');
  }
}
