import { Args } from '@oclif/core';
import { SkiffCommand } from '../../cli/base-command.js';
import { driveFlag } from '../../cli/config-flags.js';
import type { BalenaConfig } from '../../lib/os/config-json.js';

export default class ConfigWrite extends SkiffCommand<BalenaConfig> {
  static override summary = 'Set one key of the config.json of a balenaOS image or drive.';
  static override description = `Dotted keys set nested fields, creating missing objects (os.network.connectivity.interval). Values are strings, as balena-cli writes them, except for fields that hold booleans, numbers or lists (developmentMode, persistentLogging, listenPort, os.sshKeys, or whatever type the key already has): those are converted, and a value that does not convert is an error. A value of another type is not replaced: a key under a field that is no object (hostname.sub over a string hostname), a value over an object, or a value that does not convert to the type a field of unknown type holds is refused, and the image is left as it was. A field balenaOS reads as a boolean, number or list but stored as another type (listenPort "48484", as balena-cli writes it) is repaired by a value that converts, with a warning.`;
  static override examples = [
    '<%= config.bin %> config write --drive balena.img hostname kiosk-1',
    '<%= config.bin %> config write --drive /dev/sdb persistentLogging true',
    '<%= config.bin %> config write --drive balena.img os.network.connectivity.interval 300',
  ];
  static override args = {
    key: Args.string({ description: 'Key to set; dots separate nested fields.', required: true }),
    value: Args.string({ description: 'Value to set.', required: true }),
  };
  static override flags = {
    drive: driveFlag,
  };

  async run(): Promise<BalenaConfig> {
    const { args, flags } = await this.parse(ConfigWrite);
    const { writeTargetConfigValue } = await import('../../lib/os/config.js');
    const { config, repaired } = await writeTargetConfigValue(flags.drive, args.key, args.value);
    if (repaired) await this.warnUser(`${repaired.key} held a ${repaired.held}; now the ${repaired.reads} balenaOS reads`);
    (await this.output()).info(`Set ${args.key} in ${flags.drive}`);
    return config;
  }
}
