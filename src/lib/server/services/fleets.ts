/**
 * Fleets and their provisioning keys. A fleet is looked up by name within its owner's fleets, so
 * another user's fleet is simply not found.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Kysely, Transaction } from 'kysely';
import type { CreatedProvisioningKey, CreateFleetRequest, CreateProvisioningKeyRequest, Fleet, FleetConfig, FleetConfigRequest, ProvisioningKey, UpdateFleetRequest } from '../../api/resources.js';
import type { Database, FleetRow } from '../db/schema.js';
import { ALL_DEVICE_TYPES, findDeviceType, type DeviceType } from '../../device-types/device-types.js';
import { closest } from '../../text/suggest.js';
import { hashKey, newHexId, newKey } from '../crypto.js';
import { isUniqueViolation } from '../db/database.js';
import { configOf, pollIntervalOf, type ScopedVariable } from '../target-state.js';
import { deviceStatus } from '../device-status.js';
import type { Principal } from '../permissions.js';
import { authorize, badInput, conflict, isoNow, notFound, type ServiceContext } from './context.js';

type User = Extract<Principal, { kind: 'user' }>;
type Db = Kysely<Database> | Transaction<Database>;

/** A device type from the table, or a 400 naming `field` with a did-you-mean. */
export function knownDeviceType(slug: string, field: string): DeviceType {
  const found = findDeviceType(slug);
  if (found) return found;
  const names = ALL_DEVICE_TYPES.flatMap((d) => [d.slug, ...(d.aliases ?? [])]);
  const guess = closest(slug, names);
  const suggestion = guess ? findDeviceType(guess)?.slug : undefined;
  throw badInput(field, `unknown device type '${slug}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`, "'skiff devices supported' lists the known device types");
}

/** The caller's fleet named `name`, or a 404. */
export async function fleetOf(ctx: ServiceContext, caller: User, name: string, action: 'read' | 'write' = 'read', db: Db = ctx.db): Promise<FleetRow> {
  const row = await db.selectFrom('fleets').selectAll().where('owner_id', '=', caller.userId).where('name', '=', name).executeTakeFirst();
  if (!row) throw notFound(`fleet '${name}'`);
  authorize(caller, action, { kind: 'fleet', ownerId: row.owner_id, fleetId: row.id }, `fleet '${name}'`);
  return row;
}

/** The id and commit of the release a fleet's devices track: the pin, else the latest final successful valid one. */
export async function fleetTarget(db: Db, fleet: Pick<FleetRow, 'id' | 'pinned_release_id'>): Promise<{ id: number; commit: string } | undefined> {
  if (fleet.pinned_release_id !== null) {
    return db.selectFrom('releases').select(['id', 'commit']).where('id', '=', fleet.pinned_release_id).executeTakeFirst();
  }
  return latestRelease(db, fleet.id);
}

export async function latestRelease(db: Db, fleetId: number): Promise<{ id: number; commit: string } | undefined> {
  return db.selectFrom('releases').select(['id', 'commit'])
    .where('fleet_id', '=', fleetId).where('status', '=', 'success').where('is_final', '=', 1).where('is_invalidated', '=', 0)
    .orderBy('id', 'desc').limit(1).executeTakeFirst();
}

/** Bumps a fleet's state version: every device of it gets a new ETag (call inside the change's transaction). */
export async function touchFleet(db: Db, fleetId: number): Promise<void> {
  await db.updateTable('fleets').set((eb) => ({ state_version: eb('state_version', '+', 1) })).where('id', '=', fleetId).execute();
}

/** Each of a fleet's devices' poll interval (ms) from config variables (fleet < device), for online status. */
export async function pollIntervals(db: Db, fleetId: number, deviceIds: number[]): Promise<Map<number, number>> {
  const fleetVars: ScopedVariable[] = (await db.selectFrom('variables').select(['name', 'value']).where('fleet_id', '=', fleetId).where('service', '=', '').execute())
    .map((v) => ({ level: 'fleet', service: null, name: v.name, value: v.value }));
  const byDevice = new Map<number, ScopedVariable[]>();
  for (let i = 0; i < deviceIds.length; i += 500) {
    const rows = await db.selectFrom('variables').select(['device_id', 'name', 'value']).where('device_id', 'in', deviceIds.slice(i, i + 500)).where('service', '=', '').execute();
    for (const v of rows) {
      if (v.device_id === null) continue;
      const list = byDevice.get(v.device_id) ?? [];
      list.push({ level: 'device', service: null, name: v.name, value: v.value });
      byDevice.set(v.device_id, list);
    }
  }
  const fleetDefault = pollIntervalOf(configOf(fleetVars));
  return new Map(deviceIds.map((id) => {
    const own = byDevice.get(id);
    return [id, own ? pollIntervalOf(configOf([...fleetVars, ...own])) : fleetDefault];
  }));
}

