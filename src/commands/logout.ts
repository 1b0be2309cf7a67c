import { CloudCommand } from '../cli/cloud.js';

export interface LogoutResult {
  url?: string;
  /** False when there was nothing to log out of. */
  loggedOut: boolean;
}

export default class Logout extends CloudCommand<LogoutResult> {
  static override summary = 'Log out: end the session on the server and forget the token.';
  static override description = 'Removes ~/.skiff/credentials.json. A session token is also ended on the server (when it answers); an API key stays valid until it is revoked (skiff api-key revoke).';
  static override examples = ['<%= config.bin %> logout'];

  async run(): Promise<LogoutResult> {
    await this.parse(Logout);
    const { readStoredCredentials, removeCredentials } = await import('../lib/cloud/credentials.js');
    const stored = readStoredCredentials();
    const out = await this.output();
    if (!stored) {
      out.info('Not logged in.');
      return { loggedOut: false };
    }
    // Best effort: a server that is down must not keep the token on this machine.
    await (await this.cloud({ url: stored.url, token: stored.token })).logout().catch(() => {});
    removeCredentials();
    out.info(`Logged out of ${stored.url}.`);
    return { url: stored.url, loggedOut: true };
  }
}
