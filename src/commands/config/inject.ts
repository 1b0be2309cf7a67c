import { Args } from '@oclif/core';
import { SkiffCommand } from '../../cli/base-command.js';
import { driveFlag } from '../../cli/config-flags.js';
import type { BalenaConfig } from '../../lib/os/config-json.js';

export default class ConfigInject extends SkiffCommand<BalenaConfig> {
  static override summary = 'Replace the config.json of a balenaOS image or drive with a file.';
  static override examples = ['<%= config.bin %> config inject config.json --drive balena.img', '<%= config.bin %> config inject my/config.json --drive /dev/sdb'];
  static override args = {
    file: Args.string({ description: 'The config.json file to write.', required: true }),
  };
  static override flags = {
    drive: driveFlag,
  };

  async run(): Promise<BalenaConfig> {
    const { args, flags } = await this.parse(ConfigInject);
    const [{ injectTargetConfig }, { readConfigFile }] = await Promise.all([import('../../lib/os/config.js'), import('../../lib/os/config-json.js')]);
    const { config, mistyped } = await injectTargetConfig(flags.drive, await readConfigFile(args.file));
    // Written as given, as balena-cli does (see InjectResult): said, not refused.
    for (const { key, held, reads } of mistyped) {
      await this.warnUser(`${key} holds ${held === 'object' ? 'an' : 'a'} ${held}, and balenaOS reads it as a ${reads}: 'skiff config write ${key} VALUE' repairs it`);
    }
    (await this.output()).info(`Wrote ${args.file} to ${flags.drive} as config.json`);
    return config;
  }
}