export async function fleetJson(ctx: ServiceContext, row: FleetRow, ownerEmail: string): Promise<Fleet> {
  const devices = await ctx.db.selectFrom('devices').select(['id', 'last_seen']).where('fleet_id', '=', row.id).execute();
  const intervals = await pollIntervals(ctx.db, row.id, devices.map((d) => d.id));
  const now = ctx.clock().getTime();
  const online = devices.filter((d) => {
    const seen = ctx.lastSeen.unwritten(d.id) ?? d.last_seen;
    return deviceStatus(seen ? Date.parse(seen) : undefined, intervals.get(d.id) ?? 60_000, now) === 'online';
  }).length;
  const target = await fleetTarget(ctx.db, row);
  const pinned = row.pinned_release_id === null ? undefined : target;
  const dt = findDeviceType(row.device_type);
  return {
    id: row.id, uuid: row.uuid, name: row.name, owner: ownerEmail, deviceType: row.device_type, arch: dt?.arch ?? 'unknown',
    targetRelease: target?.commit ?? null, pinnedRelease: pinned?.commit ?? null,
    deviceCount: devices.length, onlineDeviceCount: online, createdAt: row.created_at,
  };
}

export async function listFleets(ctx: ServiceContext, caller: User): Promise<Fleet[]> {
  const rows = await ctx.db.selectFrom('fleets').selectAll().where('owner_id', '=', caller.userId).orderBy('name').execute();
  return Promise.all(rows.map((r) => fleetJson(ctx, r, caller.email)));
}

export async function getFleet(ctx: ServiceContext, caller: User, name: string): Promise<Fleet> {
  return fleetJson(ctx, await fleetOf(ctx, caller, name), caller.email);
}

