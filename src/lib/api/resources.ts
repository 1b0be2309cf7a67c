/**
 * The user-facing cloud API's wire formats (what `skiff` at the desk and CI send to `skiff server`),
 * one schema per format, shared by the server's routes (validation, /openapi.json) and the CLI's
 * client (types only). Times are ISO 8601 strings in UTC; sizes are bytes unless named otherwise.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ReleaseServiceDelta, UpdateDownload } from './deltas.js';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const Time = Type.String({ format: 'date-time' });

/** Every non-2xx answer. `field` names the part of the request that is wrong, when one is. */
export const ApiError = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String(),
  field: Type.Optional(Type.String()),
});
export type ApiError = Static<typeof ApiError>;

/** A fleet name: what `fleet create` takes and every URL names it by (unique per owner). */
export const FleetName = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$', description: 'Letters, digits, "_", "." and "-"; 1 to 100 characters.' });
export const Email = Type.String({ format: 'email', maxLength: 254 });
export const Password = Type.String({ minLength: 8, maxLength: 1024 });

// --- users, sessions, API keys ---------------------------------------------------------------

export const LoginRequest = Type.Object({ email: Email, password: Type.String({ minLength: 1, maxLength: 1024 }) }, { additionalProperties: false });
export type LoginRequest = Static<typeof LoginRequest>;

export const User = Type.Object({ id: Type.Integer(), email: Type.String(), isAdmin: Type.Boolean(), createdAt: Time });
export type User = Static<typeof User>;

/** A session token, shown once (the CLI keeps it in ~/.skiff/credentials.json, 0600). */
export const LoginResponse = Type.Object({ token: Type.String(), user: User });
export type LoginResponse = Static<typeof LoginResponse>;

/** `GET /whoami`: who the caller's token belongs to. */
export const WhoAmI = Type.Object({ user: User, auth: Type.Union([Type.Literal('session'), Type.Literal('api-key')]) });
export type WhoAmI = Static<typeof WhoAmI>;

export const CreateUserRequest = Type.Object({ email: Email, password: Password, isAdmin: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
export type CreateUserRequest = Static<typeof CreateUserRequest>;

export const CreateApiKeyRequest = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 100 }),
  description: Type.Optional(Type.String({ maxLength: 1000 })),
  expiresAt: Type.Optional(Time),
}, { additionalProperties: false });
export type CreateApiKeyRequest = Static<typeof CreateApiKeyRequest>;

export const ApiKey = Type.Object({
  id: Type.Integer(), name: Type.String(), description: Nullable(Type.String()),
  createdAt: Time, expiresAt: Nullable(Time), lastUsedAt: Nullable(Time),
});
export type ApiKey = Static<typeof ApiKey>;

/** The one answer that holds the key itself: it is stored hashed and never shown again. */
export const CreatedApiKey = Type.Intersect([ApiKey, Type.Object({ key: Type.String() })]);
export type CreatedApiKey = Static<typeof CreatedApiKey>;

// --- fleets --------------------------------------------------------------------------------

export const CreateFleetRequest = Type.Object({ name: FleetName, deviceType: Type.String({ minLength: 1, maxLength: 100 }) }, { additionalProperties: false });
export type CreateFleetRequest = Static<typeof CreateFleetRequest>;

export const Fleet = Type.Object({
  id: Type.Integer(),
  /** Stable across renames: the fleet's app uuid in a device's target state. */
  uuid: Type.String(),
  name: Type.String(),
  /** The owner's email. */
  owner: Type.String(),
  deviceType: Type.String(),
  /** balena's architecture name, from the device type, e.g. `aarch64`. */
  arch: Type.String(),
  /** The commit devices run: the pinned release, else the latest final successful one; null when there is none. */
  targetRelease: Nullable(Type.String()),
  /** The pinned release's commit, or null when the fleet tracks the latest. */
  pinnedRelease: Nullable(Type.String()),
  deviceCount: Type.Integer(),
  onlineDeviceCount: Type.Integer(),
  createdAt: Time,
});
export type Fleet = Static<typeof Fleet>;

