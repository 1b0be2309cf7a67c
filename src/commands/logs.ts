import process from 'node:process';
import { Args, Flags } from '@oclif/core';
import { SkiffCommand } from '../cli/base-command.js';

export default class Logs extends SkiffCommand<void> {
  static override summary = "Show a device's logs; with --tail, follow them.";
  static override description = "Prints the device's recent log lines (every service's output and the agent's system messages), then with --tail keeps following, reconnecting when the stream drops. Works with skiff agents and balenaOS devices in local mode. With --json, one JSON object per line (NDJSON).";
  static override examples = ['<%= config.bin %> logs 192.168.1.23', '<%= config.bin %> logs mydevice.local --tail --service web --service worker', '<%= config.bin %> logs 127.0.0.1:48484 --tail --system'];
  static override args = { device: Args.string({ description: 'Device address (IP or hostname, optionally :port).', required: true }) };
  static override flags = {
    tail: Flags.boolean({ char: 't', description: 'Keep following the logs.' }),
    service: Flags.string({ char: 's', description: 'Only this service (repeatable).', multiple: true }),
    system: Flags.boolean({ char: 'S', description: 'Only the system messages.' }),
    'max-retry': Flags.integer({ description: 'Reconnect attempts when the stream drops (with --tail).', default: 1000, min: 0 }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Logs);
    const out = await this.output();
    const [{ DeviceClient, parseDeviceAddress }, { streamLogs }, { logLineFormatter }] = await Promise.all([
      import('../lib/device/client.js'), import('../lib/device/logs.js'), import('../ui/log-line.js'),
    ]);
    const client = new DeviceClient(parseDeviceAddress(args.device));
    await client.check();
    const format = logLineFormatter(out.chalk);
    // Ctrl-C ends following: a normal stop, not an error.
    await this.cancellable((signal) => streamLogs(client, {
      follow: flags.tail,
      services: flags.service,
      system: flags.system,
      maxRetry: flags['max-retry'],
      signal,
      onEntry: (e) => process.stdout.write(this.jsonEnabled() ? `${JSON.stringify(e)}\n` : `${format(e)}\n`),
      onReconnect: (n, reason) => out.info(out.chalk.yellow(`Log stream dropped (${reason}); reconnecting (attempt ${n})...`)),
    }));
  }
}
