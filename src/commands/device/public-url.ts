import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { DevicePublicUrl } from '../../lib/api/tunnel.js';
import { SkiffError } from '../../lib/errors/errors.js';

const modes = ['enable', 'disable', 'follow-fleet', 'status'] as const;
const others = (mode: (typeof modes)[number]) => modes.filter((m) => m !== mode);

export default class DevicePublicUrlCommand extends CloudCommand<DevicePublicUrl> {
  static override summary = "Show, enable or disable a device's public URL: port 80 of the device, served by the server to anyone.";
  static override description = 'Without a flag it prints the URL, and fails when the URL is disabled. A device follows its fleet\'s default (skiff fleet public-url) until it is enabled or disabled on its own; --follow-fleet goes back to the default.';
  static override examples = [
    '<%= config.bin %> device public-url 7cf02a6',
    '<%= config.bin %> device public-url 7cf02a6 --enable',
    '<%= config.bin %> device public-url 7cf02a6 --disable',
    '<%= config.bin %> device public-url 7cf02a6 --follow-fleet',
    '<%= config.bin %> device public-url 7cf02a6 --status',
  ];
  static override args = { uuid: Args.string({ description: 'Device uuid (a unique prefix of 7+ characters is enough).', required: true }) };
  static override flags = {
    enable: Flags.boolean({ description: 'Serve the public URL for this device, whatever its fleet says.', exclusive: others('enable') }),
    disable: Flags.boolean({ description: 'Stop serving it for this device, whatever its fleet says.', exclusive: others('disable') }),
    'follow-fleet': Flags.boolean({ description: "Drop the device's own setting: it follows its fleet's default again.", exclusive: others('follow-fleet') }),
    status: Flags.boolean({ description: "Print the URL, or 'disabled', and where the setting comes from.", exclusive: others('status') }),
  };

  async run(): Promise<DevicePublicUrl> {
    const { args, flags } = await this.parse(DevicePublicUrlCommand);
    const cloud = await this.cloud();
    const out = await this.output();
    const setting = flags.enable ? true : flags.disable ? false : flags['follow-fleet'] ? null : undefined;
    const state = setting === undefined ? await cloud.devicePublicUrl(args.uuid) : await cloud.setDevicePublicUrl(args.uuid, setting);
    const short = state.device.slice(0, 7);
    const source = state.deviceSetting === null ? `following its fleet's default (${state.fleetSetting ? 'enabled' : 'disabled'})` : `set on the device (the fleet's default is ${state.fleetSetting ? 'enabled' : 'disabled'})`;
    if (setting !== undefined) out.info(`The public URL of device ${short} is ${state.enabled ? 'enabled' : 'disabled'}, ${source}.`);
    else if (flags.status) out.info(`Device ${short}: ${source}.`);
    else if (!state.enabled) {
      throw new SkiffError('error', `the public URL of device ${short} is disabled (${source})`, { hint: `enable it with '${this.config.bin} device public-url ${args.uuid} --enable'` });
    }
    if (state.enabled) out.result(state.url);
    else if (flags.status) out.result('disabled');
    return state;
  }
}
