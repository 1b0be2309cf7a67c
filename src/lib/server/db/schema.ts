/**
 * The server's tables as Kysely sees them. One shape for both dialects: booleans are 0/1 integers
 * and times are ISO 8601 strings in UTC (they sort as text), so no query needs a dialect branch.
 * JSON columns hold text and are parsed by the services that own them.
 */
import type { Generated, Insertable, Selectable } from 'kysely';

type Bool = number;

export interface UsersTable {
  id: Generated<number>;
  email: string;
  /** `scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>` (see ../crypto.ts). */
  password_hash: string;
  is_admin: Bool;
  created_at: string;
}

export interface SessionsTable {
  id: Generated<number>;
  user_id: number;
  /** SHA-256 hex of the token; the token itself is never stored. */
  token_hash: string;
  created_at: string;
  expires_at: string;
}

export interface ApiKeysTable {
  id: Generated<number>;
  user_id: number;
  name: string;
  description: string | null;
  key_hash: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
}

export interface FleetsTable {
  id: Generated<number>;
  uuid: string;
  owner_id: number;
  name: string;
  device_type: string;
  pinned_release_id: number | null;
  /** Bumped in the transaction of every change that can alter a device's target (part of the ETag). */
  state_version: number;
  created_at: string;
  /** Its devices' public URLs are served unless a device says otherwise (0003). */
  public_url: Generated<Bool>;
}

export interface ProvisioningKeysTable {
  id: Generated<number>;
  fleet_id: number;
  name: string | null;
  key_hash: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
}

export interface DevicesTable {
  id: Generated<number>;
  uuid: string;
  key_hash: string;
  fleet_id: number;
  name: string;
  device_type: string;
  pinned_release_id: number | null;
  /** Bumped with every change of this device that alters its target (with the fleet's, the ETag). */
  state_version: number;
  last_seen: string | null;
  created_at: string;
  // What the device reports (PATCH /device/v3/state).
  status: string | null;
  os_version: string | null;
  os_variant: string | null;
  supervisor_version: string | null;
  ip_address: string | null;
  mac_address: string | null;
  api_port: number | null;
  provisioning_state: string | null;
  running_release: string | null;
  update_status: string | null;
  update_error: string | null;
  /** JSON `{commit, reason}` or null. */
  rolled_back_from: string | null;
  /** JSON UpdateDownload (api/deltas.ts): how the last update's images arrived (0004). */
  update_download: string | null;
  /** JSON array of `{name, status, image, downloadProgress}`. */
  services: string;
  memory_usage: number | null;
  memory_total: number | null;
  storage_usage: number | null;
  storage_total: number | null;
  cpu_usage: number | null;
  cpu_temp: number | null;
  /** Its public URL: on, off, or null to follow its fleet (0003). */
  public_url: Bool | null;
}

export interface ReleasesTable {
  id: Generated<number>;
  fleet_id: number;
  commit: string;
  status: 'running' | 'success' | 'failed';
  is_final: Bool;
  is_invalidated: Bool;
  semver: string | null;
  notes: string | null;
  /** JSON: `{services, volumes?, networks?}` as CreateReleaseRequest's composition. */
  composition: string;
  created_at: string;
  /** The project's git commit, when known (0002). */
  git_commit: string | null;
  /** The cloud build that made it (builds.uuid), null for `skiff deploy` (0002). */
  build_uuid: string | null;
}

export interface ReleaseImagesTable {
  id: Generated<number>;
  release_id: number;
  service: string;
  /** `<fleet uuid>/<service>`, lower case. */
  repository: string;
  digest: string | null;
  size: number | null;
}

export interface VariablesTable {
  id: Generated<number>;
  fleet_id: number | null;
  device_id: number | null;
  /** '' for every service: unique indexes treat '' as a value, unlike NULL. */
  service: string;
  name: string;
  value: string;
}

export interface TagsTable {
  id: Generated<number>;
  fleet_id: number | null;
  device_id: number | null;
  release_id: number | null;
  key: string;
  value: string;
}

