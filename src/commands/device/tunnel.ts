import process from 'node:process';
import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { TunnelEvent, TunnelSummary, TunnelTarget } from '../../lib/cloud/tunnel.js';

export default class DeviceTunnel extends CloudCommand<TunnelSummary> {
  static override summary = 'Forward local TCP ports to a device: its host, or a service container.';
  static override description = `A device uuid goes through the server you are logged in to, so the device needs no open port: each local connection becomes one session there (and a line in 'skiff device sessions'). A device address (IP or hostname) is reached directly on the LAN.

Each --port is [localIP:]localPort:remotePort, a lone remotePort (the same port on 127.0.0.1), or [localIP:]localPort:service:remotePort for a port of a service's container (cloud only). An IPv6 local address goes in brackets: [::1]:8080:80. Runs until Ctrl-C. A connection the device refuses (nothing listens there) or loses is reported and closed; the tunnel stays up for the others.

With --json, one JSON object per line (NDJSON) for each event — listening, connection, closed (with bytesIn/bytesOut), refused, dropped — then the envelope with the totals when it stops.`;
  static override examples = [
    '<%= config.bin %> device tunnel 5e1b2c3 -p 8080:80',
    '<%= config.bin %> device tunnel 5e1b2c3 -p 22222:22 -p 5432:db:5432',
    '<%= config.bin %> device tunnel 5e1b2c3 -p 0.0.0.0:8080:web:80',
    '<%= config.bin %> device tunnel 192.168.1.23 -p 8080:80',
  ];
  static override args = {
    device: Args.string({ description: 'Device uuid (through the server), or device address (IP or hostname) on the LAN.', required: true }),
  };
  static override flags = {
    port: Flags.string({ char: 'p', description: '[localIP:]localPort:remotePort, remotePort, or [localIP:]localPort:service:remotePort (repeatable).', multiple: true, required: true }),
  };

  async run(): Promise<TunnelSummary> {
    const { args, flags } = await this.parse(DeviceTunnel);
    const [{ parsePortSpecs }, { isDeviceUuid }, { runTunnel }, { SkiffError }] = await Promise.all([
      import('../../lib/cloud/port-spec.js'), import('../../lib/cloud/client.js'), import('../../lib/cloud/tunnel.js'), import('../../lib/errors/errors.js'),
    ]);
    const ports = parsePortSpecs(flags.port);
    let target: TunnelTarget;
    if (isDeviceUuid(args.device)) {
      target = { kind: 'cloud', client: await this.cloud(), uuid: args.device };
    } else {
      const { parseDeviceAddress } = await import('../../lib/device/client.js');
      const withService = ports.find((p) => p.service);
      if (withService) throw new SkiffError('usage', `port '${withService.spec}': a service's port is reached through the server only`, { hint: 'name the device by its uuid, or forward the port the service publishes on the device' });
      target = { kind: 'lan', host: parseDeviceAddress(args.device).host };
    }
    const out = await this.output();
    const json = this.jsonEnabled();
    const onEvent = (e: TunnelEvent): void => {
      if (json) {
        process.stdout.write(`${JSON.stringify(e)}\n`);
        return;
      }
      if (e.event === 'listening') out.info(`Tunnelling ${e.local} → ${e.device}:${e.remote}`);
      else if (e.event === 'refused' || e.event === 'dropped') out.info(out.chalk.yellow(`${e.message} (from ${e.client})`));
      else if (this.debugEnabled) out.info(out.chalk.dim(e.event === 'connection' ? `${e.client} → ${e.remote}: connected` : `${e.client} → ${e.remote}: closed (${e.bytesIn} bytes in, ${e.bytesOut} out)`));
    };
    const summary = await this.cancellable((signal) => {
      if (!json) signal.addEventListener('abort', () => out.info('Closing the tunnel.'), { once: true });
      return runTunnel({ target, ports, signal, onEvent });
    });
    return summary;
  }
}
