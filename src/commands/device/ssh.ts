import process from 'node:process';
import { Args, Flags } from '@oclif/core';
import { SkiffCommand } from '../../cli/base-command.js';

export default class DeviceSsh extends SkiffCommand<{ exitCode: number }> {
  static override summary = "Open a shell in a service's container on a device, or run one command there.";
  static override description = "Runs through the device's engine (port 2375 on development devices). The terminal size follows yours; the command's exit status becomes skiff's.";
  static override examples = ['<%= config.bin %> device ssh 192.168.1.23 web', "<%= config.bin %> device ssh 192.168.1.23 worker --command 'cat /data/count'"];
  static override args = {
    device: Args.string({ description: 'Device address (IP or hostname, optionally :port).', required: true }),
    service: Args.string({ description: 'Service to open the shell in (may be left out when the device runs one service).' }),
  };
  static override flags = {
    command: Flags.string({ char: 'c', description: 'Run this command instead of an interactive shell.' }),
    dockerPort: Flags.integer({ description: "The device's engine port (default 2375).", min: 1, max: 65535 }),
  };

  async run(): Promise<{ exitCode: number }> {
    const { args, flags } = await this.parse(DeviceSsh);
    const { ssh } = await import('../../lib/device/ssh.js');
    const exitCode = await ssh({
      device: args.device,
      service: args.service,
      command: flags.command,
      dockerPort: flags.dockerPort,
      tty: Boolean(process.stdin.isTTY && process.stdout.isTTY) && !this.jsonEnabled(),
      stdin: process.stdin,
      stdout: process.stdout,
      stderr: process.stderr,
    });
    process.exitCode = exitCode;
    return { exitCode };
  }
}
