import { Args } from '@oclif/core';
import { CloudCommand, scopeOf, variableScopeFlags } from '../../cli/cloud.js';
import type { Variable } from '../../lib/api/resources.js';

export default class EnvSet extends CloudCommand<Variable> {
  static override summary = 'Set an environment variable of a fleet or a device (optionally for one service).';
  static override description = "Devices get it with their next poll; the services it applies to restart. Precedence, lowest first: fleet, fleet + service, device, device + service. Names starting BALENA_ or SKIFF_ are configuration variables for the agent (e.g. BALENA_SUPERVISOR_POLL_INTERVAL in milliseconds).";
  static override examples = [
    '<%= config.bin %> env set GREETING hello --fleet kiosks',
    '<%= config.bin %> env set PORT 8080 --fleet kiosks --service web',
    '<%= config.bin %> env set DEBUG 1 --device 7cf02a6',
  ];
  static override args = {
    name: Args.string({ description: 'Variable name (letters, digits, _; not starting with a digit).', required: true }),
    value: Args.string({ description: 'Value.', required: true }),
  };
  static override flags = variableScopeFlags;

  async run(): Promise<Variable> {
    const { args, flags } = await this.parse(EnvSet);
    const scope = scopeOf(flags, ['fleet', 'device']);
    const variable = await (await this.cloud()).setVariable({ ...scope, name: args.name, value: args.value });
    (await this.output()).info(`${variable.name} set on ${variable.device ? `device ${variable.device.slice(0, 7)}` : `fleet ${variable.fleet ?? ''}`}${variable.service ? `, service ${variable.service}` : ''}.`);
    return variable;
  }
}
