/**
 * `skiff server`: opens the database (migrating it), makes the first admin when asked, starts the
 * registry, and serves the API on one port. Heavy modules (Fastify, the database drivers) are
 * imported on demand so a start stays well under 2 s.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../errors/errors.js';
import { ARCHES } from '../device-types/device-types.js';
import type { RunningRegistry } from './registry/contract.js';
import type { ServiceContext } from './services/context.js';

export interface ServerOptions {
  /** Where the SQLite file, the registry's storage and keys live. */
  dataDir: string;
  port: number;
  host: string;
  /** `postgres://…`; undefined: SQLite in the data dir. */
  database?: string;
  /** With `adminPasswordFile`: the first admin, made when there is no user yet. */
  adminEmail?: string;
  adminPasswordFile?: string;
  /** PEM files: with both, the server speaks HTTPS. */
  cert?: string;
  key?: string;
  /** distribution's YAML to merge into the registry's config (storage: s3, …). */
  registryConfig?: string;
  /** An external registry (several replicas share one); its token auth trusts `<dataDir>/registry`'s key. */
  registryUrl?: string;
  /** The URL devices and the CLI reach this server at; default from host, port and TLS. */
  publicUrl?: string;
  /** Requests per minute and client address on login and register. */
  rateLimits?: { login: number; register: number };
  /** Largest request body, bytes (default 1 MiB; the registry's upload routes stream). */
  bodyLimit?: number;
  /** `ARCH=URL` entries (`--builder-engine`): a Docker engine per architecture for cloud builds. */
  builderEngines?: string[];
  /** Largest build upload, bytes (default 4 GiB). */
  buildContextLimit?: number;
  /** Per device: newest lines and bytes of log messages kept (default 10,000 lines, 4 MiB). */
  logRetention?: { lines: number; bytes: number };
  /** How other replicas reach this one (`--replica-url`); default: the URL it listens on. */
  replicaUrl?: string;
  /** `--public-url-domain`: device public URLs as `<uuid>.<domain>`. */
  publicUrlDomain?: string;
  /** `--delta-cache-size`: most bytes of delta files kept in the data dir (default 10 GiB). */
  deltaCacheBytes?: number;
  log: (line: string) => void;
}

export interface RunningServer {
  /** Where it listens, e.g. `http://127.0.0.1:48080`. */
  readonly url: string;
  readonly publicUrl: string;
  /** Stops accepting requests, writes pending last-seen times, stops the registry, closes the database. */
  stop(): Promise<void>;
}

