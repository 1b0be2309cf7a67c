import process from 'node:process';
import { Flags, type Interfaces } from '@oclif/core';
import { SkiffCommand } from '../cli/base-command.js';
import { engineFlags } from '../cli/flags.js';
import { AGENT_OPTIONS, type AgentFlagValues, type AgentOptionSpec } from '../lib/agent/options.js';
import type { AgentStarted } from '../agent/serve.js';

export type { AgentStarted };

export default class AgentCommand extends SkiffCommand<AgentStarted | undefined> {
  static override summary = 'Run the device agent: apply releases on this machine\'s Docker engine and serve the device API.';
  static override description = `Turns any Linux machine with a Docker engine into a device. The agent keeps the containers, volumes and networks of the target release running, and serves the device API (port 48484) that 'skiff push', 'skiff logs' and balena-cli's local mode ('balena push <ip>') talk to.

In development mode (the default for a new device) the API is open and the engine's API is also served on port 2375, like a balenaOS development image. Otherwise every call but /ping needs the device API key from config.json (Authorization: Bearer <key>, or ?apikey=).

The agent advertises itself over mDNS (service _skiff._tcp, on the interfaces the device API listens on) so 'skiff scan' finds it; --no-advertise turns that off.

State lives in --data-dir (config.json in balenaOS's format, an SQLite database, and a copy of the target in target.json). The agent can be killed at any moment: started again, it carries on from what the engine runs.`;
  static override examples = [
    '<%= config.bin %> agent',
    '<%= config.bin %> agent --listen-address 127.0.0.1 --listen-port 48484 --data-dir ./device-a',
    'DOCKER_HOST=unix:///var/run/balena-engine.sock <%= config.bin %> agent --no-development-mode',
  ];
  static override flags = {
    ...agentFlags(),
    ...engineFlags,
  };

  async run(): Promise<AgentStarted | undefined> {
    const { flags } = await this.parse(AgentCommand);
    const out = await this.output();
    const { serveAgent } = await import('../agent/serve.js');
    const engine = { docker: flags.docker, dockerHost: flags.dockerHost, dockerPort: flags.dockerPort, ca: flags.ca, cert: flags.cert, key: flags.key };
    const started = await serveAgent(flags as unknown as AgentFlagValues, engine, out, (s) => {
      if (this.jsonEnabled()) process.stdout.write(`${JSON.stringify({ status: 'ok', result: s, warnings: [] })}\n`);
    });
    // Under --json the one JSON document was printed at start; the agent runs until stopped.
    return this.jsonEnabled() ? undefined : started;
  }
}

/** oclif flags from the agent's option table (the direct start parses the same table). */
function agentFlags(): Interfaces.FlagInput {
  const flags: Interfaces.FlagInput = {};
  for (const [name, spec] of Object.entries(AGENT_OPTIONS) as Array<[string, AgentOptionSpec]>) {
    const common = { description: spec.description, ...(spec.env ? { env: spec.env } : {}) };
    if (spec.kind === 'string') flags[name] = Flags.string({ ...common, ...(spec.default !== undefined ? { default: spec.default } : {}) });
    else if (spec.kind === 'integer') flags[name] = Flags.integer({ ...common, min: spec.min, ...(spec.max !== undefined ? { max: spec.max } : {}), ...(spec.default !== undefined ? { default: spec.default } : {}) });
    else flags[name] = Flags.boolean({ ...common, allowNo: true, ...(spec.default !== undefined ? { default: spec.default } : {}) });
  }
  return flags;
}
