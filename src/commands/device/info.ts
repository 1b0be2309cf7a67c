import { Args } from '@oclif/core';
import { SkiffCommand } from '../../cli/base-command.js';
import type { DeviceSummary } from '../../lib/device/actions.js';

export default class DeviceInfo extends SkiffCommand<DeviceSummary> {
  static override summary = "Show a device's type, state and services.";
  static override examples = ['<%= config.bin %> device info 192.168.1.23', '<%= config.bin %> device info 127.0.0.1:48484 --json'];
  static override args = { device: Args.string({ description: 'Device address (IP or hostname, optionally :port).', required: true }) };

  async run(): Promise<DeviceSummary> {
    const { args } = await this.parse(DeviceInfo);
    const { deviceInfo } = await import('../../lib/device/actions.js');
    const info = await deviceInfo(args.device);
    if (!this.jsonEnabled()) {
      const out = await this.output();
      const { table } = await import('../../ui/format.js');
      out.result(`${info.address}  ${info.deviceType} (${info.arch})  device API ${info.version}  ${info.status}  release ${info.release ?? '-'}`);
      if (info.services.length > 0) out.result(table(['SERVICE', 'STATUS', 'CONTAINER'], info.services.map((s) => [s.service, s.status, s.containerId]), (h) => out.chalk.bold(h)));
    }
    return info;
  }
}
