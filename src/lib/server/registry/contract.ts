/**
 * What the server core and the registry part agree on: who asks for registry access, how the core
 * decides what they may do, and what the running registry offers the core. The registry part
 * (src/lib/server/registry/) runs CNCF distribution as a child process on loopback with token
 * auth, issues the tokens, and proxies `/v2/` through the server's own port; the core decides who
 * may do what (src/lib/server/permissions.ts) and records releases.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';

/** Repository actions of distribution's token protocol (`docs/spec/auth/scope.md`). */
export type RegistryAction = 'pull' | 'push';

/** Who asks: a user (by session token or API key) or a device (by its device key). */
export type RegistryPrincipal =
  | { kind: 'user'; userId: number; email: string }
  | { kind: 'device'; deviceId: number; uuid: string };

/**
 * Repositories are `<fleet uuid>/<service name>` (lower case), so the core maps a repository to a
 * fleet without a lookup table. Returns the subset of `actions` the principal may do (empty: none).
 * A user may push and pull their own fleets' repositories; a device may only pull its own fleet's.
 */
export type RegistryAccessCheck = (principal: RegistryPrincipal, repository: string, actions: RegistryAction[]) => Promise<RegistryAction[]>;

/**
 * Checks the credentials of a token request (basic auth: `d_<uuid>:<device key>` for a device; an
 * email and password, or any user name with a session token or API key as the password, for a
 * user; or `Authorization: Bearer`). Undefined when they are wrong.
 */
export type RegistryAuthenticate = (request: FastifyRequest) => Promise<RegistryPrincipal | undefined>;

export interface RegistryOptions {
  /** Folder for the registry's config, keys and (by default) its storage: `<server data dir>/registry`. */
  dataDir: string;
  /** Distribution's own YAML config to merge in (storage: s3 and the like); `--registry-config`. */
  configFile?: string;
  /**
   * The external registry URL when one is used instead of starting our own child (several replicas
   * share one registry): its token auth must trust the key in `dataDir`.
   */
  externalUrl?: string;
  /** The `service` name in tokens, and the token `issuer`. */
  service: string;
  /** One line per event, prefixed by the caller (e.g. `[registry] restarted after exit 2`). */
  log: (line: string) => void;
}

export interface RunningRegistry {
  /** The loopback URL of the distribution process, e.g. `http://127.0.0.1:39211`. */
  readonly url: string;
  /** The `service` (and issuer) its tokens name, from RegistryOptions: the token endpoint refuses a request for another. */
  readonly service: string;
  /** Signs a token for `principal` with these already-checked grants (JWT, RS256/ES256). Lifetime in seconds. */
  issueToken(principal: RegistryPrincipal, grants: Array<{ repository: string; actions: RegistryAction[] }>, lifetimeSeconds?: number): Promise<string>;
  /**
   * The manifest of `repository@digest` as the registry has it, or undefined when absent: lets the
   * core check every image of a release is really there before the release becomes visible.
   * `size` is the image's bytes (config + layers, as the manifest lists them).
   */
  manifest(repository: string, digest: string): Promise<{ digest: string; size: number; layers: string[] } | undefined>;
  /** The manifest's JSON, its hash checked against `digest` (deltas read layers and configs); undefined when absent. */
  manifestJson(repository: string, digest: string): Promise<unknown>;
  /** A blob as a stream, read with a server token (the caller checks the hash); undefined when absent. */
  blob(repository: string, digest: string, signal?: AbortSignal): Promise<ReadableStream<Uint8Array> | undefined>;
  /** Stops the child (SIGTERM, then SIGKILL after 10 s). */
  stop(): Promise<void>;
}

/** Starts (and supervises: restart with backoff, saying so in the log) the registry. */
export type StartRegistry = (options: RegistryOptions) => Promise<RunningRegistry>;

/**
 * Mounts `/v2/*` (a streaming proxy to the registry: blobs of gigabytes, never buffered) and
 * `GET /auth/v1/token` (distribution's token endpoint) on the server's app.
 */
export type RegisterRegistryRoutes = (app: FastifyInstance, registry: RunningRegistry, deps: RegistryRouteDeps) => void;

/**
 * Whether the holder a registry token names (its `sub`: `user:<id>`, `device:<uuid>`) still
 * exists. Tokens live minutes; asked on every `/v2/` request, it makes a removed device or user
 * lose registry access at once, as their keys lose API access.
 */
export type RegistrySubjectExists = (subject: string) => Promise<boolean>;

export interface RegistryRouteDeps {
  authenticate: RegistryAuthenticate;
  access: RegistryAccessCheck;
  subjectExists: RegistrySubjectExists;
  /** The server's log: each blob GET by a device's token logs `[download] device <uuid> blob <bytes sent> <path>` when it ends. */
  log?: (line: string) => void;
}
