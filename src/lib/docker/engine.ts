/**
 * The Docker (Moby / balenaEngine) engine we build on: where it is, whether it answers, and what it
 * runs on. The CLI's commands get an `Engine` (dockerode) from `connectEngine`; the device agent uses
 * the smaller client in engine-lite.ts, and both check the engine the same way (`probeEngine`).
 */
import { existsSync, readFileSync } from 'node:fs';
import process from 'node:process';
import type Dockerode from 'dockerode';
import { SkiffError } from '../errors/errors.js';
import { archFromDocker, type Arch } from '../device-types/device-types.js';

/** The flags balena-cli uses for choosing an engine. */
export interface EngineFlags {
  /** Path of a local socket (`--docker`). */
  docker?: string;
  dockerHost?: string;
  dockerPort?: number;
  ca?: string;
  cert?: string;
  key?: string;
}

/** What connecting learns about an engine, whichever client talks to it. */
export interface EngineFacts {
  /** Human description of where the engine is: `unix:///var/run/docker.sock`, `tcp://10.0.0.2:2375`. */
  address: string;
  /** True when the engine runs on this machine (so binfmt_misc here is what its containers use). */
  local: boolean;
  version: string;
  apiVersion: string;
  /** The engine's OS as it reports it (`linux`); empty when it does not say. */
  os: string;
  /** balenaEngine rather than Docker/Moby. */
  balena: boolean;
  arch: Arch | undefined;
  /** Docker's own name for the architecture, e.g. x86_64. */
  machineArch: string;
  cpus: number;
}

export interface Engine extends EngineFacts {
  docker: Dockerode;
}

/** Where and how to reach an engine: a unix socket, or host and port (TLS when protocol is https). */
export interface ConnectionOptions {
  socketPath?: string;
  host?: string;
  port?: number;
  protocol?: 'http' | 'https';
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** Works out the connection from flags, then DOCKER_HOST, then the default socket. */
export function connectionOptions(flags: EngineFlags, env: NodeJS.ProcessEnv = process.env): { options: ConnectionOptions; address: string; local: boolean } {
  const read = (file: string | undefined, what: string): Buffer | undefined => {
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch {
      throw new SkiffError('usage', `cannot read the ${what} file '${file}'`, { hint: `check the --${what} path` });
    }
  };
  if (flags.docker) {
    return { options: { socketPath: flags.docker }, address: `unix://${flags.docker}`, local: true };
  }
  if (flags.dockerHost) {
    const tls = Boolean(flags.ca || flags.cert || flags.key);
    const port = flags.dockerPort ?? (tls ? 2376 : 2375);
    return {
      options: {
        host: flags.dockerHost,
        port,
        protocol: tls ? 'https' : 'http',
        ca: read(flags.ca, 'ca'),
        cert: read(flags.cert, 'cert'),
        key: read(flags.key, 'key'),
      },
      address: `${tls ? 'https' : 'tcp'}://${flags.dockerHost}:${port}`,
      local: isLoopback(flags.dockerHost),
    };
  }
  const host = env.DOCKER_HOST;
  if (host && !host.startsWith('unix://')) {
    let url: URL;
    try {
      url = new URL(host);
    } catch {
      throw new SkiffError('usage', `DOCKER_HOST '${host}' is not a valid address`, { hint: 'use unix:///path/to/docker.sock or tcp://host:port' });
    }
    if (url.protocol !== 'tcp:' && url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new SkiffError('usage', `DOCKER_HOST scheme '${url.protocol}' is not supported`, { hint: 'use unix:// or tcp://' });
    }
    const tls = env.DOCKER_TLS_VERIFY === '1' || url.protocol === 'https:';
    const certPath = env.DOCKER_CERT_PATH;
    const port = Number(url.port || (tls ? 2376 : 2375));
    return {
      options: {
        host: url.hostname,
        port,
        protocol: tls ? 'https' : 'http',
        ...(tls && certPath
          ? { ca: read(`${certPath}/ca.pem`, 'ca'), cert: read(`${certPath}/cert.pem`, 'cert'), key: read(`${certPath}/key.pem`, 'key') }
          : {}),
      },
      address: host,
      local: isLoopback(url.hostname),
    };
  }
  const socketPath = host?.startsWith('unix://') ? host.slice('unix://'.length) : '/var/run/docker.sock';
  return { options: { socketPath }, address: `unix://${socketPath}`, local: true };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host);
}

/** The calls {@link probeEngine} makes, so any client can be checked the same way. */
export interface EngineProbe {
  ping(signal: AbortSignal): Promise<unknown>;
  info(): Promise<{ Architecture?: string; NCPU?: number; ServerVersion?: string }>;
  version(): Promise<{ Version?: string; ApiVersion?: string; Os?: string; Components?: Array<{ Name?: string }> }>;
}

/**
 * Checks the engine answers (5 s) and reads what it is, so every command (and the agent) fails the
 * same clear way when there is no engine.
 */
export async function probeEngine(probe: EngineProbe, connection: ReturnType<typeof connectionOptions>): Promise<EngineFacts> {
  const { options, address, local } = connection;
  const unreachable = (reason: string) => {
    const socketHint = options.socketPath && !existsSync(options.socketPath)
      ? 'start the engine (sudo systemctl start docker, or sudo dockerd &)'
      : 'check that the engine is running and that you may use it (root or the docker group)';
    return new SkiffError('dockerUnreachable', `cannot reach the Docker engine at ${address} (${reason})`, {
      hint: options.socketPath
        ? `${socketHint}, or point DOCKER_HOST or --dockerHost/--dockerPort at one`
        : 'check the address and port, and that the engine listens on TCP there (balenaOS development images use port 2375)',
    });
  };
  let info: Awaited<ReturnType<EngineProbe['info']>>;
  let version: Awaited<ReturnType<EngineProbe['version']>>;
  try {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 5000);
    try {
      await probe.ping(ac.signal);
    } finally {
      clearTimeout(timer);
    }
    [info, version] = await Promise.all([probe.info(), probe.version()]);
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { statusCode?: number; reason?: string };
    const reason = e.name === 'AbortError' ? 'no answer within 5 s' : e.code ?? (e.statusCode ? `HTTP ${e.statusCode}` : e.message);
    throw unreachable(reason);
  }
  const machineArch = info.Architecture ?? 'unknown';
  const components = version.Components ?? [];
  return {
    address,
    local,
    version: version.Version ?? info.ServerVersion ?? 'unknown',
    apiVersion: version.ApiVersion ?? 'unknown',
    os: version.Os ?? '',
    balena: components.some((c) => /balena/i.test(c.Name ?? '')) || /balena/i.test(info.ServerVersion ?? ''),
    arch: archFromDocker(machineArch),
    machineArch,
    cpus: info.NCPU ?? 1,
  };
}

/** Connects with dockerode (the CLI's builds, pushes, logs and ssh) and checks the engine answers. */
export async function connectEngine(flags: EngineFlags, env: NodeJS.ProcessEnv = process.env): Promise<Engine> {
  const connection = connectionOptions(flags, env);
  const { default: Docker } = await import('dockerode');
  const docker = new Docker(connection.options);
  const facts = await probeEngine({
    ping: (signal) => (docker as unknown as { ping(o: { abortSignal: AbortSignal }): Promise<unknown> }).ping({ abortSignal: signal }),
    info: () => docker.info(),
    version: () => docker.version(),
  }, connection);
  return { ...facts, docker };
}
