/**
 * `skiff device ssh`: a shell (or one command) in a service's container, through the device's
 * engine, with the terminal size passed through and the exit status kept.
 */
import process from 'node:process';
import { PassThrough } from 'node:stream';
import type { ContainerIdResponse, Received } from '../device-api/wire.js';
import { SkiffError } from '../errors/errors.js';
import { connectEngine } from '../docker/engine.js';
import { DeviceClient, parseDeviceAddress } from './client.js';

export interface SshOptions {
  device: string;
  service?: string;
  command?: string;
  dockerPort?: number;
  tty: boolean;
  stdin: NodeJS.ReadableStream & { setRawMode?: (raw: boolean) => void; isTTY?: boolean };
  stdout: NodeJS.WritableStream & { columns?: number; rows?: number; on?: (e: 'resize', cb: () => void) => void };
  stderr: NodeJS.WritableStream;
}

/** Runs the session; resolves with the exit status of the shell or command. */
export async function ssh(o: SshOptions): Promise<number> {
  const address = parseDeviceAddress(o.device);
  const client = new DeviceClient(address);
  await client.check();
  const ids = await client.json<Received<ContainerIdResponse>>('GET', '/v2/containerId');
  const byService = 'services' in ids ? ids.services ?? {} : {};
  const services = Object.keys(byService);
  const service = o.service ?? (services.length === 1 ? services[0] : undefined);
  if (!service) {
    throw new SkiffError('usage', services.length === 0 ? 'the device runs no services' : 'name the service to open a shell in', { hint: services.length ? `services: ${services.join(', ')}` : "push a release first with 'skiff push'" });
  }
  const containerId = byService[service];
  if (!containerId) throw new SkiffError('usage', `the device runs no service '${service}'`, { hint: `services: ${services.join(', ')}` });
  const engine = await connectEngine({ dockerHost: address.host, dockerPort: o.dockerPort ?? 2375 });
  const container = engine.docker.getContainer(containerId);
  const forwardStdin = !o.command || o.stdin.isTTY !== true;
  const exec = await container.exec({
    Cmd: o.command ? ['sh', '-c', o.command] : ['sh', '-c', 'command -v bash >/dev/null && exec bash || exec sh'],
    // A shell reads the keyboard, or a script piped in; a command reads piped stdin, never the keyboard.
    AttachStdin: forwardStdin,
    AttachStdout: true,
    AttachStderr: true,
    Tty: o.tty,
    Env: o.tty ? [`TERM=${process.env.TERM ?? 'xterm'}`] : [],
  });
  const stream = await exec.start({ hijack: true, stdin: true, Tty: o.tty });
  const resize = () => {
    if (o.stdout.columns && o.stdout.rows) void exec.resize({ h: o.stdout.rows, w: o.stdout.columns }).catch(() => {});
  };
  if (o.tty) {
    o.stdin.setRawMode?.(true);
    resize();
    o.stdout.on?.('resize', resize);
    stream.pipe(o.stdout);
  } else {
    const out = new PassThrough();
    const err = new PassThrough();
    out.pipe(o.stdout);
    err.pipe(o.stderr);
    engine.docker.modem.demuxStream(stream, out, err);
  }
  if (forwardStdin) {
    o.stdin.pipe(stream, { end: false });
    // EOF reaches the shell; closing our side at once lost the shell's last output on Docker 20.10,
    // so give the engine a moment to pass the input on first.
    o.stdin.on('end', () => setTimeout(() => (stream as unknown as { end: () => void }).end(), 200));
  }
  await new Promise<void>((resolve) => {
    stream.on('end', resolve);
    stream.on('close', resolve);
    stream.on('error', () => resolve());
  });
  if (o.tty) o.stdin.setRawMode?.(false);
  o.stdin.unpipe?.(stream as unknown as NodeJS.WritableStream);
  (o.stdin as { pause?: () => void }).pause?.();
  // The stream can close a moment before the engine records the exit status.
  for (let i = 0; i < 50; i++) {
    const info = await exec.inspect();
    if (!info.Running && info.ExitCode !== null && info.ExitCode !== undefined) return info.ExitCode;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new SkiffError('error', 'the engine did not report how the command ended');
}
