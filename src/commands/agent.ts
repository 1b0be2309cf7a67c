import process from 'node:process';
import { Flags } from '@oclif/core';
import { SkiffCommand } from '../lib/cli/base-command.js';
import { engineFlags } from '../lib/cli/flags.js';

export interface AgentStarted {
  uuid: string;
  deviceType: string;
  api: string;
  developmentMode: boolean;
}

export default class AgentCommand extends SkiffCommand<AgentStarted | undefined> {
  static override summary = 'Run the device agent: apply releases on this machine\'s Docker engine and serve the device API.';
  static override description = `Turns any Linux machine with a Docker engine into a device. The agent keeps the containers, volumes and networks of the target release running, and serves the device API (port 48484) that 'skiff push', 'skiff logs' and balena-cli's local mode ('balena push <ip>') talk to.

In development mode (the default for a new device) the API is open and the engine's API is also served on port 2375, like a balenaOS development image. Otherwise every call but /ping needs the device API key from config.json (Authorization: Bearer <key>, or ?apikey=).

The agent advertises itself over mDNS (service _skiff._tcp, on the interfaces the device API listens on) so 'skiff scan' finds it; --no-advertise turns that off.

State lives in --data-dir (config.json in balenaOS's format, and an SQLite database). The agent can be killed at any moment: started again, it carries on from what the engine runs.`;
  static override examples = [
    '<%= config.bin %> agent',
    '<%= config.bin %> agent --listen-address 127.0.0.1 --listen-port 48484 --data-dir ./device-a',
    'DOCKER_HOST=unix:///var/run/balena-engine.sock <%= config.bin %> agent --no-development-mode',
  ];
  static override flags = {
    'data-dir': Flags.string({ description: 'Folder for config.json and the agent database.', env: 'SKIFF_AGENT_DATA', default: '/var/lib/skiff-agent' }),
    config: Flags.string({ description: 'config.json to use (default: <data-dir>/config.json).' }),
    'listen-address': Flags.string({ description: 'Address for the device API (and the engine API in development mode).', default: '0.0.0.0' }),
    'listen-port': Flags.integer({ description: 'Port for the device API (default: config.json listenPort, else 48484).', min: 1, max: 65535 }),
    'engine-port': Flags.integer({ description: 'Port for the engine API in development mode; 0 to not serve it.', default: 2375, min: 0, max: 65535 }),
    'device-type': Flags.string({ description: 'Device type to report (default: config.json deviceType, else from the engine\'s architecture).' }),
    'development-mode': Flags.boolean({ description: 'Open local-mode API and engine API (default for a new device).', allowNo: true }),
    'rollback-grace': Flags.integer({ description: 'Seconds a new release must stay up before it counts as applied.', default: 10, min: 0 }),
    advertise: Flags.boolean({ description: "Answer mDNS queries so 'skiff scan' finds this device on the LAN.", allowNo: true, default: true }),
    ...engineFlags,
  };

  async run(): Promise<AgentStarted | undefined> {
    const { flags } = await this.parse(AgentCommand);
    const out = await this.output();
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
      engine: { docker: flags.docker, dockerHost: flags.dockerHost, dockerPort: flags.dockerPort, ca: flags.ca, cert: flags.cert, key: flags.key },
    });
    const { config } = running;
    const started: AgentStarted = { uuid: config.uuid, deviceType: config.deviceType, api: running.apiUrl, developmentMode: config.developmentMode };
    if (this.jsonEnabled()) process.stdout.write(`${JSON.stringify({ status: 'ok', result: started, warnings: [] })}\n`);
    out.info(`Agent ${config.uuid.slice(0, 7)} (${config.deviceType}) serving the device API on ${flags['listen-address']}:${config.listenPort}${config.developmentMode ? ` and the engine API on port ${flags['engine-port']} (development mode)` : ''}`);
    const unsubscribe = running.agent.logs.subscribe((e) => {
      if (e.isSystem) out.info(`${new Date(e.timestamp).toISOString()} ${e.message}`);
    });
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    unsubscribe();
    out.info('Agent stopping (containers keep running)');
    await running.stop();
    // Everything is closed; if a stray engine connection still holds the event loop, don't hang a
    // service manager's stop: leave after a moment (the timer itself never keeps the process up).
    setTimeout(() => process.exit(0), 2000).unref();
    // Under --json the one JSON document was printed at start; the agent runs until stopped.
    return this.jsonEnabled() ? undefined : started;
  }
}
