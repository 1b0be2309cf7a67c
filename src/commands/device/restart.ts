import { Args, Flags } from '@oclif/core';
import { DeviceActionCommand, type CloudActionResult } from '../../cli/device-action.js';

export default class DeviceRestart extends DeviceActionCommand<{ restarted: string[] } | CloudActionResult> {
  static override summary = "Restart a device's services (all of them, or those named with --service): a cloud device by uuid, or a LAN device by address.";
  static override examples = [
    '<%= config.bin %> device restart 192.168.1.23',
    '<%= config.bin %> device restart 192.168.1.23 --service web --service worker',
    '<%= config.bin %> device restart 7cf02a6 --service web',
  ];
  static override args = { device: Args.string({ description: 'Device uuid (cloud; a unique prefix of 7+ characters) or address (LAN: IP or hostname, optionally :port).', required: true }) };
  static override flags = { service: Flags.string({ char: 's', description: 'Service to restart (repeatable on a LAN device; one on a cloud device).', multiple: true }) };

  async run(): Promise<{ restarted: string[] } | CloudActionResult> {
    const { args, flags } = await this.parse(DeviceRestart);
    if (await this.isCloudDevice(args.device)) {
      const services = flags.service ?? [];
      if (services.length > 1) {
        const { SkiffError } = await import('../../lib/errors/errors.js');
        throw new SkiffError('usage', 'a cloud device restarts one --service at a time, or all of them without --service');
      }
      return this.cloudAction(args.device, { action: 'restart', ...(services[0] !== undefined ? { service: services[0] } : {}) }, 'Restarting');
    }
    const { restart } = await import('../../lib/device/actions.js');
    const result = await restart(args.device, flags.service ?? []);
    (await this.output()).info(result.restarted[0] === '*' ? 'Restarted every service.' : `Restarted ${result.restarted.join(', ')}.`);
    return result;
  }
}
