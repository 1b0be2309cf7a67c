import { CloudCommand } from '../cli/cloud.js';
import type { WhoAmI } from '../lib/api/resources.js';

export default class Whoami extends CloudCommand<WhoAmI & { url: string }> {
  static override summary = 'Show who you are logged in as, and on which server.';
  static override examples = ['<%= config.bin %> whoami', '<%= config.bin %> whoami --json'];

  async run(): Promise<WhoAmI & { url: string }> {
    await this.parse(Whoami);
    const client = await this.cloud();
    const who = await client.whoami();
    await this.fields([['EMAIL', who.user.email], ['SERVER', client.url], ['ADMIN', who.user.isAdmin ? 'yes' : 'no'], ['AUTH', who.auth === 'api-key' ? 'API key' : 'session']]);
    return { ...who, url: client.url };
  }
}
