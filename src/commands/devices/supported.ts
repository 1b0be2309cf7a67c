import { SkiffCommand } from '../../cli/base-command.js';
import { ARCHES, DEVICE_TYPES, platformString } from '../../lib/device-types/device-types.js';

export interface SupportedDeviceType {
  slug: string;
  name: string;
  arch: string;
  platform: string;
  aliases: string[];
}

export default class DevicesSupported extends SkiffCommand<SupportedDeviceType[]> {
  static override summary = 'List the device types skiff can build for.';
  static override description = 'Device type slugs are balena\'s, so --deviceType values port between the tools. Aliases are accepted too.';
  static override examples = ['<%= config.bin %> devices supported', '<%= config.bin %> devices supported --json'];

  async run(): Promise<SupportedDeviceType[]> {
    await this.parse(DevicesSupported);
    const list = DEVICE_TYPES.map((d) => ({ slug: d.slug, name: d.name, arch: d.arch, platform: platformString(ARCHES[d.arch].platform), aliases: d.aliases ?? [] }));
    if (!this.jsonEnabled()) {
      const out = await this.output();
      const { table } = await import('../../ui/format.js');
      out.result(table(['SLUG', 'NAME', 'ARCH', 'PLATFORM'], list.map((d) => [d.slug, d.name, d.arch, d.platform]), (h) => out.chalk.bold(h)));
    }
    return list;
  }
}