/** `PATCH /fleets/:name`: a rename, and/or a pin (a commit) or `null` to track the latest release again. */
export const UpdateFleetRequest = Type.Object({
  name: Type.Optional(FleetName),
  pinnedRelease: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 100 }))),
}, { additionalProperties: false });
export type UpdateFleetRequest = Static<typeof UpdateFleetRequest>;

export const CreateProvisioningKeyRequest = Type.Object({
  name: Type.Optional(Type.String({ maxLength: 100 })),
  expiresAt: Type.Optional(Time),
}, { additionalProperties: false });
export type CreateProvisioningKeyRequest = Static<typeof CreateProvisioningKeyRequest>;

export const ProvisioningKey = Type.Object({
  id: Type.Integer(), fleet: Type.String(), name: Nullable(Type.String()),
  createdAt: Time, expiresAt: Nullable(Time), revokedAt: Nullable(Time),
});
export type ProvisioningKey = Static<typeof ProvisioningKey>;
export const CreatedProvisioningKey = Type.Intersect([ProvisioningKey, Type.Object({ key: Type.String() })]);
export type CreatedProvisioningKey = Static<typeof CreatedProvisioningKey>;

/**
 * `POST /fleets/:name/config`: a config.json for a new device of the fleet, in balenaOS's format
 * (applicationId, deviceType, apiKey = a new provisioning key, apiEndpoint, registryEndpoint, …).
 */
export const FleetConfigRequest = Type.Object({
  deviceType: Type.Optional(Type.String({ maxLength: 100 })),
  /** Expiry of the provisioning key made for it. */
  expiresAt: Type.Optional(Time),
  developmentMode: Type.Optional(Type.Boolean()),
}, { additionalProperties: false });
export type FleetConfigRequest = Static<typeof FleetConfigRequest>;
export const FleetConfig = Type.Record(Type.String(), Type.Unknown());
export type FleetConfig = Static<typeof FleetConfig>;

// --- devices -------------------------------------------------------------------------------

export const DeviceServiceStatus = Type.Object({
  name: Type.String(), status: Type.String(), image: Nullable(Type.String()), downloadProgress: Nullable(Type.Integer()),
});

export const Device = Type.Object({
  id: Type.Integer(),
  uuid: Type.String(),
  name: Type.String(),
  fleet: Type.String(),
  deviceType: Type.String(),
  /** `online` or `offline`: offline once no poll came for 1.5 × its poll interval + 15 s (balena's rule). */
  status: Type.Union([Type.Literal('online'), Type.Literal('offline')]),
  lastSeen: Nullable(Time),
  /** The commit it reports running. */
  runningRelease: Nullable(Type.String()),
  /** The commit it should run (its pin, else the fleet's target). */
  targetRelease: Nullable(Type.String()),
  pinnedRelease: Nullable(Type.String()),
  updateStatus: Nullable(Type.String()),
  updateError: Nullable(Type.String()),
  rolledBackFrom: Nullable(Type.Object({ commit: Type.String(), reason: Type.String() })),
  /** How the last update's images arrived (delta, pull, present) and the bytes, as the device reported; null before its first cloud update. */
  updateDownload: Type.Optional(Nullable(UpdateDownload)),
  ipAddresses: Type.Array(Type.String()),
  macAddresses: Type.Array(Type.String()),
  osVersion: Nullable(Type.String()),
  agentVersion: Nullable(Type.String()),
  services: Type.Array(DeviceServiceStatus),
  /** Bytes. */
  memoryUsage: Nullable(Type.Integer()), memoryTotal: Nullable(Type.Integer()),
  /** MiB, as balena reports storage. */
  storageUsage: Nullable(Type.Integer()), storageTotal: Nullable(Type.Integer()),
  cpuUsage: Nullable(Type.Integer()), cpuTemp: Nullable(Type.Integer()),
  createdAt: Time,
});
export type Device = Static<typeof Device>;

