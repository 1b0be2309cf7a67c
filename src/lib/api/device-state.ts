/**
 * The device ↔ cloud wire formats, one schema per format, shared by the server's device routes
 * (which validate with them and publish them in /openapi.json) and the agent's cloud client (which
 * only imports the types). They follow balena's protocol (../shared/BALENA-CLOUD-PROTOCOL.md):
 * balena-supervisor `src/types/state.ts`, `src/lib/register-device.ts`, and open-balena-api
 * `src/features/device-state/routes/state-get-v3.ts`, `state-patch-v3.ts`,
 * `src/features/device-provisioning/register.ts`. Fields Skiff adds are marked as such.
 */
import { Type, type Static } from '@sinclair/typebox';
import { UpdateDownload } from './deltas.js';

const Uuid = Type.String({ pattern: '^[0-9a-f]{7,64}$', description: 'Lower-case hex, 7 to 64 characters.' });

/**
 * `POST /device/register`, with `Authorization: Bearer <provisioning key>`
 * (balena-supervisor `src/lib/register-device.ts`).
 */
export const RegisterRequest = Type.Object({
  /** The fleet id the provisioning key belongs to (config.json `applicationId`); checked against the key. */
  application: Type.Optional(Type.Integer({ minimum: 1 })),
  uuid: Uuid,
  /** A device type slug, e.g. `raspberrypi4-64`; must be of the fleet's architecture. */
  device_type: Type.String({ minLength: 1, maxLength: 100 }),
  /** The device's own key, made by the device; every later call uses it. At least 16 characters. */
  api_key: Type.String({ minLength: 16, maxLength: 200 }),
  supervisor_version: Type.Optional(Type.String({ maxLength: 100 })),
  os_version: Type.Optional(Type.String({ maxLength: 100 })),
  os_variant: Type.Optional(Type.String({ maxLength: 100 })),
  mac_address: Type.Optional(Type.String({ maxLength: 1000 })),
}, { additionalProperties: false });
export type RegisterRequest = Static<typeof RegisterRequest>;

/** 201 answer to {@link RegisterRequest}; a duplicate uuid is a 409. */
export const RegisterResponse = Type.Object({
  id: Type.Integer(),
  uuid: Type.String(),
  api_key: Type.String(),
  device_type: Type.String(),
});
export type RegisterResponse = Static<typeof RegisterResponse>;

/** One service of a release in a device's target (balena `TargetState` → app → release → service). */
export const TargetServiceV3 = Type.Object({
  id: Type.Integer(),
  image_id: Type.Integer(),
  /** The image in the server's registry by digest: `<registry host>/<repository>@sha256:<hex>`. */
  image: Type.String(),
  /** Merged: image < fleet < fleet+service < device < device+service. */
  environment: Type.Record(Type.String(), Type.String()),
  labels: Type.Record(Type.String(), Type.String()),
  running: Type.Optional(Type.Boolean()),
  /**
   * The service's compose settings without `build`, in the snake_case wire form of
   * `src/lib/service/service-config.ts` (`ServiceJson`), which the agent parses with its one parser.
   */
  composition: Type.Record(Type.String(), Type.Unknown()),
});
export type TargetServiceV3 = Static<typeof TargetServiceV3>;

export const TargetReleaseV3 = Type.Object({
  id: Type.Integer(),
  services: Type.Record(Type.String(), TargetServiceV3),
  volumes: Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown())),
  networks: Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown())),
});
export type TargetReleaseV3 = Static<typeof TargetReleaseV3>;

export const TargetAppV3 = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  /** `fleet` for a user's apps (balena also has `app` and `block`). */
  class: Type.Literal('fleet'),
  /** At most one release: the one the device should run, keyed by the release's commit (balena: release uuid). */
  releases: Type.Record(Type.String(), TargetReleaseV3),
});
export type TargetAppV3 = Static<typeof TargetAppV3>;

export const DeviceTargetV3 = Type.Object({
  name: Type.String(),
  /** Config variables, e.g. `SKIFF_AGENT_POLL_INTERVAL` / `BALENA_SUPERVISOR_POLL_INTERVAL` (ms, as a string). */
  config: Type.Record(Type.String(), Type.String()),
  /** Keyed by the fleet's uuid. */
  apps: Type.Record(Type.String(), TargetAppV3),
});
export type DeviceTargetV3 = Static<typeof DeviceTargetV3>;

/** `GET /device/v3/:uuid/state` → 200 (with an ETag) or 304: the body is keyed by the device's uuid. */
export const TargetStateV3 = Type.Record(Type.String(), DeviceTargetV3);
export type TargetStateV3 = Static<typeof TargetStateV3>;

/** balena's `update_status` of an app's release in a report. */
export const UpdateStatus = Type.Union([
  Type.Literal('rejected'), Type.Literal('downloading'), Type.Literal('downloaded'),
  Type.Literal('applying changes'), Type.Literal('aborted'), Type.Literal('done'),
]);
export type UpdateStatus = Static<typeof UpdateStatus>;

