import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../cli/cloud.js';
import { SkiffError } from '../lib/errors/errors.js';
import type { User } from '../lib/api/resources.js';

export interface LoginResult {
  url: string;
  user: User;
  auth: 'session' | 'api-key';
  /** Where the token was saved. */
  credentialsFile: string;
}

export default class Login extends CloudCommand<LoginResult> {
  static override summary = 'Log in to a skiff server (an email and password, or an API key).';
  static override description = `Saves the server's URL and a token in ~/.skiff/credentials.json (mode 600); every cloud command uses them. With --token the API key itself is saved; with an email and password the server makes a session token. On a terminal, what is missing is asked for; without one, pass the flags.

In CI, skip login: set SKIFF_API_URL and SKIFF_API_TOKEN (an API key from 'skiff api-key generate').`;
  static override examples = [
    '<%= config.bin %> login https://skiff.example.com',
    '<%= config.bin %> login 127.0.0.1:48080 --email me@example.com --password-file ~/.skiff-password',
    '<%= config.bin %> login https://skiff.example.com --token $KEY',
  ];
  static override args = { url: Args.string({ description: 'Server URL (default: SKIFF_API_URL, else the one logged in to last, else http://127.0.0.1:48080).' }) };
  static override flags = {
    token: Flags.string({ char: 't', description: 'API key (or session token) to log in with.', exclusive: ['email', 'password', 'password-file'] }),
    email: Flags.string({ char: 'e', description: 'Email of the account.' }),
    password: Flags.string({ char: 'p', description: 'Password (visible in the process list: prefer --password-file or the prompt).', exclusive: ['password-file'] }),
    'password-file': Flags.string({ description: 'File whose first line is the password.' }),
  };

  async run(): Promise<LoginResult> {
    const { args, flags } = await this.parse(Login);
    const [{ normaliseServerUrl, readPasswordFile, resolveCredentials, saveCredentials }, { isInteractive }] = await Promise.all([import('../lib/cloud/credentials.js'), import('../ui/terminal.js')]);
    const url = args.url ? normaliseServerUrl(args.url) : resolveCredentials().url;
    let token = flags.token;
    let user: User;
    let auth: 'session' | 'api-key';
    if (token === undefined) {
      const interactive = isInteractive();
      const email = flags.email ?? (interactive ? await (await import('../ui/prompt.js')).input('Email:', { validate: (v) => v.includes('@') || 'an email address' }) : undefined);
      if (!email) throw new SkiffError('notInteractive', 'login needs an email and a password, or an API key', { hint: 'pass --email and --password-file (or --token)' });
      const password = flags.password ?? (flags['password-file'] !== undefined ? readPasswordFile(flags['password-file']) : interactive ? await (await import('../ui/prompt.js')).password('Password:') : undefined);
      if (password === undefined) throw new SkiffError('notInteractive', 'login needs a password', { hint: 'pass --password-file FILE (or --password)' });
      const answer = await (await this.cloud({ url, login: false })).login({ email, password });
      token = answer.token;
      user = answer.user;
      auth = 'session';
    } else {
      const who = await (await this.cloud({ url, token })).whoami();
      user = who.user;
      auth = who.auth;
    }
    const credentialsFile = saveCredentials({ url, token, email: user.email });
    const out = await this.output();
    out.info(`Logged in to ${url} as ${out.chalk.bold(user.email)}${user.isAdmin ? ' (admin)' : ''}${auth === 'api-key' ? ' with an API key' : ''}.`);
    return { url, user, auth, credentialsFile };
  }
}

