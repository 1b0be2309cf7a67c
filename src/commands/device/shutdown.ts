import { Args, Flags } from '@oclif/core';
import { DeviceActionCommand, type CloudActionResult } from '../../cli/device-action.js';

export default class DeviceShutdown extends DeviceActionCommand<CloudActionResult> {
  static override summary = "Power off a cloud device's host (through the server; the agent runs its --shutdown-command).";
  static override description = 'Waits for the device to answer. A service holding an update lock makes the device refuse, unless --force.';
  static override examples = ['<%= config.bin %> device shutdown 7cf02a6', '<%= config.bin %> device shutdown 7cf02a6 --force'];
  static override args = { uuid: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters is enough).', required: true }) };
  static override flags = { force: Flags.boolean({ char: 'f', description: 'Even while a service holds an update lock.' }) };

  async run(): Promise<CloudActionResult> {
    const { args, flags } = await this.parse(DeviceShutdown);
    return this.cloudAction(args.uuid, { action: 'shutdown', ...(flags.force ? { force: true } : {}) }, 'Shutting down');
  }
}
