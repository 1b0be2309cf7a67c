import process from 'node:process';
import { Flags } from '@oclif/core';
import { SkiffCommand } from '../cli/base-command.js';

export interface ServerStarted {
  url: string;
  publicUrl: string;
}

export default class ServerCommand extends SkiffCommand<ServerStarted | undefined> {
  static override summary = 'Run the Skiff cloud: users, fleets, devices, releases and a registry on one port.';
  static override description = `Serves the cloud API that 'skiff login', 'skiff deploy' and agents in cloud mode talk to, with a CNCF distribution registry (Debian's docker-registry) it starts and supervises on loopback, reached through the same port at /v2/.

State lives in --data-dir: an SQLite database and the registry's storage. --database postgres://… keeps the state in PostgreSQL instead (several replicas can share it). Migrations run at every start.

Without a user, start once with --admin-email and --admin-password-file to make the first admin. Plain HTTP on an address other than loopback is logged as a warning: pass --cert and --key.

SIGTERM or Ctrl-C stops it cleanly.`;
  static override examples = [
    '<%= config.bin %> server --data-dir ./cloud --admin-email me@example.com --admin-password-file ./admin-password',
    '<%= config.bin %> server --database postgres://skiff:secret@127.0.0.1/skiff --cert cert.pem --key key.pem --public-url https://cloud.example.com:48080',
  ];
  static override flags = {
    'data-dir': Flags.string({ description: 'Folder for the database file and the registry\'s storage.', default: '/var/lib/skiff-server' }),
    port: Flags.integer({ description: 'TCP port of the API (and the registry at /v2/).', default: 48080, min: 0, max: 65535 }),
    host: Flags.string({ description: 'Address to listen on.', default: '0.0.0.0' }),
    database: Flags.string({ description: 'A postgres:// URL; without it, SQLite in the data dir.', env: 'SKIFF_SERVER_DATABASE' }),
    'admin-email': Flags.string({ description: 'Email of the first admin, made when there is no user yet.' }),
    'admin-password-file': Flags.string({ description: 'File holding the first admin\'s password.' }),
    cert: Flags.string({ description: 'TLS certificate (PEM); with --key the server speaks HTTPS.' }),
    key: Flags.string({ description: 'TLS private key (PEM).' }),
    'registry-config': Flags.string({ description: 'distribution YAML merged into the registry\'s config (e.g. storage: s3).' }),
    'registry-url': Flags.string({ description: 'Use this registry instead of starting one (replicas share one); it must trust <data-dir>/registry\'s token key.' }),
    'public-url': Flags.string({ description: 'The URL devices and the CLI reach this server at (default from --host and --port).' }),
    'register-rate-limit': Flags.integer({ description: 'Device registrations per minute and client address.', default: 600, min: 1 }),
    'builder-engine': Flags.string({ description: 'ARCH=URL: build this architecture on that Docker engine (e.g. aarch64=tcp://10.0.0.5:2375); other architectures build on the local engine, emulated with qemu where they differ (repeatable).', multiple: true }),
    'build-context-limit': Flags.integer({ description: 'Largest project upload of skiff push / git push, in MiB.', default: 4096, min: 1 }),
    'log-lines': Flags.integer({ description: 'Log lines kept per device (the newest).', default: 10_000, min: 100 }),
    'log-bytes': Flags.integer({ description: 'Bytes of log messages kept per device, in KiB (the newest).', default: 4096, min: 16 }),
    'replica-url': Flags.string({ description: 'How the other replicas reach this one, for tunnel sessions to devices connected here (default: the address it listens on).' }),
    'delta-cache-size': Flags.string({ description: 'Most disk the delta files take in the data dir (K, M, G, T: powers of 1024); the least recently used go first.', default: '10G' }),
    'public-url-domain': Flags.string({ description: 'Serve device public URLs as https://<uuid>.<this domain>/ (a wildcard DNS name and certificate) instead of <public URL>/d/<uuid>/.' }),
  };

  async run(): Promise<ServerStarted | undefined> {
    const { flags } = await this.parse(ServerCommand);
    const [{ startServer }, { parseByteSize }] = await Promise.all([import('../lib/server/server.js'), import('../lib/server/deltas/cache.js')]);
    const deltaCacheBytes = parseByteSize(flags['delta-cache-size']);
    const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
    return this.cancellable(async (signal) => {
      const server = await startServer({
        dataDir: flags['data-dir'], port: flags.port, host: flags.host, database: flags.database,
        adminEmail: flags['admin-email'], adminPasswordFile: flags['admin-password-file'], cert: flags.cert, key: flags.key,
        registryConfig: flags['registry-config'], registryUrl: flags['registry-url'], publicUrl: flags['public-url'],
        rateLimits: { login: 30, register: flags['register-rate-limit'] },
        builderEngines: flags['builder-engine'], buildContextLimit: flags['build-context-limit'] * 1024 * 1024,
        logRetention: { lines: flags['log-lines'], bytes: flags['log-bytes'] * 1024 },
        replicaUrl: flags['replica-url'], publicUrlDomain: flags['public-url-domain'], deltaCacheBytes, log,
      });
      const started = { url: server.url, publicUrl: server.publicUrl };
      // Under --json the one document is printed once ready; the server then runs until stopped.
      if (this.jsonEnabled()) process.stdout.write(`${JSON.stringify({ status: 'ok', result: started, warnings: [] })}\n`);
      await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
      log('stopping');
      await server.stop();
      log('stopped');
      return this.jsonEnabled() ? undefined : started;
    }, () => undefined);
  }
}
