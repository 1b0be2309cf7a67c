/**
 * The registry behind `skiff server`: CNCF distribution as a supervised child on loopback with
 * token auth whose tokens this server signs, reached through the server's own port. See
 * contract.ts for what the core gives and gets.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../../errors/errors.js';
import { RegistrySupervisor } from './child.js';
import { readUserConfig, registryConfig, writeRegistryConfig } from './config.js';
import type { RegisterRegistryRoutes, RegistryAction, RegistryOptions, RegistryPrincipal, RunningRegistry, StartRegistry } from './contract.js';
import { fetchBlob, fetchManifest, fetchManifestJson, type ManifestSummary } from './manifest.js';
import { registerRoutes } from './routes.js';
import { loadOrCreateSigningKey, type SigningKey } from './signing-key.js';
import { DEFAULT_TOKEN_LIFETIME, newTokenId, signToken, subjectOf, tokenClaims } from './token.js';

/** The contract's types, so the core can import everything registry from here. */
export type { RegistryAccessCheck, RegistryAction, RegistryAuthenticate, RegistryOptions, RegistryPrincipal, RunningRegistry } from './contract.js';

/** What startRegistry returns: the contract's RunningRegistry, plus the child's pid for tests and diagnostics. */
export interface SupervisedRegistry extends RunningRegistry {
  /** Process id of the distribution child now, undefined with an external registry or between restarts. */
  readonly pid: number | undefined;
}

class Registry implements SupervisedRegistry {
  constructor(
    readonly service: string,
    private readonly key: SigningKey,
    private readonly supervisor: RegistrySupervisor | undefined,
    private readonly externalUrl: string | undefined,
  ) {}

  get url(): string {
    return this.externalUrl ?? this.supervisor?.url ?? '';
  }

  get pid(): number | undefined {
    return this.supervisor?.pid;
  }

  private sign(subject: string, grants: ReadonlyArray<{ repository: string; actions: readonly RegistryAction[] }>, lifetimeSeconds: number): Promise<string> {
    return signToken(this.key, tokenClaims({ service: this.service, subject, grants, lifetimeSeconds, nowMs: Date.now(), jti: newTokenId() }));
  }

  issueToken(principal: RegistryPrincipal, grants: Array<{ repository: string; actions: RegistryAction[] }>, lifetimeSeconds = DEFAULT_TOKEN_LIFETIME): Promise<string> {
    return this.sign(subjectOf(principal), grants, lifetimeSeconds);
  }

  async manifest(repository: string, digest: string): Promise<ManifestSummary | undefined> {
    // The server reads with a short pull token of its own: no user or device is behind this check.
    const token = await this.sign(subjectOf('server'), [{ repository, actions: ['pull'] }], 60);
    return fetchManifest(this.url, token, repository, digest);
  }

  async manifestJson(repository: string, digest: string): Promise<unknown> {
    const token = await this.sign(subjectOf('server'), [{ repository, actions: ['pull'] }], 60);
    return fetchManifestJson(this.url, token, repository, digest);
  }

  async blob(repository: string, digest: string, signal?: AbortSignal): Promise<ReadableStream<Uint8Array> | undefined> {
    // The token is checked when the request starts: a long download outlives it safely.
    const token = await this.sign(subjectOf('server'), [{ repository, actions: ['pull'] }], 300);
    return fetchBlob(this.url, token, repository, digest, signal);
  }

  async stop(): Promise<void> {
    await this.supervisor?.stop();
  }
}

/**
 * Starts the registry (see contract.ts StartRegistry): makes or loads the token key in
 * `dataDir`, writes `<dataDir>/config.yml` (with `--registry-config` merged in), starts
 * `docker-registry serve` on a free loopback port and resolves once it answers `/v2/`. With
 * `externalUrl` nothing is started: that registry must trust `<dataDir>/token-signing.crt`.
 * Throws SkiffError when the config is refused, docker-registry is not installed, or the child
 * does not come up.
 */
export const startRegistry = async (options: RegistryOptions): Promise<SupervisedRegistry> => {
  if (options.service.trim() === '') throw new SkiffError('usage', 'the registry service name is empty');
  const dataDir = path.resolve(options.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const key = await loadOrCreateSigningKey(dataDir);
  const user = options.configFile ? await readUserConfig(options.configFile) : {};
  if (options.externalUrl) {
    const url = options.externalUrl.replace(/\/+$/, '');
    options.log(`[registry] using ${url}; its auth.token must name service and issuer '${options.service}' and trust ${key.certFile}`);
    return new Registry(options.service, key, undefined, url);
  }
  const supervisor = new RegistrySupervisor({
    runDir: path.join(dataDir, 'run'),
    log: options.log,
    writeConfig: async (port, file) => {
      await writeRegistryConfig(file, registryConfig({ dataDir, port, service: options.service, certFile: key.certFile, user }));
    },
  });
  await supervisor.start();
  options.log(`[registry] running on ${supervisor.url}`);
  return new Registry(options.service, key, supervisor, undefined);
};

startRegistry satisfies StartRegistry;

/** Mounts `/v2/*` and `GET /auth/v1/token` on the server's app (see contract.ts RegisterRegistryRoutes). */
export const registerRegistryRoutes: RegisterRegistryRoutes = (app, registry, deps) => registerRoutes(app, registry, deps);
