import { SkiffCommand } from '../../cli/base-command.js';
import { driveFlag } from '../../cli/config-flags.js';
import type { BalenaConfig } from '../../lib/os/config-json.js';

export default class ConfigRead extends SkiffCommand<BalenaConfig> {
  static override summary = 'Print the config.json of a balenaOS image or drive.';
  static override examples = ['<%= config.bin %> config read --drive balena.img', '<%= config.bin %> config read --drive /dev/sdb --json'];
  static override flags = {
    drive: driveFlag,
  };

  async run(): Promise<BalenaConfig> {
    const { flags } = await this.parse(ConfigRead);
    const { readTargetConfig } = await import('../../lib/os/config.js');
    const { config } = await readTargetConfig(flags.drive);
    (await this.output()).result(JSON.stringify(config, null, 2));
    return config;
  }
}