export const ServiceReportV3 = Type.Object({
  image: Type.Optional(Type.String({ maxLength: 1000 })),
  /** e.g. `Running`, `Downloading`, `Exited`, `Installing`. */
  status: Type.String({ maxLength: 100 }),
  /** Percent, 0 to 100, while the image downloads. */
  download_progress: Type.Optional(Type.Union([Type.Integer({ minimum: 0, maximum: 100 }), Type.Null()])),
}, { additionalProperties: false });
export type ServiceReportV3 = Static<typeof ServiceReportV3>;

export const ReleaseReportV3 = Type.Object({
  update_status: Type.Optional(UpdateStatus),
  services: Type.Optional(Type.Record(Type.String({ maxLength: 100 }), ServiceReportV3, { maxProperties: 100 })),
}, { additionalProperties: false });

export const AppReportV3 = Type.Object({
  /** The release the device runs now (balena: release uuid; ours: the commit). */
  release_uuid: Type.Optional(Type.Union([Type.String({ maxLength: 100 }), Type.Null()])),
  releases: Type.Optional(Type.Record(Type.String({ maxLength: 100 }), ReleaseReportV3, { maxProperties: 10 })),
}, { additionalProperties: false });

/** A device's own part of a report: only fields that changed since the last report are sent. */
export const DeviceReportV3 = Type.Object({
  status: Type.Optional(Type.String({ maxLength: 100 })),
  os_version: Type.Optional(Type.String({ maxLength: 100 })),
  os_variant: Type.Optional(Type.String({ maxLength: 100 })),
  supervisor_version: Type.Optional(Type.String({ maxLength: 100 })),
  /** Space-separated addresses, as balena sends them. */
  ip_address: Type.Optional(Type.String({ maxLength: 1000 })),
  mac_address: Type.Optional(Type.String({ maxLength: 1000 })),
  api_port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
  provisioning_progress: Type.Optional(Type.Union([Type.Integer({ minimum: 0, maximum: 100 }), Type.Null()])),
  provisioning_state: Type.Optional(Type.String({ maxLength: 100 })),
  update_failed: Type.Optional(Type.Boolean()),
  update_pending: Type.Optional(Type.Boolean()),
  update_downloaded: Type.Optional(Type.Boolean()),
  /** Bytes. */
  memory_usage: Type.Optional(Type.Integer({ minimum: 0 })),
  memory_total: Type.Optional(Type.Integer({ minimum: 0 })),
  /** MiB, as balena reports storage. */
  storage_usage: Type.Optional(Type.Integer({ minimum: 0 })),
  storage_total: Type.Optional(Type.Integer({ minimum: 0 })),
  /** Percent. */
  cpu_usage: Type.Optional(Type.Integer({ minimum: 0, maximum: 100 })),
  /** Degrees Celsius. */
  cpu_temp: Type.Optional(Type.Integer({ minimum: -100, maximum: 200 })),
  /** Skiff: why the last apply failed (the agent's one-line reason), or null once it applied. */
  update_error: Type.Optional(Type.Union([Type.String({ maxLength: 2000 }), Type.Null()])),
  /** Skiff: a release the device rolled back from, with the reason, or null. */
  rolled_back_from: Type.Optional(Type.Union([Type.Object({ commit: Type.String({ maxLength: 100 }), reason: Type.String({ maxLength: 2000 }) }, { additionalProperties: false }), Type.Null()])),
  /** Skiff: how the last update's images arrived (delta or pull) and the bytes it took. */
  update_download: Type.Optional(Type.Union([UpdateDownload, Type.Null()])),
  apps: Type.Optional(Type.Record(Type.String({ maxLength: 100 }), AppReportV3, { maxProperties: 10 })),
}, { additionalProperties: false });
export type DeviceReportV3 = Static<typeof DeviceReportV3>;

/** `PATCH /device/v3/state`: keyed by the reporting device's uuid (only its own). */
export const StateReportV3 = Type.Record(Uuid, DeviceReportV3, { minProperties: 1, maxProperties: 1, additionalProperties: false });
export type StateReportV3 = Static<typeof StateReportV3>;

/**
 * `GET /auth/v1/token?service=…&scope=repository:<repo>:pull,push` (distribution's token
 * protocol, `docs/spec/auth/token.md`), basic auth: `d_<uuid>:<device key>` for a device, or a
 * user's email or `_token` with an API key / session token.
 */
export const RegistryTokenResponse = Type.Object({
  token: Type.String(),
  access_token: Type.String(),
  /** Seconds. */
  expires_in: Type.Integer(),
  issued_at: Type.String(),
});
export type RegistryTokenResponse = Static<typeof RegistryTokenResponse>;
