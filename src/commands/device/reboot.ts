import { Args, Flags } from '@oclif/core';
import { DeviceActionCommand, type CloudActionResult } from '../../cli/device-action.js';

export default class DeviceReboot extends DeviceActionCommand<CloudActionResult> {
  static override summary = "Reboot a cloud device's host (through the server; the agent runs its --reboot-command).";
  static override description = 'Waits for the device to answer. A service holding an update lock makes the device refuse, unless --force.';
  static override examples = ['<%= config.bin %> device reboot 7cf02a6', '<%= config.bin %> device reboot 7cf02a6 --force'];
  static override args = { uuid: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters is enough).', required: true }) };
  static override flags = { force: Flags.boolean({ char: 'f', description: 'Even while a service holds an update lock.' }) };

  async run(): Promise<CloudActionResult> {
    const { args, flags } = await this.parse(DeviceReboot);
    return this.cloudAction(args.uuid, { action: 'reboot', ...(flags.force ? { force: true } : {}) }, 'Rebooting');
  }
}
