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
  /** JSON array of `{name, status, image, downloadProgress}`. */
  services: string;
  memory_usage: number | null;
  memory_total: number | null;
  storage_usage: number | null;
  storage_total: number | null;
  cpu_usage: number | null;
  cpu_temp: number | null;
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

export interface Database {
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
export type NewDevice = Insertable<DevicesTable>;
