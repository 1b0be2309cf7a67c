import { Args, Flags } from '@oclif/core';
import { DeviceActionCommand, type CloudActionResult } from '../../cli/device-action.js';
import { SkiffError } from '../../lib/errors/errors.js';
import { isInteractive } from '../../ui/terminal.js';

export default class DevicePurge extends DeviceActionCommand<{ purged: number } | CloudActionResult> {
  static override summary = "Delete the data in a device's named volumes, then start its services again: a cloud device by uuid, or a LAN device by address.";
  static override description = 'Removes the release\'s containers and named volumes and installs it again with empty volumes. The data cannot be recovered: asks first on a terminal; needs --yes otherwise.';
  static override examples = ['<%= config.bin %> device purge 192.168.1.23', '<%= config.bin %> device purge 192.168.1.23 --yes', '<%= config.bin %> device purge 7cf02a6 --yes'];
  static override args = { device: Args.string({ description: 'Device uuid (cloud; a unique prefix of 7+ characters) or address (LAN: IP or hostname, optionally :port).', required: true }) };
  static override flags = { yes: Flags.boolean({ char: 'y', description: "Don't ask for confirmation." }) };

  async run(): Promise<{ purged: number } | CloudActionResult> {
    const { args, flags } = await this.parse(DevicePurge);
    if (!flags.yes) {
      if (!isInteractive()) throw new SkiffError('notInteractive', `purging ${args.device} deletes its data and needs confirmation`, { hint: 'pass --yes' });
      const { confirm } = await import('../../ui/prompt.js');
      if (!(await confirm(`Delete all data in the volumes of ${args.device}?`))) throw new SkiffError('interrupted', 'purge cancelled; nothing was deleted');
    }
    if (await this.isCloudDevice(args.device)) return this.cloudAction(args.device, { action: 'purge' }, 'Purging');
    const { purge } = await import('../../lib/device/actions.js');
    const result = await purge(args.device);
    (await this.output()).info(`Purged the data of app ${result.purged} on ${args.device}; its services start again with empty volumes.`);
    return result;
  }
}
