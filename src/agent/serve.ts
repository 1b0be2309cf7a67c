/**
 * `skiff agent` after its flags are parsed: start the agent, print what it serves and its system
 * messages, run until SIGINT/SIGTERM, stop cleanly. Shared by the oclif command and the direct start.
 */
import { setFlagsFromString } from 'node:v8';
import type { EngineFlags } from '../lib/docker/engine.js';
import type { Output } from '../ui/output.js';
import type { AgentFlagValues } from '../lib/agent/options.js';

export interface AgentStarted {
  uuid: string;
  deviceType: string;
  api: string;
  developmentMode: boolean;
}

/**
 * V8 flags for the agent, set at run time with `v8.setFlagsFromString` (V8 reads these each time it
 * acts on them: measured to take effect), so there is no NODE_OPTIONS for users to remember and no second process:
 *
 * - `--semi-space-growth-factor=1` keeps the young generation at its first size (1 MB
 *   semi-spaces). V8 doubles it, up to 16 MB a semi-space, whenever many young objects survive a
 *   scavenge; a service writing its log fast keeps each line alive for a while (the local log
 *   buffer, the shipper's queues), so the RSS rose by some 15 MB under a flood and stayed there.
 * - `--no-opt`: no TurboFan. The agent's JavaScript is glue around the engine, sqlite and the
 *   network (about 2% of a core under a 1,000 lines/s flood); the optimizing compiler's own
 *   machine code, paged in from node's binary once a function is hot, was 4 MB of its RSS.
 *   Ignition and Sparkplug still run everything.
 * - `--optimize-for-size`: the old generation collected at a lower mark. Each line kept in the local
 *   log buffer lives long enough to be promoted, so a flood fills the old generation with dead lines
 *   until a full collection; the peak of that saw-tooth dropped by some 3 MB (65 -> 62 MB over 90 s).
 *
 * Measured with bench/cloud-logs.mjs (figures in the README's agent section).
 */
export const AGENT_V8_FLAGS = '--semi-space-growth-factor=1 --no-opt --optimize-for-size';

export async function serveAgent(flags: AgentFlagValues, engine: EngineFlags, out: Output, onStarted?: (started: AgentStarted) => void): Promise<AgentStarted> {
  // Before the agent's modules load: their start-up would grow the young generation already.
  setFlagsFromString(AGENT_V8_FLAGS);
  const { runAgent } = await import('../lib/agent/run-agent.js');
  const running = await runAgent({
    dataDir: flags['data-dir'],
    configFile: flags.config,
    listenAddress: flags['listen-address'],
    listenPort: flags['listen-port'],
    enginePort: flags['engine-port'],
    deviceType: flags['device-type'],
    developmentMode: flags['development-mode'],
    rollbackGraceMs: flags['rollback-grace'] * 1000,
    advertise: flags.advertise,
    hostCommands: { reboot: flags['reboot-command'], shutdown: flags['shutdown-command'] },
    hostShell: flags['host-shell'],
    engine,
    // From the first message on: start-up problems (a corrupt database, a port in use) show too.
    onSystemMessage: (e) => out.info(`${new Date(e.timestamp).toISOString()} ${e.message}`),
  });
  const { config } = running;
  const started: AgentStarted = { uuid: config.uuid, deviceType: config.deviceType, api: running.apiUrl, developmentMode: config.developmentMode };
  onStarted?.(started);
  out.info(`Agent ${config.uuid.slice(0, 7)} (${config.deviceType}) serving the device API on ${flags['listen-address']}:${config.listenPort}${config.developmentMode ? ` and the engine API on port ${flags['engine-port']} (development mode)` : ''}`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  out.info('Agent stopping (containers keep running)');
  await running.stop();
  // Everything is closed; if a stray engine connection still holds the event loop, don't hang a
  // service manager's stop: leave after a moment (the timer itself never keeps the process up).
  setTimeout(() => process.exit(0), 2000).unref();
  return started;
}
