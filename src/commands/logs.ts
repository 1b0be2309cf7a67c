import process from 'node:process';
import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../cli/cloud.js';

export default class Logs extends CloudCommand<void> {
  static override summary = "Show a device's logs; with --tail, follow them.";
  static override description = "Prints the device's recent log lines (every service's output and the agent's system messages), then with --tail keeps following, reconnecting when the stream drops. A LAN device (an address) is read directly: skiff agents and balenaOS devices in local mode. A cloud device (its uuid, or a unique prefix of 7+ characters) is read through the server you are logged in to; a follow that reconnects neither repeats nor skips a line. With --json, one JSON object per line (NDJSON).";
  static override examples = [
    '<%= config.bin %> logs 192.168.1.23',
    '<%= config.bin %> logs mydevice.local --tail --service web --service worker',
    '<%= config.bin %> logs 127.0.0.1:48484 --tail --system',
    '<%= config.bin %> logs 7cf02a6 --tail --max-lines 50',
  ];
  static override args = { device: Args.string({ description: 'Device address (IP or hostname, optionally :port), or a cloud device\'s uuid (7+ characters).', required: true }) };
  static override flags = {
    tail: Flags.boolean({ char: 't', description: 'Keep following the logs.' }),
    service: Flags.string({ char: 's', description: 'Only this service (repeatable).', multiple: true }),
    system: Flags.boolean({ char: 'S', description: 'Only the system messages.' }),
    'max-retry': Flags.integer({ description: 'Reconnect attempts when the stream drops (with --tail).', default: 1000, min: 0 }),
    'max-lines': Flags.integer({ description: 'Lines of history to show first (cloud devices; default 1000).', min: 0, max: 100_000 }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Logs);
    const out = await this.output();
    const [{ isDeviceUuid }, { logLineFormatter }] = await Promise.all([import('../lib/cloud/client.js'), import('../ui/log-line.js')]);
    const format = logLineFormatter(out.chalk);
    const print = (e: Parameters<typeof format>[0]): void => void process.stdout.write(this.jsonEnabled() ? `${JSON.stringify(e)}\n` : `${format(e)}\n`);
    const onReconnect = (n: number, reason: string): void => out.info(out.chalk.yellow(`Log stream dropped (${reason}); reconnecting (attempt ${n})...`));
    if (isDeviceUuid(args.device)) {
      const [client, { cloudLogs }] = await Promise.all([this.cloud(), import('../lib/cloud/logs.js')]);
      // Ctrl-C ends following: a normal stop, not an error.
      await this.cancellable((signal) => cloudLogs(client, args.device, {
        follow: flags.tail, services: flags.service, system: flags.system, maxRetry: flags['max-retry'],
        ...(flags['max-lines'] !== undefined ? { maxLines: flags['max-lines'] } : {}),
        signal, onLine: print, onReconnect,
      }));
      return;
    }
    const [{ DeviceClient, parseDeviceAddress }, { streamLogs }] = await Promise.all([import('../lib/device/client.js'), import('../lib/device/logs.js')]);
    const client = new DeviceClient(parseDeviceAddress(args.device));
    await client.check();
    await this.cancellable((signal) => streamLogs(client, {
      follow: flags.tail,
      services: flags.service,
      system: flags.system,
      maxRetry: flags['max-retry'],
      signal,
      onEntry: print,
      onReconnect,
    }));
  }
}