/** `--builder-engine ARCH=URL` entries as a map; a bad entry is a usage error naming it. */
export function parseBuilderEngines(entries: string[]): Partial<Record<string, string>> {
  const engines: Partial<Record<string, string>> = {};
  for (const entry of entries) {
    const match = /^([a-z0-9_]+)=((?:tcp|unix|ssh|http|https):\/\/.+)$/.exec(entry);
    if (!match) throw new SkiffError('usage', `--builder-engine '${entry}' is not ARCH=URL`, { hint: 'e.g. --builder-engine aarch64=tcp://10.0.0.5:2375' });
    const arch = match[1] as string;
    if (!(arch in ARCHES)) throw new SkiffError('usage', `--builder-engine '${entry}': unknown architecture '${arch}'`, { hint: `known architectures: ${Object.keys(ARCHES).join(', ')}` });
    engines[arch] = match[2] as string;
  }
  return engines;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function readPem(file: string, flag: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new SkiffError('usage', `cannot read ${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Starts the server. Throws SkiffError for bad options, a database that does not answer, or a port in use. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  if ((options.cert === undefined) !== (options.key === undefined)) throw new SkiffError('usage', '--cert and --key go together', { hint: 'give both PEM files, or neither for plain HTTP' });
  const https = options.cert !== undefined && options.key !== undefined ? { cert: readPem(options.cert, '--cert'), key: readPem(options.key, '--key') } : undefined;
  // Other replicas open WebSockets to it: a typo would surface as every relayed session failing.
  if (options.replicaUrl !== undefined && !/^https?:\/\/[^/?#\s]+\/?$/.test(options.replicaUrl)) {
    throw new SkiffError('usage', `--replica-url '${options.replicaUrl}' is not an http or https URL`, { hint: 'e.g. --replica-url http://10.0.0.5:48080 (how the other replicas reach this one)' });
  }
  const dataDir = path.resolve(options.dataDir);
  // Node's recursive mkdir never returns on some /proc paths (it spins, deaf to SIGTERM), and
  // neither /proc nor /sys holds a server's state: refused as the agent refuses them.
  if (/^\/(proc|sys)(\/|$)/.test(dataDir)) throw new SkiffError('usage', `cannot keep the server's state in ${dataDir}: it is a kernel file system`, { hint: 'pass --data-dir a folder on a disk' });
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new SkiffError('usage', `cannot create --data-dir ${dataDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { hint: 'pick a folder this user may write' });
  }
  const scheme = https ? 'https' : 'http';
  const shownHost = options.host === '0.0.0.0' || options.host === '::' ? '127.0.0.1' : options.host;
  const publicUrl = (options.publicUrl ?? `${scheme}://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${options.port}`).replace(/\/+$/, '');
  // Checked before anything starts: a bad --host or --public-url was "Invalid URL", exit 70.
  const parsedPublicUrl = URL.canParse(publicUrl) ? new URL(publicUrl) : undefined;
  if (!parsedPublicUrl || !/^https?:$/.test(parsedPublicUrl.protocol)) {
    throw options.publicUrl !== undefined
      ? new SkiffError('usage', `--public-url '${options.publicUrl}' is not an http or https URL`, { hint: 'e.g. --public-url https://cloud.example.com:48080' })
      : new SkiffError('usage', `--host '${options.host}' is not an IP address or host name`, { hint: 'e.g. --host 0.0.0.0 (every address) or --host 127.0.0.1' });
  }
  const registryHost = parsedPublicUrl.host;
  // Checked before anything starts, like --public-url: device URLs are built from it.
  const publicUrlDomain = options.publicUrlDomain === undefined ? undefined : (await import('./services/public-url.js')).parsePublicUrlDomain(options.publicUrlDomain);

  const [{ openDatabase }, registryModule] = await Promise.all([import('./db/database.js'), import('./registry/index.js')]);
  // The registry child comes up while the database opens and the app is built.
  const registryStarting = registryModule.startRegistry({
    dataDir: path.join(dataDir, 'registry'),
    ...(options.registryConfig ? { configFile: options.registryConfig } : {}),
    ...(options.registryUrl ? { externalUrl: options.registryUrl } : {}),
    service: registryHost,
    log: options.log,
  });
  // Awaited below; until then a failure must not count as an unhandled rejection.
  registryStarting.catch(() => undefined);
  let database: Awaited<ReturnType<typeof openDatabase>>;
  try {
    database = await openDatabase({ dataDir, url: options.database, log: options.log });
  } catch (err) {
    await registryStarting.then((r) => r.stop(), () => undefined);
    throw err;
  }
  const opened = database;
  const { LastSeenBatcher } = await import('./services/last-seen.js');
  // Last-poll batches go through the devices' write pool (no wait for the commit's fsync).
  const lastSeen = new LastSeenBatcher(opened.hot.deviceWrites, () => new Date(), options.log);
  // The registry is set once its child answers; the app is built meanwhile (CPU while it waits).
  const replicaId = randomBytes(8).toString('hex');
  // One replica on SQLite: events stay in the process. On PostgreSQL, replicas may share the
  // database, so events cross them through LISTEN/NOTIFY.
  let events: ServiceContext['events'];
  try {
    events = opened.dialect === 'postgres' && options.database !== undefined
      ? await (await import('./events/pg-bus.js')).PgEventBus.start({ url: options.database, db: opened.db, replicaId, log: options.log })
      : new (await import('./events/bus.js')).LocalEventBus();
  } catch (err) {
    await registryStarting.then((r) => r.stop(), () => undefined);
    await opened.close();
    throw new SkiffError('serverUnreachable', `cannot listen for events on the database at ${opened.where}: ${(err as Error).message}`, { cause: err });
  }
  const ctx: ServiceContext = {
    db: opened.db, hot: opened.hot, dialect: opened.dialect, clock: () => new Date(), registry: undefined, lastSeen,
    events,
    options: {
      publicUrl, registryHost, dataDir, replicaId,
      builderEngines: parseBuilderEngines(options.builderEngines ?? []),
      buildContextLimit: options.buildContextLimit ?? 4 * 1024 ** 3,
      logRetention: options.logRetention ?? { lines: 10_000, bytes: 4 * 1024 * 1024 },
      ...(publicUrlDomain !== undefined ? { publicUrlDomain } : {}),
      ...(options.deltaCacheBytes !== undefined ? { deltaCacheBytes: options.deltaCacheBytes } : {}),
    },
    log: options.log,
  };
  let registry: RunningRegistry | undefined;
  try {
    // scrypt for the first admin runs on libuv's pool while the app is built on the main thread.
    const [, app, { registryAccess, registryAuthenticate, registrySubjectExists }] = await Promise.all([
      firstAdmin(ctx, options),
      import('./http/app.js').then(({ buildApp }) => buildApp(ctx, { bodyLimit: options.bodyLimit ?? 1024 * 1024, rateLimits: options.rateLimits ?? { login: 30, register: 600 }, ...(https ? { https } : {}) })),
      import('./registry-access.js'),
    ]);
    registry = await registryStarting;
    ctx.registry = registry;
    registryModule.registerRegistryRoutes(app, registry, { authenticate: registryAuthenticate(ctx), access: registryAccess(ctx), subjectExists: registrySubjectExists(ctx), log: ctx.log });
    try {
      await app.listen({ port: options.port, host: options.host });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') throw new SkiffError('usage', `port ${options.port} on ${options.host} is in use`, { hint: 'stop what uses it or pass --port' });
      throw err;
    }
    lastSeen.start();
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : options.port;
    const url = `${scheme}://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${port}`;
    // Known once listening (an ephemeral port); only replicas on PostgreSQL use it.
    ctx.options.replicaUrl = (options.replicaUrl ?? url).replace(/\/+$/, '');
    options.log(`database: ${opened.dialect} (${opened.where})`);
    if (!https && !isLoopback(options.host)) {
      options.log(`WARNING: serving plain HTTP on ${options.host}: passwords, tokens and device keys cross the network unencrypted. Pass --cert and --key (or put a TLS proxy in front and listen on 127.0.0.1).`);
    }
    options.log(`listening on ${url} (public URL ${publicUrl})`);
    let stopping: Promise<void> | undefined;
    return {
      url,
      publicUrl,
      stop: () => (stopping ??= (async () => {
        await app.close();
        await ctx.events.close();
        await lastSeen.stop();
        await registry?.stop();
        await opened.close();
      })()),
    };
  } catch (err) {
    await (registry ?? await registryStarting.catch(() => undefined))?.stop();
    await events.close();
    await opened.close();
    throw err;
  }
}

async function firstAdmin(ctx: ServiceContext, options: ServerOptions): Promise<void> {
  const { countUsers, createUser } = await import('./services/users.js');
  if ((options.adminEmail === undefined) !== (options.adminPasswordFile === undefined)) {
    throw new SkiffError('usage', '--admin-email and --admin-password-file go together');
  }
  const users = await countUsers(ctx);
  if (users > 0) {
    if (options.adminEmail) ctx.log(`users exist: --admin-email ${options.adminEmail} is not needed and was ignored`);
    return;
  }
  if (options.adminEmail === undefined || options.adminPasswordFile === undefined) {
    ctx.log('there is no user yet. Restart with --admin-email EMAIL --admin-password-file FILE (a file holding the password, mode 600) to make the first admin; the admin then adds users with \'skiff user create EMAIL\'.');
    return;
  }
  let password: string;
  try {
    password = readFileSync(options.adminPasswordFile, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new SkiffError('usage', `cannot read --admin-password-file ${options.adminPasswordFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (password.length < 8) throw new SkiffError('usage', 'the admin password must have at least 8 characters', { where: options.adminPasswordFile });
  if (!/^[^@\s]+@[^@\s]+$/.test(options.adminEmail)) throw new SkiffError('usage', `--admin-email '${options.adminEmail}' is not an email address`);
  try {
    const user = await createUser(ctx, undefined, { email: options.adminEmail, password, isAdmin: true });
    ctx.log(`created the admin user ${user.email}`);
  } catch (err) {
    // Two replicas starting at once on one new database: the other one made it.
    if (!(err instanceof SkiffError && err.code === 'conflict')) throw err;
    ctx.log(`the admin user ${options.adminEmail} was made by another replica`);
  }
}
