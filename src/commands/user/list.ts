import { CloudCommand, when } from '../../cli/cloud.js';
import type { User } from '../../lib/api/resources.js';

export default class UserList extends CloudCommand<User[]> {
  static override summary = "List the server's users (administrators only).";
  static override examples = ['<%= config.bin %> user list', '<%= config.bin %> user list --json'];

  async run(): Promise<User[]> {
    await this.parse(UserList);
    const users = await (await this.cloud()).users();
    await this.table(['ID', 'EMAIL', 'ADMIN', 'CREATED'], users.map((u) => [String(u.id), u.email, u.isAdmin ? 'yes' : 'no', when(u.createdAt)]));
    return users;
  }
}
