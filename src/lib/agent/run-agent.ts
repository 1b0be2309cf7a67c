/**
 * Starts an agent: engine, store, reconciliation loop, device API, and (in development mode) the
 * engine's API on port 2375, as balenaOS development images expose it.
 */
import net from 'node:net';
import { accessSync, constants, mkdirSync } from 'node:fs';
import path from 'node:path';
import type http from 'node:http';
import { resolveTarget, type Arch } from '../device-types/device-types.js';
import { connectionOptions, type EngineFlags } from '../docker/engine.js';
import { connectLiteEngine, createEngineClient, networkGateway, type EngineClient } from '../docker/engine-lite.js';
import { SkiffError } from '../errors/errors.js';
import { Agent } from './agent.js';
import { AGENT_VERSION, serve } from './api.js';
import { ConfigError, loadDeviceConfig, tightenSecretFile, type DeviceConfig } from './config.js';
import type { EngineContext } from './engine-state.js';
import { existingHostPaths, LABEL } from './engine-state.js';
import { openStore } from './store.js';
import { advertiseAgent } from '../discovery/advertise.js';

export interface RunAgentOptions {
  dataDir: string;
  configFile?: string;
  listenAddress: string;
  listenPort?: number;
  /** Port for the engine API proxy in development mode; 0 turns it off. */
  enginePort: number;
  deviceType?: string;
  developmentMode?: boolean;
  engine: EngineFlags;
  rollbackGraceMs?: number;
  /** Answer mDNS queries so 'skiff scan' finds the device (default true). */
  advertise?: boolean;
  /** How cloud device actions reboot or power off the host (cloud/actions.ts). */
  hostCommands?: { reboot?: string | undefined; shutdown?: string | undefined };
  /** Whether tunnel sessions may run a shell on the host (`--host-shell`); undefined: in development mode. */
  hostShell?: boolean | undefined;
  /** Each system message (the agent's own, not a container's), from the first one during start-up. */
  onSystemMessage?: (entry: { timestamp: number; message: string }) => void;
}

export interface RunningAgent {
  agent: Agent;
  config: DeviceConfig;
  apiUrl: string;
  stop(): Promise<void>;
}

/**
 * Makes the data folder (0700) and checks this user may write in it, before anything is read.
 * @throws SkiffError('error') naming the folder and why (no permission, not a folder, read-only, a kernel file system)
 */
export function prepareDataDir(dir: string): void {
  const hint = 'run the agent as root, or pass --data-dir a folder this user can write';
  // Node's recursive mkdir never returns on some /proc paths; neither holds a device's state.
  if (/^\/(proc|sys)(\/|$)/.test(path.resolve(dir))) throw new SkiffError('usage', `cannot keep the agent's state in ${dir}: it is a kernel file system`, { hint: 'pass --data-dir a folder on a disk' });
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    accessSync(dir, constants.W_OK);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const denied = e.code === 'EACCES' || e.code === 'EPERM';
    const why = denied ? 'permission denied' : e.code === 'ENOTDIR' || e.code === 'EEXIST' ? 'a file is in the way (not a folder)' : e.code === 'EROFS' ? 'the file system is read-only' : e.message;
    throw new SkiffError('error', `cannot use ${dir} for the agent's state: ${why}`, { hint: denied ? hint : 'pass --data-dir a folder this user can write' });
  }
}

