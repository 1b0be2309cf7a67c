import { CloudCommand, when } from '../../cli/cloud.js';
import type { ApiKey } from '../../lib/api/resources.js';

export default class ApiKeyList extends CloudCommand<ApiKey[]> {
  static override summary = 'List your API keys (never the keys themselves).';
  static override examples = ['<%= config.bin %> api-key list', '<%= config.bin %> api-key list --json'];

  async run(): Promise<ApiKey[]> {
    await this.parse(ApiKeyList);
    const keys = await (await this.cloud()).apiKeys();
    await this.table(['ID', 'NAME', 'CREATED', 'EXPIRES', 'LAST USED', 'DESCRIPTION'], keys.map((k) => [
      String(k.id), k.name, when(k.createdAt), k.expiresAt ? when(k.expiresAt) : 'never', when(k.lastUsedAt), k.description ?? '',
    ]));
    return keys;
  }
}
