import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../../cli/cloud.js';
import type { CreatedApiKey } from '../../lib/api/resources.js';

export default class ApiKeyGenerate extends CloudCommand<CreatedApiKey> {
  static override summary = 'Generate an API key (for CI: SKIFF_API_TOKEN). It is shown once.';
  static override description = 'The key alone goes to stdout (KEY=$(skiff api-key generate ci)), the rest to stderr. The server keeps only its hash: keep the key somewhere safe; lost, it cannot be shown again (revoke it and generate another).';
  static override examples = ['<%= config.bin %> api-key generate ci', '<%= config.bin %> api-key generate ci --expiry-date 2027-01-31', '<%= config.bin %> api-key generate ci --json'];
  static override args = { name: Args.string({ description: 'A name for the key.', required: true }) };
  static override flags = {
    'expiry-date': Flags.string({ description: "When the key stops working: a date (2027-01-31, end of that day UTC) or an ISO time; 'never' (the default) for no expiry." }),
    description: Flags.string({ description: 'What the key is for.' }),
  };

  async run(): Promise<CreatedApiKey> {
    const { args, flags } = await this.parse(ApiKeyGenerate);
    const { parseExpiryDate } = await import('../../lib/cloud/client.js');
    const expiresAt = parseExpiryDate(flags['expiry-date']);
    const key = await (await this.cloud()).createApiKey({ name: args.name, ...(flags.description ? { description: flags.description } : {}), ...(expiresAt ? { expiresAt } : {}) });
    const out = await this.output();
    out.result(key.key);
    out.info(out.chalk.dim(`API key ${key.id} '${key.name}'${key.expiresAt ? `, expires ${key.expiresAt}` : ''}. This is the only time it is shown.`));
    return key;
  }
}
