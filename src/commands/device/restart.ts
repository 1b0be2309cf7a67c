import { Args, Flags } from '@oclif/core';
import { SkiffCommand } from '../../cli/base-command.js';

export default class DeviceRestart extends SkiffCommand<{ restarted: string[] }> {
  static override summary = "Restart a device's services (all of them, or those named with --service).";
  static override examples = ['<%= config.bin %> device restart 192.168.1.23', '<%= config.bin %> device restart 192.168.1.23 --service web --service worker'];
  static override args = { device: Args.string({ description: 'Device address (IP or hostname, optionally :port).', required: true }) };
  static override flags = { service: Flags.string({ char: 's', description: 'Service to restart (repeatable).', multiple: true }) };

  async run(): Promise<{ restarted: string[] }> {
    const { args, flags } = await this.parse(DeviceRestart);
    const { restart } = await import('../../lib/device/actions.js');
    const result = await restart(args.device, flags.service ?? []);
    (await this.output()).info(result.restarted[0] === '*' ? 'Restarted every service.' : `Restarted ${result.restarted.join(', ')}.`);
    return result;
  }
}
