import process from 'node:process';
import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';

export default class DeviceSsh extends CloudCommand<{ exitCode: number }> {
  static override summary = "Open a shell on a device or in one of its services' containers, or run one command there.";
  static override description = `A device uuid goes through the server you are logged in to (the device needs no open port): without a service, a shell on the device host (if the device allows it), else in that service's container. A device address (IP or hostname) goes through the device's engine on the LAN (port 2375 on development devices), into a service's container.

An interactive shell gets a terminal whose size follows yours. --command runs one command instead, without a terminal unless --tty; piped stdin reaches it. The remote exit status becomes skiff's.`;
  static override examples = [
    '<%= config.bin %> device ssh 5e1b2c3',
    '<%= config.bin %> device ssh 5e1b2c3 web',
    "<%= config.bin %> device ssh 5e1b2c3 web --command 'cat /data/count'",
    "tar c ./data | <%= config.bin %> device ssh 5e1b2c3 worker -c 'tar x -C /tmp'",
    '<%= config.bin %> device ssh 192.168.1.23 web',
  ];
  static override args = {
    // ignoreStdin: oclif would otherwise read a missing argument from piped stdin, eating the bytes meant for the command.
    device: Args.string({ description: 'Device uuid (through the server), or device address (IP or hostname, optionally :port) on the LAN.', required: true, ignoreStdin: true }),
    service: Args.string({ description: 'Service to open the shell in (cloud: leave out for the device host; LAN: may be left out when the device runs one service).', ignoreStdin: true }),
  };
  static override flags = {
    command: Flags.string({ char: 'c', description: 'Run this command (with sh -c) instead of an interactive shell.' }),
    tty: Flags.boolean({ char: 't', description: 'Give --command a terminal too (merged output, raw keys).' }),
    dockerPort: Flags.integer({ description: "LAN only: the device's engine port (default 2375).", min: 1, max: 65535 }),
  };

  async run(): Promise<{ exitCode: number }> {
    const { args, flags } = await this.parse(DeviceSsh);
    const terminals = Boolean(process.stdin.isTTY && process.stdout.isTTY) && !this.jsonEnabled();
    const { isDeviceUuid } = await import('../../lib/cloud/client.js');
    let exitCode: number;
    let signalled = false;
    if (isDeviceUuid(args.device)) {
      const { cloudExec } = await import('../../lib/cloud/exec.js');
      exitCode = await cloudExec({
        client: await this.cloud(),
        uuid: args.device,
        service: args.service,
        command: flags.command,
        tty: flags.command === undefined ? terminals : flags.tty,
        term: process.env.TERM,
        stdin: process.stdin,
        stdout: process.stdout,
        stderr: process.stderr,
        onSignal: (handler) => {
          const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
          const listeners = signals.map((s) => [s, () => {
            signalled = true;
            handler(s);
          }] as const);
          for (const [s, l] of listeners) process.on(s, l);
          return () => {
            for (const [s, l] of listeners) process.off(s, l);
          };
        },
      });
    } else {
      const { ssh } = await import('../../lib/device/ssh.js');
      exitCode = await ssh({
        device: args.device,
        service: args.service,
        command: flags.command,
        dockerPort: flags.dockerPort,
        tty: terminals,
        stdin: process.stdin,
        stdout: process.stdout,
        stderr: process.stderr,
      });
    }
    // Stopped by a signal, output a stalled reader never took is dropped, as a local command's
    // would be: oclif would wait 10 s for stdout to drain, then print a stack.
    if (signalled) process.exit(exitCode);
    process.exitCode = exitCode;
    return { exitCode };
  }
}
