/**
 * What every service takes: the database, the clock, the registry and the options, passed in (no
 * import-time singletons), plus the small helpers the services share to say "no" the same way.
 */
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import type { Dialect, HotQueries } from '../db/database.js';
import type { RunningRegistry } from '../registry/contract.js';
import { SkiffError } from '../../errors/errors.js';
import { decide, type Action, type Principal, type Resource } from '../permissions.js';
import type { LastSeenBatcher } from './last-seen.js';
import type { EventBus } from '../events/bus.js';

export interface ServiceContext {
  db: Kysely<Database>;
  dialect: Dialect;
  /** The poll path's prepared query (see db/database.ts). */
  hot: HotQueries;
  /** Now; tests and the services never read the system clock directly. */
  clock: () => Date;
  /** Undefined when the server runs without a registry (releases then cannot be completed). */
  registry: RunningRegistry | undefined;
  /** Devices' last polls, written in batches (see last-seen.ts). */
  lastSeen: LastSeenBatcher;
  /** Change notices for sockets, followers and build watchers, across replicas (events/bus.ts). */
  events: EventBus;
  /** This replica's delta worker (services/deltas.ts); undefined until it starts (jobs then wait in the table). */
  deltas?: DeltaRuntime;
  options: {
    /** Where this replica keeps its files (build contexts, git repositories). */
    dataDir: string;
    /** This process's id among replicas (random per start; builds record which replica holds their upload). */
    replicaId: string;
    /** The URL devices and the CLI reach the server at, e.g. `https://cloud.example.com:48080`. */
    publicUrl: string;
    /** `host:port` of the registry as devices and the CLI reach it (the server's own address). */
    registryHost: string;
    /** Build engines by architecture (`--builder-engine ARCH=URL`); an architecture not named builds on the local engine (emulated when it differs). */
    builderEngines: Partial<Record<string, string>>;
    /** Largest build context upload, bytes. */
    buildContextLimit: number;
    /** Per device: newest lines kept, and bytes of messages kept. */
    logRetention: { lines: number; bytes: number };
    /**
     * How other replicas reach this one (`--replica-url`), for tunnel sessions to devices whose
     * socket is here; undefined on a single replica (SQLite).
     */
    replicaUrl?: string;
    /** `--public-url-domain`: device public URLs are `https://<uuid>.<domain>/` instead of `<public URL>/d/<uuid>/`. */
    publicUrlDomain?: string;
    /** `--delta-cache-size`: most bytes of delta files this replica keeps (the oldest used go first). */
    deltaCacheBytes?: number;
  };
  log: (line: string) => void;
}

/** What requests need of this replica's delta worker. */
export interface DeltaRuntime {
  /** A job was queued: claim it now rather than at the next sweep. */
  wake(): void;
  /** Downloads in progress by delta id (never evicted while one runs). */
  readonly downloads: Map<string, number>;
}

export function isoNow(ctx: ServiceContext): string {
  return ctx.clock().toISOString();
}

/** 400: `field` names the part of the request that is wrong (the HTTP layer puts it in the body). */
export function badInput(field: string, message: string, hint?: string): SkiffError {
  return new SkiffError('usage', message, { where: field, ...(hint ? { hint } : {}) });
}

export function notFound(what: string): SkiffError {
  return new SkiffError('notFound', `${what} not found`);
}

export function conflict(message: string): SkiffError {
  return new SkiffError('conflict', message);
}

/** 401. The default hint is for people; device routes pass their own (or none). */
export function unauthorized(message: string, hint: string | null = "log in again with 'skiff login'"): SkiffError {
  return new SkiffError('notLoggedIn', message, hint === null ? {} : { hint });
}

/** 403 for an action the caller's kind of key may never do (only ever on the caller's own objects). */
export function forbidden(message: string): SkiffError {
  return new SkiffError('deviceRefused', message);
}

/** Applies permissions.ts's decision: returns on allow, else throws the not-found or forbidden error. */
export function authorize(principal: Principal, action: Action, resource: Resource, what: string): void {
  const decision = decide(principal, action, resource);
  if (decision === 'notFound') throw notFound(what);
  if (decision === 'forbidden') throw forbidden(`not allowed to ${action} ${what}`);
}

/** The user behind a principal, or a 401 for a device or provisioning key on a user route. */
export function userOf(principal: Principal): Extract<Principal, { kind: 'user' }> {
  if (principal.kind !== 'user') throw unauthorized('this route needs a user\'s session token or API key');
  return principal;
}

export function parseJson<T>(text: string | null, fallback: T): T {
  if (text === null) return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}
