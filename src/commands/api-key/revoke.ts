import { Args } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import { SkiffError } from '../../lib/errors/errors.js';

export default class ApiKeyRevoke extends CloudCommand<{ revoked: number[] }> {
  static override summary = 'Revoke API keys: they stop working at once.';
  static override examples = ['<%= config.bin %> api-key revoke 3', '<%= config.bin %> api-key revoke 3,4,7'];
  static override args = { ids: Args.string({ description: "Key ids ('skiff api-key list'), comma-separated.", required: true }) };

  async run(): Promise<{ revoked: number[] }> {
    const { args } = await this.parse(ApiKeyRevoke);
    const ids = args.ids.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = ids.find((s) => !/^\d+$/.test(s));
    if (bad !== undefined || ids.length === 0) throw new SkiffError('usage', `'${bad ?? args.ids}' is not an API key id`, { hint: "ids are numbers: 'skiff api-key list' shows them" });
    const client = await this.cloud();
    const revoked: number[] = [];
    for (const id of ids.map(Number)) {
      await client.revokeApiKey(id);
      revoked.push(id);
    }
    (await this.output()).info(`Revoked API key${revoked.length === 1 ? '' : 's'} ${revoked.join(', ')}.`);
    return { revoked };
  }
}
