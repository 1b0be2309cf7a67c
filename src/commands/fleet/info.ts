import { Args } from '@oclif/core';
import { CloudCommand, when } from '../../cli/cloud.js';
import type { Fleet } from '../../lib/api/resources.js';

export default class FleetInfo extends CloudCommand<Fleet> {
  static override summary = "Show a fleet: device type, devices, the release it runs.";
  static override examples = ['<%= config.bin %> fleet info kiosks'];
  static override args = { name: Args.string({ description: 'Fleet name.', required: true }) };

  async run(): Promise<Fleet> {
    const { args } = await this.parse(FleetInfo);
    const f = await (await this.cloud()).fleet(args.name);
    await this.fields([
      ['NAME', f.name], ['UUID', f.uuid], ['OWNER', f.owner], ['DEVICE TYPE', `${f.deviceType} (${f.arch})`],
      ['DEVICES', `${f.deviceCount} (${f.onlineDeviceCount} online)`],
      ['RELEASE', f.targetRelease ? `${f.targetRelease}${f.pinnedRelease ? ' (pinned)' : ' (latest)'}` : null],
      ['CREATED', when(f.createdAt)],
    ]);
    return f;
  }
}