export async function runAgent(options: RunAgentOptions): Promise<RunningAgent> {
  prepareDataDir(options.dataDir);
  const engine = await connectEngine(options.engine);
  const configFile = options.configFile ?? path.join(options.dataDir, 'config.json');
  // A new device takes its type from the engine's architecture, so it cannot start without one.
  const defaultType = (): string => {
    if (options.deviceType) return options.deviceType;
    if (engine.unreachable) throw engine.unreachable;
    return resolveTarget({ defaultArch: engine.arch ?? 'amd64' }).deviceType.slug;
  };
  const widened = tightenSecretFile(configFile);
  let config: DeviceConfig;
  try {
    config = loadDeviceConfig(configFile, { deviceType: defaultType, listenPort: options.listenPort, developmentMode: options.developmentMode });
  } catch (err) {
    if (err instanceof ConfigError) throw new SkiffError('usage', err.message);
    throw err;
  }
  if (typeof config.apiEndpoint === 'string' && config.apiEndpoint.trim() !== '') {
    // Checked before anything starts: a bad endpoint is a message and an exit, not an agent half up.
    const { checkApiEndpoint } = await import('./cloud/client.js');
    try {
      config.apiEndpoint = checkApiEndpoint(config.apiEndpoint);
    } catch (err) {
      throw new SkiffError('usage', `${configFile}: ${(err as Error).message}`, { hint: 'fix apiEndpoint, or remove it to run in local mode' });
    }
  }
  if (options.listenPort !== undefined) config.listenPort = options.listenPort;
  if (options.developmentMode !== undefined) config.developmentMode = options.developmentMode;
  if (options.deviceType) config.deviceType = options.deviceType;
  const target = resolveTarget({ deviceType: config.deviceType });
  let store;
  try {
    store = await openStore(options.dataDir);
  } catch (err) {
    throw new SkiffError('error', (err as Error).message);
  }
  const gateway = await bridgeGateway(engine.docker);
  const engineSocket = engine.address.startsWith('unix://') ? engine.address.slice('unix://'.length) : '/var/run/docker.sock';
  const ctx: EngineContext = {
    docker: engine.docker,
    uuid: config.uuid,
    deviceType: target.deviceType.slug,
    arch: target.arch,
    deviceName: config.deviceName ?? `skiff-${config.uuid.slice(0, 7)}`,
    apiAddress: `http://${gateway}:${config.listenPort}`,
    apiKey: config.deviceApiKey,
    locksDir: path.join(options.dataDir, 'locks'),
    engineSocket,
    hostPaths: existingHostPaths(engineSocket),
  };
  const agent = new Agent(ctx, store, { rollbackGraceMs: options.rollbackGraceMs });
  const onSystem = options.onSystemMessage;
  const unsubscribe = onSystem ? agent.logs.subscribe((e) => e.isSystem && onSystem(e)) : undefined;
  if (store.recreated) agent.logs.system('The agent database was corrupt: started a new one (the old file is kept as agent.sqlite.corrupt-*)', true);
  agent.logs.system(`Agent starting (device ${config.uuid.slice(0, 7)}, ${target.deviceType.slug}, ${target.arch})`);
  if (widened) {
    const was = `${configFile} holds the device API key but was open to others (mode ${widened.from.toString(8).padStart(4, '0')})`;
    agent.logs.system(widened.done ? `${was}: made it 0600` : `${was} and could not be made 0600 (${widened.reason})`, true);
  }
  if (engine.unreachable) agent.logs.system(`${engine.unreachable.message}; waiting for it (nothing is changed until it answers)`, true);
  let server: http.Server;
  try {
    server = await serve({ agent, developmentMode: config.developmentMode, apiKey: config.deviceApiKey, deviceType: target.deviceType.slug, arch: target.arch, listenPort: config.listenPort }, options.listenAddress);
  } catch (err) {
    unsubscribe?.();
    store.close();
    throw new SkiffError('error', `cannot listen on ${options.listenAddress}:${config.listenPort} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { hint: 'pick another --listen-port, or stop what uses it' });
  }
  let proxy: net.Server | undefined;
  const proxySockets = new Set<net.Socket>();
  if (config.developmentMode && options.enginePort > 0 && ctx.engineSocket) {
    proxy = await engineProxy(ctx.engineSocket, options.listenAddress, options.enginePort, proxySockets).catch((err: NodeJS.ErrnoException) => {
      agent.logs.system(`Engine API not exposed on port ${options.enginePort}: ${err.code ?? err.message}`, true);
      return undefined;
    });
  }
  const advertiser = options.advertise === false ? undefined : await advertiseAgent({
    uuid: config.uuid, deviceType: target.deviceType.slug, arch: target.arch, version: AGENT_VERSION, apiPort: config.listenPort, name: ctx.deviceName,
    interfaces: ['0.0.0.0', '::'].includes(options.listenAddress) ? undefined : [options.listenAddress], // advertise where the API listens
    onWarning: (message) => agent.logs.system(message, true),
  });
  const stopEvents = watchEngine(agent, ctx);
  const timer = setInterval(() => agent.wake(false), 10_000); // catches what events missed (e.g. an engine restart)
  agent.wake();
  // Cloud mode only when config.json names a server; loaded only then, so local mode stays as lean as it was.
  const cloud = typeof config.apiEndpoint === 'string' && config.apiEndpoint.trim() !== ''
    ? (await import('./cloud/cloud-agent.js')).startCloud({ agent, store, docker: engine.docker, config: { ...config, apiEndpoint: config.apiEndpoint }, configFile, dataDir: options.dataDir, listenPort: config.listenPort, hostCommands: options.hostCommands, ...(options.hostShell !== undefined ? { hostShell: options.hostShell } : {}) })
    : undefined;
  return {
    agent,
    config,
    apiUrl: `http://${options.listenAddress === '0.0.0.0' ? '127.0.0.1' : options.listenAddress}:${config.listenPort}`,
    async stop() {
      await cloud?.stop();
      await advertiser?.stop();
      clearInterval(timer);
      stopEvents();
      agent.stop();
      // Log streams and keep-alive sockets would hold close() open forever: cut them first.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      if (proxy) {
        const proxyClosed = new Promise<void>((resolve) => proxy.close(() => resolve()));
        for (const socket of proxySockets) socket.destroy();
        await proxyClosed;
      }
      unsubscribe?.();
      store.close();
    },
  };
}