/** `PATCH /devices/:uuid`: rename, move (same arch), pin (a commit) or `null` to track the fleet. */
export const UpdateDeviceRequest = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
  fleet: Type.Optional(FleetName),
  pinnedRelease: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 100 }))),
}, { additionalProperties: false });
export type UpdateDeviceRequest = Static<typeof UpdateDeviceRequest>;

// --- releases ------------------------------------------------------------------------------

export const ReleaseStatus = Type.Union([Type.Literal('running'), Type.Literal('success'), Type.Literal('failed')]);
export type ReleaseStatus = Static<typeof ReleaseStatus>;

export const ReleaseService = Type.Object({
  name: Type.String(),
  /** `<registry host>/<repository>@sha256:<hex>` once pushed, null while the release is being made. */
  image: Nullable(Type.String()),
  /** Bytes, as the registry's manifest gives them; null until pushed. */
  size: Nullable(Type.Integer()),
  /** The delta from the fleet's previous release's image of this service; null when there is none to make (first release, same image). */
  delta: Type.Optional(Nullable(ReleaseServiceDelta)),
});

export const Release = Type.Object({
  id: Type.Integer(),
  commit: Type.String(),
  fleet: Type.String(),
  status: ReleaseStatus,
  isFinal: Type.Boolean(),
  isInvalidated: Type.Boolean(),
  semver: Nullable(Type.String()),
  notes: Nullable(Type.String()),
  services: Type.Array(ReleaseService),
  /** The compose services as `skiff build` models them (ServiceJson per service, without `build`). */
  composition: Type.Record(Type.String(), Type.Unknown()),
  tags: Type.Record(Type.String(), Type.String()),
  /** The project's git commit the release was made from (40 hex), when known. */
  gitCommit: Nullable(Type.String()),
  /** The cloud build that made it (its id), null for `skiff deploy`. */
  build: Nullable(Type.String()),
  createdAt: Time,
});
export type Release = Static<typeof Release>;

/**
 * `POST /fleets/:name/releases`: starts a release (status `running`, seen by no device). The answer
 * names the repository each service's image goes to; `PATCH /releases/:commit` with the digests
 * ends it.
 */
export const CreateReleaseRequest = Type.Object({
  /** Made by the server when left out (32 hex digits). */
  commit: Type.Optional(Type.String({ pattern: '^[0-9a-zA-Z]{7,64}$' })),
  composition: Type.Object({
    services: Type.Record(Type.String({ pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$' }), Type.Record(Type.String(), Type.Unknown()), { minProperties: 1, maxProperties: 100 }),
    volumes: Type.Optional(Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown()))),
    networks: Type.Optional(Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown()))),
  }),
  draft: Type.Optional(Type.Boolean()),
  semver: Type.Optional(Type.String({ pattern: '^\\d+\\.\\d+\\.\\d+([-+][0-9A-Za-z.-]+)*$' })),
  /** No NUL byte: PostgreSQL's text refuses it (a 500). */
  notes: Type.Optional(Type.String({ maxLength: 10_000, pattern: '^[^\\u0000]*$' })),
  tags: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 100 }), Type.String({ maxLength: 1000, pattern: '^[^\\u0000]*$' }))),
  /** The project's git commit (skiff deploy stamps the working tree's HEAD). */
  gitCommit: Type.Optional(Type.String({ pattern: '^[0-9a-f]{40}$' })),
}, { additionalProperties: false });
export type CreateReleaseRequest = Static<typeof CreateReleaseRequest>;

export const CreatedRelease = Type.Object({
  release: Release,
  /** Service name → the repository to push to, e.g. `127.0.0.1:48080/3f2a…/main` (tag: the commit). */
  repositories: Type.Record(Type.String(), Type.String()),
});
export type CreatedRelease = Static<typeof CreatedRelease>;

