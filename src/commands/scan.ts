import { Flags } from '@oclif/core';
import { SkiffCommand, SkiffError } from '../cli/base-command.js';
import type { FoundDevice } from '../lib/discovery/scan.js';

export default class Scan extends SkiffCommand<FoundDevice[]> {
  static override summary = 'Find devices on the local network: skiff agents and balenaOS devices.';
  static override description = `Asks the LAN over mDNS for skiff agents (service _skiff._tcp, which 'skiff agent' advertises) and balenaOS devices (the _resin-device subtype of _ssh._tcp that balenaOS's avahi publishes), then asks each device's API (port 48484) for its device type, architecture and agent or supervisor version. A device whose API does not answer (a balenaOS production image, an agent outside development mode) is listed with what mDNS says.

Multicast must reach this computer: the device on the same network (not across a router), and no firewall dropping UDP port 5353.`;
  static override examples = ['<%= config.bin %> scan', '<%= config.bin %> scan --timeout 10 --verbose', '<%= config.bin %> scan --json'];
  static override flags = {
    verbose: Flags.boolean({ char: 'v', description: 'Show more columns (instance name, uuid, device API) and any network warnings.' }),
    timeout: Flags.string({ char: 't', description: 'Seconds to listen for devices (decimals allowed).', default: '4' }),
  };

  async run(): Promise<FoundDevice[]> {
    const { flags } = await this.parse(Scan);
    const seconds = Number(flags.timeout);
    if (flags.timeout.trim() === '' || !(seconds > 0 && seconds <= 3600)) {
      throw new SkiffError('usage', `--timeout '${flags.timeout}' is not a number of seconds between 0 and 3600`, { hint: 'e.g. --timeout 10' });
    }
    const out = await this.output();
    const { scanDevices } = await import('../lib/discovery/scan.js');
    const warnings: string[] = [];
    const spinner = out.spinner(`Scanning the network for devices (${seconds} s)`);
    const devices = await scanDevices({ timeoutMs: seconds * 1000, onWarning: (w) => warnings.push(w) });
    spinner.stop();
    // Socket warnings explain an empty result; otherwise they are noise unless asked for.
    if (flags.verbose || devices.length === 0) for (const w of warnings) await this.warnUser(w);
    if (devices.length === 0) {
      out.info("No devices found. Check that the device is on the same network as this computer, that it runs 'skiff agent' (without --no-advertise) or balenaOS, and that the network lets multicast through (mDNS, UDP port 5353); a longer --timeout can help.");
      return devices;
    }
    if (!this.jsonEnabled()) {
      const { table } = await import('../ui/format.js');
      const dash = (v: string | null) => v ?? '-';
      const header = ['ADDRESS', 'HOSTNAME', 'DEVICE TYPE', 'ARCH', 'VERSION', 'KIND', ...(flags.verbose ? ['NAME', 'UUID', 'API'] : [])];
      const rows = devices.map((d) => [d.address, dash(d.hostname), dash(d.deviceType), dash(d.arch), dash(d.version), d.kind,
        ...(flags.verbose ? [d.name, dash(d.uuid), `${d.apiPort} ${d.api}`] : [])]);
      out.result(table(header, rows, (h) => out.chalk.bold(h)));
    }
    return devices;
  }
}
