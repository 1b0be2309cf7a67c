import { Flags } from '@oclif/core';
import { CloudCommand, short, when } from '../../cli/cloud.js';
import type { Device } from '../../lib/api/resources.js';

export default class DeviceList extends CloudCommand<Device[]> {
  static override summary = 'List your devices in the cloud (all fleets, or one).';
  static override examples = ['<%= config.bin %> device list', '<%= config.bin %> device list --fleet kiosks --json'];
  static override flags = { fleet: Flags.string({ char: 'f', description: 'Only the devices of this fleet.' }) };

  async run(): Promise<Device[]> {
    const { flags } = await this.parse(DeviceList);
    const devices = await (await this.cloud()).devices(flags.fleet);
    const { printable } = await import('../../lib/cloud/printable.js');
    await this.table(['UUID', 'NAME', 'FLEET', 'DEVICE TYPE', 'STATUS', 'RELEASE', 'LAST SEEN'], devices.map((d) => [
      short(d.uuid), printable(d.name), d.fleet, d.deviceType, d.status,
      `${short(d.runningRelease)}${d.targetRelease && d.runningRelease !== d.targetRelease ? ` → ${short(d.targetRelease)}` : ''}`, when(d.lastSeen),
    ]));
    return devices;
  }
}
