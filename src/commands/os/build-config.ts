import { writeFile } from 'node:fs/promises';
import { Flags } from '@oclif/core';
import { SkiffCommand, SkiffError } from '../../cli/base-command.js';
import { configFlags } from '../../cli/config-flags.js';
import type { BalenaConfig } from '../../lib/os/config-json.js';

export default class OsBuildConfig extends SkiffCommand<BalenaConfig> {
  static override summary = 'Build a config.json for `os configure --config`, by asking or from flags.';
  static override description = `On a terminal, asks for what the flags leave out (device type, network, WiFi, fleet, development mode). Elsewhere (CI, pipes) every answer must come as a flag: at least --device-type and --config-network (and --config-wifi-ssid for wifi); a missing one is an error naming it (exit 6). The WiFi network is recorded as wifiSsid/wifiKey, which 'os configure --config' turns into a connection file.`;
  static override examples = [
    '<%= config.bin %> os build-config --output config.json',
    '<%= config.bin %> os build-config --device-type raspberrypi4-64 --config-network ethernet --fleet myfleet --dev > config.json',
    '<%= config.bin %> os build-config -o config.json --device-type intel-nuc --config-network wifi --config-wifi-ssid home --config-wifi-key s3cret-pass',
  ];
  static override flags = {
    output: Flags.string({ char: 'o', description: 'File to write config.json to (default: stdout).' }),
    ...configFlags,
  };

  async run(): Promise<BalenaConfig> {
    const { flags } = await this.parse(OsBuildConfig);
    const out = await this.output();
    if (out.terminal.interactive) {
      const answers = await askMissing(flags);
      Object.assign(flags, answers);
    } else {
      const missing = [
        flags['device-type'] === undefined ? '--device-type' : undefined,
        flags['config-network'] === undefined && flags['config-wifi-ssid'] === undefined ? '--config-network' : undefined,
        flags['config-network'] === 'wifi' && flags['config-wifi-ssid'] === undefined ? '--config-wifi-ssid' : undefined,
      ].filter((f): f is string => f !== undefined);
      if (missing.length > 0) throw new SkiffError('notInteractive', `not a terminal, so nothing can be asked: give ${missing.join(', ')}`);
    }
    const [{ buildConfig, readSshKeys }, { optionsFromFlags }] = await Promise.all([import('../../lib/os/config-json.js'), import('../../cli/config-flags.js')]);
    const config = buildConfig(await optionsFromFlags(flags, await readSshKeys(flags['ssh-key'] ?? [])));
    const text = `${JSON.stringify(config, null, 2)}\n`;
    if (flags.output === undefined) {
      out.result(text.trimEnd());
    } else {
      try {
        await writeFile(flags.output, text);
      } catch (err) {
        throw new SkiffError('error', `cannot write ${flags.output}: ${(err as Error).message}`);
      }
      out.info(`Wrote ${flags.output}`);
    }
    return config;
  }
}

interface Asked {
  'device-type'?: string;
  fleet?: string;
  'config-network'?: string;
  'config-wifi-ssid'?: string;
  'config-wifi-key'?: string;
  dev?: boolean;
}

/** Asks (on the terminal) for each answer no flag gave. */
async function askMissing(flags: Asked): Promise<Asked> {
  const [prompt, { DEVICE_TYPES }] = await Promise.all([import('../../ui/prompt.js'), import('../../lib/device-types/device-types.js')]);
  const answers: Asked = {};
  if (flags['device-type'] === undefined) {
    answers['device-type'] = await prompt.select('Device type', DEVICE_TYPES.map((d) => ({ name: `${d.name} (${d.slug})`, value: d.slug })), { pageSize: 12 });
  }
  if (flags.fleet === undefined) {
    const fleet = (await prompt.input('Fleet name (empty for none)')).trim();
    if (fleet !== '') answers.fleet = fleet;
  }
  let network = flags['config-network'] ?? (flags['config-wifi-ssid'] === undefined ? undefined : 'wifi');
  if (network === undefined) {
    network = await prompt.select('Network', [{ name: 'ethernet', value: 'ethernet' }, { name: 'wifi', value: 'wifi' }]);
    answers['config-network'] = network;
  }
  if (network === 'wifi' && flags['config-wifi-ssid'] === undefined) {
    answers['config-wifi-ssid'] = await prompt.input('WiFi SSID', { validate: (v) => v.trim() !== '' || 'the SSID cannot be empty' });
  }
  if (network === 'wifi' && flags['config-wifi-key'] === undefined) {
    const key = await prompt.password('WiFi passphrase (empty for an open network)');
    if (key !== '') answers['config-wifi-key'] = key;
  }
  if (flags.dev === undefined) {
    answers.dev = await prompt.confirm('Development mode (open root SSH, engine on port 2375)?');
  }
  return answers;
}
