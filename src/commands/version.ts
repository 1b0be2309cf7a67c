import process from 'node:process';
import { Flags } from '@oclif/core';
import { SkiffCommand } from '../cli/base-command.js';

export interface VersionInfo {
  version: string;
  node: string;
  platform: string;
  arch: string;
}

export default class Version extends SkiffCommand<VersionInfo> {
  static override summary = 'Print the skiff version.';
  static override description = 'Prints the version number; --all adds Node.js and the platform; --json prints all of it as JSON.';
  static override examples = ['<%= config.bin %> version', '<%= config.bin %> version --all', '<%= config.bin %> --version --json'];
  static override flags = {
    all: Flags.boolean({ char: 'a', description: 'Also print the Node.js version and the platform.' }),
  };

  async run(): Promise<VersionInfo> {
    const { flags } = await this.parse(Version);
    const info: VersionInfo = {
      version: this.config.version,
      node: process.versions.node,
      platform: process.platform,
      arch: process.arch,
    };
    if (!this.jsonEnabled()) {
      process.stdout.write(
        flags.all
          ? `skiff   ${info.version}\nNode.js ${info.node}\nOS      ${info.platform}-${info.arch}\n`
          : `${info.version}\n`,
      );
    }
    return info;
  }
}
