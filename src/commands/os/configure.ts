import { Args, Flags } from '@oclif/core';
import { SkiffCommand } from '../../cli/base-command.js';
import { configFlags } from '../../cli/config-flags.js';
import type { ConfigureResult } from '../../lib/os/config.js';

export default class OsConfigure extends SkiffCommand<ConfigureResult> {
  static override summary = 'Configure a balenaOS image or drive: fleet, device type, network, hostname, SSH keys.';
  static override description = `Writes config.json (balenaOS's format) into the boot partition of an image file or a drive, and a NetworkManager connection in system-connections/ for WiFi. No mount and no root needed for an image file. Fields of the image's config.json that no flag or --config file sets are kept.

The boot partition is the FAT partition labelled resin-boot, balena-boot or skiff-boot (else the first FAT partition), on an MBR or GPT disk. Everything is checked (inputs, free space) before anything is written.`;
  static override examples = [
    '<%= config.bin %> os configure balena.img --device-type raspberrypi4-64 --fleet myfleet --dev',
    '<%= config.bin %> os configure balena.img --config-network wifi --config-wifi-ssid home --config-wifi-key s3cret-pass',
    '<%= config.bin %> os configure /dev/sdb --config config.json --hostname kiosk-1 --ssh-key ~/.ssh/id_ed25519.pub',
  ];
  static override args = {
    target: Args.string({ description: 'OS image file or drive (e.g. balena.img, /dev/sdb).', required: true }),
  };
  static override flags = {
    config: Flags.string({ description: 'config.json to start from (e.g. from `skiff os build-config`); flags override its fields.' }),
    ...configFlags,
  };

  async run(): Promise<ConfigureResult> {
    const { args, flags } = await this.parse(OsConfigure);
    const [{ configureTarget }, { readConfigFile, readSshKeys }, { optionsFromFlags }] = await Promise.all([import('../../lib/os/config.js'), import('../../lib/os/config-json.js'), import('../../cli/config-flags.js')]);
    const options = await optionsFromFlags(flags, await readSshKeys(flags['ssh-key'] ?? []));
    if (flags.config !== undefined) options.base = await readConfigFile(flags.config);
    if (flags.fleet !== undefined && flags['provisioning-key'] === undefined) {
      // Logged in: the server makes the device's config.json (a new provisioning key, its endpoint).
      const { resolveCredentials } = await import('../../lib/cloud/credentials.js');
      const credentials = resolveCredentials();
      if (credentials.token) {
        const { CloudClient } = await import('../../lib/cloud/client.js');
        const fromServer = await new CloudClient({ url: credentials.url, token: credentials.token }).fleetConfig(flags.fleet, {
          ...(options.deviceType ? { deviceType: options.deviceType } : {}), ...(flags.dev ? { developmentMode: true } : {}),
        });
        options.base = { ...options.base, ...fromServer };
      } else {
        await this.warnUser(`not logged in: config.json names fleet ${flags.fleet} but holds no provisioning key, so the device cannot register (run skiff login first, or pass --provisioning-key and --api-endpoint)`);
      }
    }
    const result = await configureTarget(args.target, options);
    if (result.config.developmentMode === true && flags.dev) {
      await this.warnUser('development mode allows unauthenticated root SSH and exposes the engine on port 2375: use it only on a trusted network');
    }
    const out = await this.output();
    const p = result.partition;
    out.info(`Boot partition ${p.index} (${p.scheme === 'none' ? 'no partition table' : p.scheme.toUpperCase()}, FAT${p.fatType}${p.label ? ` '${p.label}'` : ''})${result.osVersion ? `, balenaOS ${result.osVersion}` : ''}`);
    const c = result.config;
    const summary = [c.deviceType, c.applicationName ?? (c.applicationId === undefined ? undefined : `fleet ${c.applicationId}`), c.hostname && `hostname ${c.hostname}`, c.developmentMode ? 'development mode' : undefined].filter(Boolean).join(', ');
    out.result(`Configured ${result.target}: wrote ${result.written.join(', ')}${result.removed.length > 0 ? `; removed ${result.removed.join(', ')}` : ''} (${summary})`);
    return result;
  }
}
