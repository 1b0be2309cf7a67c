import { Args } from '@oclif/core';
import { CloudCommand, short, when } from '../../cli/cloud.js';
import type { DeviceSummary } from '../../lib/device/actions.js';
import type { Device } from '../../lib/api/resources.js';

export default class DeviceInfo extends CloudCommand<DeviceSummary | Device> {
  static override summary = "Show a device's type, state and services: a cloud device by uuid, or a LAN device by address.";
  static override examples = ['<%= config.bin %> device info 192.168.1.23', '<%= config.bin %> device info 127.0.0.1:48484 --json', '<%= config.bin %> device info 7cf02a6'];
  static override args = { device: Args.string({ description: 'Device uuid (cloud; a unique prefix of 7+ characters) or address (LAN: IP or hostname, optionally :port).', required: true }) };

  async run(): Promise<DeviceSummary | Device> {
    const { args } = await this.parse(DeviceInfo);
    if ((await import('../../lib/cloud/client.js')).isDeviceUuid(args.device)) return this.cloudDevice(args.device);
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

  private async cloudDevice(uuid: string): Promise<Device> {
    const d = await (await this.cloud()).device(uuid);
    // What the device reported is printed only as visible text: it may hold escape sequences.
    const { printable: p } = await import('../../lib/cloud/printable.js');
    const { describeUpdateDownload } = await import('../../ui/update-download.js');
    const download = d.updateDownload ? describeUpdateDownload(d.updateDownload).map((line) => p(line)).join('; ') : null;
    await this.fields([
      ['UUID', d.uuid], ['NAME', p(d.name)], ['FLEET', d.fleet], ['DEVICE TYPE', d.deviceType], ['STATUS', d.status], ['LAST SEEN', when(d.lastSeen)],
      ['RELEASE', `${short(d.runningRelease)}${d.targetRelease && d.targetRelease !== d.runningRelease ? ` (target ${short(d.targetRelease)})` : ''}${d.pinnedRelease ? ' pinned' : ''}`],
      ['UPDATE', d.updateStatus ? p(`${d.updateStatus}${d.updateError ? `: ${d.updateError}` : ''}`) : null],
      ['ROLLED BACK', d.rolledBackFrom ? p(`from ${short(d.rolledBackFrom.commit)}: ${d.rolledBackFrom.reason}`) : null],
      ['LAST UPDATE', download],
      ['IP ADDRESS', p(d.ipAddresses.join(', '))], ['OS', p(d.osVersion)], ['AGENT', p(d.agentVersion)],
    ]);
    if (d.services.length > 0) await this.table(['SERVICE', 'STATUS', 'DOWNLOAD'], d.services.map((s) => [p(s.name), p(s.status), s.downloadProgress === null ? '-' : `${s.downloadProgress}%`]));
    return d;
  }
}