/**
 * The engine, checked; or, when it does not answer yet (a device starts its engine and the agent
 * together), a client for where it will be: the agent serves its API meanwhile and its loop
 * retries until the engine answers.
 */
async function connectEngine(flags: EngineFlags): Promise<{ docker: EngineClient; address: string; arch?: Arch; unreachable?: SkiffError }> {
  try {
    const engine = await connectLiteEngine(flags);
    return { docker: engine.docker, address: engine.address, arch: engine.arch };
  } catch (err) {
    if (!(err instanceof SkiffError) || err.code !== 'dockerUnreachable') throw err;
    const connection = connectionOptions(flags);
    return { docker: createEngineClient(connection.options), address: connection.address, unreachable: err };
  }
}

/** Containers reach the agent through the default bridge's gateway. */
async function bridgeGateway(docker: EngineContext['docker']): Promise<string> {
  try {
    const bridge = await docker.getNetwork('bridge').inspect();
    return networkGateway(bridge) ?? '172.17.0.1';
  } catch {
    return '172.17.0.1';
  }
}

/** A plain TCP proxy from address:port to the engine's unix socket (development mode only). */
function engineProxy(socket: string, address: string, port: number, open: Set<net.Socket>): Promise<net.Server> {
  const server = net.createServer((client) => {
    const upstream = net.connect(socket);
    open.add(client);
    open.add(upstream);
    client.on('close', () => open.delete(client));
    upstream.on('close', () => open.delete(upstream));
    client.pipe(upstream).pipe(client);
    const close = () => { client.destroy(); upstream.destroy(); };
    client.on('error', close);
    upstream.on('error', close);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => resolve(server));
  });
}

/** Wakes the loop when one of our containers dies or starts; reconnects when the engine restarts. */
function watchEngine(agent: Agent, ctx: EngineContext): () => void {
  let stopped = false;
  let current: NodeJS.ReadableStream & { destroy?: () => void } | undefined;
  const connect = async (): Promise<void> => {
    while (!stopped) {
      try {
        const stream = (await Promise.race([ctx.docker.getEvents({ filters: { type: ['container'], label: [`${LABEL.agent}=${ctx.uuid}`] } }),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer')), 10_000).unref())])) as NodeJS.ReadableStream & { destroy?: () => void };
        if (stopped) {
          stream.destroy?.(); // stopped while connecting: don't leave the stream holding the process
          return;
        }
        current = stream;
        agent.wake(); // connected (again): the engine may have restarted containers meanwhile
        stream.on('data', () => agent.wake(false));
        await new Promise<void>((resolve) => { stream.on('end', resolve); stream.on('error', resolve); stream.on('close', resolve); });
        if (!stopped) agent.logs.system('Lost the engine event stream; reconnecting', true);
      } catch {
        // engine down: try again shortly
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  void connect();
  return () => {
    stopped = true;
    current?.destroy?.();
  };
}
