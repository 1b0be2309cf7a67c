import { Args, Flags } from '@oclif/core';
import { CloudCommand, when } from '../../cli/cloud.js';
import type { DeviceSession } from '../../lib/api/tunnel.js';

export default class DeviceSessions extends CloudCommand<DeviceSession[]> {
  static override summary = "List a device's tunnel sessions: ssh, tunnel and public-URL, newest first.";
  static override description = 'Who opened what and when, for how long, the bytes each way (in: to the device) and how it ended. A session still open shows "open".';
  static override examples = ['<%= config.bin %> device sessions 5e1b2c3', '<%= config.bin %> device sessions 5e1b2c3 --limit 20 --json'];
  static override args = { device: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters).', required: true }) };
  static override flags = {
    limit: Flags.integer({ char: 'l', description: 'Show the newest N (1-1000, default 100).', min: 1, max: 1000 }),
  };

  async run(): Promise<DeviceSession[]> {
    const { args, flags } = await this.parse(DeviceSessions);
    const [{ isDeviceUuid }, { SkiffError }] = await Promise.all([import('../../lib/cloud/client.js'), import('../../lib/errors/errors.js')]);
    if (!isDeviceUuid(args.device)) throw new SkiffError('usage', `'${args.device}' is not a device uuid: sessions are kept by the server for cloud devices`, { hint: "'skiff device list' shows their uuids" });
    const sessions = await (await this.cloud()).deviceSessions(args.device, flags.limit === undefined ? {} : { limit: String(flags.limit) });
    const [{ printable: p }, { formatBytes }] = await Promise.all([import('../../lib/cloud/printable.js'), import('../../ui/format.js')]);
    await this.table(
      ['STARTED', 'KIND', 'WHO', 'TARGET', 'DURATION', 'IN', 'OUT', 'OUTCOME'],
      sessions.map((s) => [when(s.startedAt), s.kind, p(s.actor), p(s.target), duration(s.startedAt, s.endedAt), formatBytes(s.bytesIn), formatBytes(s.bytesOut), s.endedAt === null ? 'open' : p(s.outcome ?? '-')]),
    );
    return sessions;
  }
}

/** `42s`, `3m05s`, `2h01m`; '-' for a session still open. */
export function duration(startedAt: string, endedAt: string | null): string {
  if (endedAt === null) return '-';
  const s = Math.max(0, Math.round((Date.parse(endedAt) - Date.parse(startedAt)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