/** `PATCH /releases/:commit`: end a release (success with every service's digest, or failed), finalize, invalidate, note. */
export const UpdateReleaseRequest = Type.Object({
  status: Type.Optional(Type.Union([Type.Literal('success'), Type.Literal('failed')])),
  /** Service name → `sha256:<hex>` manifest digest in the server's registry; every service, with status success. */
  images: Type.Optional(Type.Record(Type.String(), Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }))),
  isFinal: Type.Optional(Type.Literal(true)),
  isInvalidated: Type.Optional(Type.Boolean()),
  semver: Type.Optional(Type.String({ pattern: '^\\d+\\.\\d+\\.\\d+([-+][0-9A-Za-z.-]+)*$' })),
  /** No NUL byte: PostgreSQL's text refuses it (a 500). */
  notes: Type.Optional(Type.String({ maxLength: 10_000, pattern: '^[^\\u0000]*$' })),
}, { additionalProperties: false });
export type UpdateReleaseRequest = Static<typeof UpdateReleaseRequest>;

// --- variables and tags --------------------------------------------------------------------

/** Names: a letter or `_` first, then letters, digits, `_` (balena's rule). `BALENA_`/`SKIFF_` names are config variables. */
export const VariableName = Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', maxLength: 200 });

/** Where a variable or tag lives: exactly one of fleet / device (and, for a variable, optionally a service). */
export const VariableScope = Type.Object({
  fleet: Type.Optional(FleetName),
  device: Type.Optional(Type.String({ pattern: '^[0-9a-f]{7,64}$' })),
  service: Type.Optional(Type.String({ minLength: 1, maxLength: 63 })),
}, { additionalProperties: false });
export type VariableScope = Static<typeof VariableScope>;

export const Variable = Type.Object({
  id: Type.Integer(), name: Type.String(), value: Type.String(),
  fleet: Nullable(Type.String()), device: Nullable(Type.String()), service: Nullable(Type.String()),
  /** `config` for names starting BALENA_ or SKIFF_ (agent settings such as the poll interval), else `env`. */
  kind: Type.Union([Type.Literal('env'), Type.Literal('config')]),
});
export type Variable = Static<typeof Variable>;

/**
 * The name a new variable may take: {@link VariableName} but `__proto__`, which a JavaScript
 * object (the target state's `environment`) silently drops, so the variable never reached a
 * container. Removing one stays allowed ({@link VariableName}).
 */
export const NewVariableName = Type.String({ pattern: '^(?!__proto__$)[A-Za-z_][A-Za-z0-9_]*$', maxLength: 200 });

/** Any text without a NUL byte: the engine (runc) refuses a container whose environment holds one, so every device would fail to start it. */
export const VariableValue = Type.String({ maxLength: 100_000, pattern: '^[^\\u0000]*$' });

// Composite, not Intersect: an allOf whose parts each forbid additional properties refuses every body.
export const SetVariableRequest = Type.Composite([VariableScope, Type.Object({ name: NewVariableName, value: VariableValue })], { additionalProperties: false });
export type SetVariableRequest = Static<typeof SetVariableRequest>;

export const TagScope = Type.Object({
  fleet: Type.Optional(FleetName),
  device: Type.Optional(Type.String({ pattern: '^[0-9a-f]{7,64}$' })),
  release: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
}, { additionalProperties: false });
export type TagScope = Static<typeof TagScope>;

export const Tag = Type.Object({ key: Type.String(), value: Type.String(), fleet: Nullable(Type.String()), device: Nullable(Type.String()), release: Nullable(Type.String()) });
export type Tag = Static<typeof Tag>;

export const SetTagRequest = Type.Composite([TagScope, Type.Object({ key: Type.String({ minLength: 1, maxLength: 100, pattern: '^[^\\s\\u0000]+$' }), value: Type.String({ maxLength: 1000, pattern: '^[^\\u0000]*$' }) })], { additionalProperties: false });
export type SetTagRequest = Static<typeof SetTagRequest>;
