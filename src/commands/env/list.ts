import { CloudCommand, scopeOf, variableScopeFlags } from '../../cli/cloud.js';
import type { Variable } from '../../lib/api/resources.js';

export default class EnvList extends CloudCommand<Variable[]> {
  static override summary = 'List the environment and configuration variables of a fleet or a device.';
  static override examples = ['<%= config.bin %> env list --fleet kiosks', '<%= config.bin %> env list --device 7cf02a6 --json'];
  static override flags = variableScopeFlags;

  async run(): Promise<Variable[]> {
    const { flags } = await this.parse(EnvList);
    const variables = await (await this.cloud()).variables(scopeOf(flags, ['fleet', 'device']));
    await this.table(['NAME', 'VALUE', 'SERVICE', 'KIND', 'OWNER'], variables.map((v) => [
      v.name, v.value, v.service ?? '*', v.kind, v.device ? `device ${v.device.slice(0, 7)}` : `fleet ${v.fleet ?? ''}`,
    ]));
    return variables;
  }
}