/** Cloud builds: jobs that survive the connection that started them (0002). */
export interface BuildsTable {
  id: Generated<number>;
  /** 32 hex digits, the API's build id. */
  uuid: string;
  fleet_id: number;
  user_id: number;
  status: 'queued' | 'running' | 'success' | 'failed' | 'cancelled';
  source: 'push' | 'git';
  git_commit: string | null;
  git_ref: string | null;
  dirty: Bool;
  /** JSON of Build['options']. */
  options: string;
  /** Bytes of the uploaded tar. */
  context_bytes: number;
  /** The replica holding the uploaded context (its data dir); only it runs the build. */
  replica: string;
  /** Set by a cancel request on any replica; the replica running the build stops it. */
  cancel_requested: Bool;
  release_id: number | null;
  error: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

/** A build's ordered output (RemoteBuildEvent JSON), seq 1, 2, … per build (0002). */
export interface BuildEventsTable {
  id: Generated<number>;
  build_id: number;
  seq: number;
  /** JSON of RemoteBuildEvent. */
  event: string;
  created_at: string;
}

/** Devices' log lines, bounded per device by the server's retention (0002). */
export interface DeviceLogsTable {
  id: Generated<number>;
  device_id: number;
  /** Milliseconds since the epoch, as the device stamped it. */
  timestamp: number;
  service: string | null;
  is_system: Bool;
  is_stderr: Bool;
  message: string;
}

/** Tunnel sessions to devices: who, which device, what, when, bytes (0003). */
export interface DeviceSessionsTable {
  id: Generated<number>;
  /** 32 hex digits, the API's session id. */
  uuid: string;
  device_id: number;
  /** Null for a public URL (anonymous). */
  user_id: number | null;
  kind: 'ssh' | 'ssh-host' | 'tunnel' | 'public-url';
  actor: string;
  target: string;
  client_address: string;
  /** The replica that relayed it to the device. */
  replica: string;
  started_at: string;
  ended_at: string | null;
  bytes_in: number;
  bytes_out: number;
  outcome: string | null;
}

/**
 * Delta jobs and their results (0004): one row per (source image, target image) pair. The files
 * live in a replica's `<data dir>/deltas/<uuid>/` cache; a replica without them makes them again.
 */
export interface DeltasTable {
  id: Generated<number>;
  /** 32 hex digits: the API's delta id. */
  uuid: string;
  fleet_id: number;
  src_repository: string;
  /** Manifest digest of the source image. */
  src_digest: string;
  dest_repository: string;
  dest_digest: string;
  status: 'queued' | 'running' | 'done' | 'none' | 'failed';
  /** The replica making it (running) or that made it. */
  replica: string | null;
  /** The maker's `--replica-url` once done (PostgreSQL): other replicas relay its files from there. Null on SQLite. */
  replica_url: string | null;
  /** JSON DeltaDescriptor once done. */
  descriptor: string | null;
  download_bytes: number | null;
  pull_bytes: number | null;
  /** Why none or failed. */
  reason: string | null;
  attempts: number;
  created_at: string;
  updated_at: string;
  /** Last time a device asked for it (eviction: the oldest used go first). */
  used_at: string | null;
}

export interface Database {
  deltas: DeltasTable;
  device_sessions: DeviceSessionsTable;
  builds: BuildsTable;
  build_events: BuildEventsTable;
  device_logs: DeviceLogsTable;
  users: UsersTable;
  sessions: SessionsTable;
  api_keys: ApiKeysTable;
  fleets: FleetsTable;
  provisioning_keys: ProvisioningKeysTable;
  devices: DevicesTable;
  releases: ReleasesTable;
  release_images: ReleaseImagesTable;
  variables: VariablesTable;
  tags: TagsTable;
}

export type UserRow = Selectable<UsersTable>;
export type FleetRow = Selectable<FleetsTable>;
export type DeviceRow = Selectable<DevicesTable>;
export type ReleaseRow = Selectable<ReleasesTable>;
export type ReleaseImageRow = Selectable<ReleaseImagesTable>;
export type VariableRow = Selectable<VariablesTable>;
export type BuildRow = Selectable<BuildsTable>;
export type DeviceLogRow = Selectable<DeviceLogsTable>;
export type DeltaRow = Selectable<DeltasTable>;
export type NewDevice = Insertable<DevicesTable>;
