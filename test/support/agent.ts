/** The real agent as a subprocess on 127.0.0.1, with its own data dir, ports and uuid. */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BIN } from './cli.js';
import { docker } from './engine.js';
import { scratchDir } from './tmp.js';
import { waitFor } from './wait.js';

export interface TestAgent {
  port: number;
  enginePort: number;
  dataDir: string;
  uuid: string;
  child: ChildProcess;
  output: () => string;
  url: string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface StartAgentOptions {
  dataDir?: string;
  port?: number;
  enginePort?: number;
  args?: string[];
  /** Default 127.0.0.1. */
  listenAddress?: string;
  /**
   * A command to run the agent under, e.g. ['ip', 'netns', 'exec', 'ns1']. This process may not
   * reach the agent then, so readiness is the agent saying it serves the API, not a ping.
   */
  wrap?: string[];
  /** Extra environment for the agent process (e.g. NODE_DEBUG). */
  env?: NodeJS.ProcessEnv;
}

export async function startAgent(options: StartAgentOptions = {}): Promise<TestAgent> {
  const dataDir = options.dataDir ?? scratchDir('skiff-agent-');
  const port = options.port ?? (await freePort());
  const enginePort = options.enginePort ?? (await freePort());
  const listenAddress = options.listenAddress ?? '127.0.0.1';
  const [command, ...prefix] = [...(options.wrap ?? []), process.execPath];
  const child = spawn(command!, [...prefix, BIN, 'agent', '--data-dir', dataDir, '--listen-address', listenAddress, '--listen-port', String(port), '--engine-port', String(enginePort), '--rollback-grace', '2', ...(options.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', ...options.env },
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const url = `http://${listenAddress === '0.0.0.0' ? '127.0.0.1' : listenAddress}:${port}`;
  await waitFor(async () => child.exitCode !== null || (options.wrap ? /serving the device API/.test(out) : await fetch(`${url}/ping`).then((r) => r.ok).catch(() => false)), 'the agent to answer', 15_000).catch((err: Error) => {
    throw new Error(`${err.message}; agent printed: ${out}`);
  });
  if (child.exitCode !== null) throw new Error(`agent exited: ${out}`);
  const uuid = (JSON.parse(readFileSync(path.join(dataDir, 'config.json'), 'utf8')) as { uuid: string }).uuid;
  return {
    port, enginePort, dataDir, uuid, child, url,
    output: () => out,
    async kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise((r) => child.once('close', r));
      child.kill(signal);
      // An agent that does not stop within 15 s is a failure of the test, not a hang of the suite.
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await done;
      clearTimeout(timer);
      if (signal === 'SIGTERM' && child.signalCode === 'SIGKILL') throw new Error(`agent did not stop on SIGTERM: ${out.slice(-2000)}`);
    },
  };
}

/** Stops every agent in `agents` (emptying it) and removes what each made on the engine: a suite's after hook. */
export async function stopAgents(agents: TestAgent[]): Promise<void> {
  for (const agent of agents.splice(0)) {
    await agent.kill().catch(() => {});
    await cleanupAgent(agent.uuid);
  }
}

/** Removes everything an agent made on the engine (containers, volumes, networks). */
export async function cleanupAgent(uuid: string): Promise<void> {
  const label = `io.skiff.agent=${uuid}`;
  // Until all are gone: the engine refuses to remove a network while a container it is still tearing
  // down holds an endpoint, and a leaked network takes one of the engine's ~30 address pools, so a
  // long run would end with "could not find an available, non-overlapping IPv4 address pool".
  await waitFor(async () => {
    const containers = await docker.listContainers({ all: true, filters: { label: [label] } });
    await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
    const volumes = (await docker.listVolumes({ filters: { label: [label] } })).Volumes ?? [];
    await Promise.all(volumes.map((v) => docker.getVolume(v.Name).remove().catch(() => {})));
    const networks = await docker.listNetworks({ filters: { label: [label] } });
    await Promise.all(networks.map((n) => docker.getNetwork(n.Id).remove().catch(() => {})));
    const left = (await docker.listContainers({ all: true, filters: { label: [label] } })).length
      + ((await docker.listVolumes({ filters: { label: [label] } })).Volumes ?? []).length
      + (await docker.listNetworks({ filters: { label: [label] } })).length;
    return left === 0;
  }, `agent ${uuid}'s containers, volumes and networks to be removed`, 30_000, 250);
}

export async function status(url: string): Promise<{ appState: string; release: string | null; failedRelease?: { commit: string; reason: string }; containers: Array<{ serviceName: string; status: string; containerId: string }> }> {
  return (await (await fetch(`${url}/v2/state/status`)).json()) as never;
}

/** waitFor with the arguments in the order the device tests use. */
export function eventually<T>(check: () => Promise<T | undefined | false>, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  return waitFor(check, what, timeoutMs, 200);
}
