import { CloudCommand, short } from '../../cli/cloud.js';
import type { Fleet } from '../../lib/api/resources.js';

export default class FleetList extends CloudCommand<Fleet[]> {
  static override summary = 'List your fleets.';
  static override examples = ['<%= config.bin %> fleet list', '<%= config.bin %> fleet list --json'];

  async run(): Promise<Fleet[]> {
    await this.parse(FleetList);
    const fleets = await (await this.cloud()).fleets();
    await this.table(['NAME', 'DEVICE TYPE', 'DEVICES', 'ONLINE', 'RELEASE'], fleets.map((f) => [
      f.name, f.deviceType, String(f.deviceCount), String(f.onlineDeviceCount), `${short(f.targetRelease)}${f.pinnedRelease ? ' (pinned)' : ''}`,
    ]));
    return fleets;
  }
}
