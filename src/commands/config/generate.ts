import { Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { FleetConfig } from '../../lib/api/resources.js';
import { SkiffError } from '../../lib/errors/errors.js';

export default class ConfigGenerate extends CloudCommand<FleetConfig> {
  static override summary = "Generate a config.json for a new device of a fleet (a new provisioning key and the server's endpoint).";
  static override description = "Asks the server for a config.json in balenaOS's format: the fleet, the device type, a new provisioning key (apiKey) and the API endpoint. A device (or 'skiff agent --config FILE') registers itself with it. The file holds a secret: --output writes it with mode 600. 'skiff os configure IMAGE --fleet F' puts one in an image directly.";
  static override examples = [
    '<%= config.bin %> config generate --fleet kiosks --output config.json',
    '<%= config.bin %> config generate --fleet kiosks --dev --key-expiry-date 2027-01-31',
  ];
  static override flags = {
    fleet: Flags.string({ char: 'f', description: 'Fleet the device joins.', required: true }),
    output: Flags.string({ char: 'o', description: 'File to write (default: print it on stdout).' }),
    dev: Flags.boolean({ description: 'Development mode (config.json developmentMode).' }),
    deviceType: Flags.string({ description: "Device type, when it differs from the fleet's (same architecture)." }),
    'key-expiry-date': Flags.string({ description: "When the provisioning key stops working: a date or ISO time, or 'never' (the default)." }),
  };

  async run(): Promise<FleetConfig> {
    const { flags } = await this.parse(ConfigGenerate);
    const { parseExpiryDate } = await import('../../lib/cloud/client.js');
    const expiresAt = parseExpiryDate(flags['key-expiry-date']);
    // Before the server makes a provisioning key: a key whose file cannot be written is lost.
    if (flags.output) await checkWritable(flags.output);
    let deviceType: string | undefined;
    if (flags.deviceType !== undefined) deviceType = (await import('../../lib/os/config-json.js')).canonicalDeviceType(flags.deviceType);
    const config = await (await this.cloud()).fleetConfig(flags.fleet, {
      ...(deviceType ? { deviceType } : {}), ...(expiresAt ? { expiresAt } : {}), ...(flags.dev ? { developmentMode: true } : {}),
    });
    const out = await this.output();
    const text = `${JSON.stringify(config, null, 2)}\n`;
    if (flags.output) {
      const { writeFile, chmod } = await import('node:fs/promises');
      try {
        await writeFile(flags.output, text, { mode: 0o600 });
        await chmod(flags.output, 0o600);
      } catch (err) {
        throw new SkiffError('error', `cannot write ${flags.output}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { hint: 'pick another --output; the provisioning key made for it is unused (revoke it if you like)' });
      }
      out.info(`Wrote ${flags.output} for fleet ${flags.fleet} (it holds a provisioning key: keep it private).`);
    } else if (!out.json) process.stdout.write(text);
    return config;
  }
}

/** Refuses an --output whose folder is missing or not writable, or that names a folder. */
async function checkWritable(file: string): Promise<void> {
  const { access, stat, constants } = await import('node:fs/promises');
  const path = await import('node:path');
  const dir = path.dirname(path.resolve(file));
  const folder = await stat(dir).catch(() => undefined);
  if (!folder?.isDirectory()) throw new SkiffError('usage', `cannot write ${file}: the folder ${dir} does not exist`, { hint: 'create it first, or pick another --output' });
  if ((await stat(file).catch(() => undefined))?.isDirectory()) throw new SkiffError('usage', `cannot write ${file}: it is a folder`, { hint: 'name a file, e.g. --output config.json' });
  await access(dir, constants.W_OK).catch(() => {
    throw new SkiffError('usage', `cannot write ${file}: the folder ${dir} is not writable`, { hint: 'pick another --output' });
  });
}