/** Creates a fleet: 400 (with a did-you-mean) for an unknown device type, 409 when the caller has one of that name. */
export async function createFleet(ctx: ServiceContext, caller: User, request: CreateFleetRequest): Promise<Fleet> {
  const dt = knownDeviceType(request.deviceType, 'deviceType');
  try {
    const row = await ctx.db.insertInto('fleets').values({
      uuid: newHexId(), owner_id: caller.userId, name: request.name, device_type: dt.slug, pinned_release_id: null, state_version: 1, created_at: isoNow(ctx),
    }).returningAll().executeTakeFirstOrThrow();
    return await fleetJson(ctx, row, caller.email);
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a fleet named '${request.name}' exists`);
    throw err;
  }
}

/** Renames and/or pins (a commit of this fleet's successful releases; null tracks the latest again). */
export async function updateFleet(ctx: ServiceContext, caller: User, name: string, request: UpdateFleetRequest): Promise<Fleet> {
  const row = await ctx.db.transaction().execute(async (tx) => {
    const fleet = await fleetOf(ctx, caller, name, 'write', tx);
    const changes: { name?: string; pinned_release_id?: number | null } = {};
    if (request.name !== undefined && request.name !== fleet.name) {
      const taken = await tx.selectFrom('fleets').select('id').where('owner_id', '=', caller.userId).where('name', '=', request.name).executeTakeFirst();
      if (taken) throw conflict(`a fleet named '${request.name}' exists`);
      changes.name = request.name;
    }
    if (request.pinnedRelease !== undefined) {
      changes.pinned_release_id = request.pinnedRelease === null ? null : (await pinnableRelease(tx, fleet.id, request.pinnedRelease, 'pinnedRelease')).id;
    }
    if (Object.keys(changes).length > 0) {
      await tx.updateTable('fleets').set(changes).where('id', '=', fleet.id).execute();
      await touchFleet(tx, fleet.id);
    }
    return tx.selectFrom('fleets').selectAll().where('id', '=', fleet.id).executeTakeFirstOrThrow();
  });
  // After the commit: the devices' polls must find the new target when told to fetch it.
  if (request.pinnedRelease !== undefined) await ctx.events.publish({ topic: 'target', fleetId: row.id });
  return fleetJson(ctx, row, caller.email);
}

/** A successful release of `fleetId` by commit (or a unique 7+ character prefix), or a 400 naming `field`. */
export async function pinnableRelease(db: Db, fleetId: number, commit: string, field: string): Promise<{ id: number; commit: string }> {
  const rows = await db.selectFrom('releases').select(['id', 'commit', 'status']).where('fleet_id', '=', fleetId)
    .where((eb) => (commit.length >= 7 ? eb('commit', 'like', `${commit.replace(/[%_\\]/g, '')}%`) : eb('commit', '=', commit))).limit(2).execute();
  const exact = rows.find((r) => r.commit === commit);
  const row = exact ?? (rows.length === 1 ? rows[0] : undefined);
  if (!row) throw badInput(field, rows.length > 1 ? `release '${commit}' is ambiguous: give more of the commit` : `the fleet has no release '${commit}'`);
  if (row.status !== 'success') throw badInput(field, `release '${row.commit}' is ${row.status}: only a successful release can be pinned`);
  return row;
}

/** Removes a fleet with its devices (their keys stop at once), releases, variables and keys. */
export async function removeFleet(ctx: ServiceContext, caller: User, name: string): Promise<void> {
  const fleet = await fleetOf(ctx, caller, name, 'write');
  await ctx.db.deleteFrom('fleets').where('id', '=', fleet.id).execute();
  // Its git repository goes too (on this replica's disk; a new fleet of the same name has a new uuid,
  // so another replica's leftover copy is never served to anyone).
  const { repositoriesRoot, repositoryName } = await import('../git/repositories.js');
  await rm(path.join(repositoriesRoot(ctx.options.dataDir), repositoryName(fleet.uuid)), { recursive: true, force: true });
}

function provisioningKeyJson(row: { id: number; name: string | null; created_at: string; expires_at: string | null; revoked_at: string | null }, fleet: string): ProvisioningKey {
  return { id: row.id, fleet, name: row.name, createdAt: row.created_at, expiresAt: row.expires_at, revokedAt: row.revoked_at };
}

export async function createProvisioningKey(ctx: ServiceContext, caller: User, fleetName: string, request: CreateProvisioningKeyRequest): Promise<CreatedProvisioningKey> {
  const fleet = await fleetOf(ctx, caller, fleetName, 'write');
  const key = newKey('provisioning');
  const row = await ctx.db.insertInto('provisioning_keys').values({
    fleet_id: fleet.id, name: request.name ?? null, key_hash: hashKey(key), created_at: isoNow(ctx),
    expires_at: request.expiresAt ? new Date(request.expiresAt).toISOString() : null, revoked_at: null,
  }).returningAll().executeTakeFirstOrThrow();
  return { ...provisioningKeyJson(row, fleet.name), key };
}

export async function listProvisioningKeys(ctx: ServiceContext, caller: User, fleetName: string): Promise<ProvisioningKey[]> {
  const fleet = await fleetOf(ctx, caller, fleetName);
  const rows = await ctx.db.selectFrom('provisioning_keys').selectAll().where('fleet_id', '=', fleet.id).orderBy('id').execute();
  return rows.map((r) => provisioningKeyJson(r, fleet.name));
}

export async function revokeProvisioningKey(ctx: ServiceContext, caller: User, fleetName: string, id: number): Promise<void> {
  const fleet = await fleetOf(ctx, caller, fleetName, 'write');
  const result = await ctx.db.updateTable('provisioning_keys').set({ revoked_at: isoNow(ctx) })
    .where('id', '=', id).where('fleet_id', '=', fleet.id).where('revoked_at', 'is', null).executeTakeFirst();
  if (Number(result.numUpdatedRows) === 0) throw notFound(`provisioning key ${id}`);
}

/**
 * A config.json for a new device of the fleet in balenaOS's format, with a new provisioning key
 * (BALENA-CLOUD-PROTOCOL.md "config.json on the device").
 */
export async function fleetConfig(ctx: ServiceContext, caller: User, fleetName: string, request: FleetConfigRequest): Promise<FleetConfig> {
  const fleet = await fleetOf(ctx, caller, fleetName, 'write');
  const fleetType = findDeviceType(fleet.device_type);
  const dt = request.deviceType === undefined ? fleetType : knownDeviceType(request.deviceType, 'deviceType');
  if (dt && fleetType && dt.arch !== fleetType.arch) throw badInput('deviceType', `device type '${dt.slug}' is ${dt.arch}, the fleet is ${fleetType.arch}`);
  const key = await createProvisioningKey(ctx, caller, fleetName, { name: 'config.json', ...(request.expiresAt ? { expiresAt: request.expiresAt } : {}) });
  return {
    applicationId: fleet.id,
    applicationName: fleet.name,
    deviceType: dt?.slug ?? fleet.device_type,
    apiKey: key.key,
    apiEndpoint: ctx.options.publicUrl,
    registryEndpoint: ctx.options.registryHost,
    listenPort: 48484,
    developmentMode: request.developmentMode ?? false,
    appUpdatePollInterval: 60_000,
  };
}
