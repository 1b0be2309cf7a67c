/**
 * Devices: registration with a provisioning key, the poll of the target state (the hot path), the
 * state report, and a user's view and changes. A device key reaches only its own device.
 */
import type { Transaction, Updateable } from 'kysely';
import type { RegisterRequest, RegisterResponse, StateReportV3, TargetStateV3 } from '../../api/device-state.js';
import type { Device, UpdateDeviceRequest } from '../../api/resources.js';
import type { UpdateDownload } from '../../api/deltas.js';
import type { Database, DeviceRow, DevicesTable, FleetRow } from '../db/schema.js';
import { findDeviceType } from '../../device-types/device-types.js';
import { hashKey, sameHash } from '../crypto.js';
import { isUniqueViolation } from '../db/database.js';
import { assembleTarget, chooseRelease, type Composition, type ScopedVariable, type TargetRelease } from '../target-state.js';
import { DEFAULT_POLL_INTERVAL_MS, deviceStatus } from '../device-status.js';
import type { Principal } from '../permissions.js';
import { authorize, badInput, conflict, isoNow, notFound, parseJson, unauthorized, type ServiceContext } from './context.js';
import { knownDeviceType, fleetOf, latestRelease, pinnableRelease, pollIntervals } from './fleets.js';

type User = Extract<Principal, { kind: 'user' }>;
type DevicePrincipal = Extract<Principal, { kind: 'device' }>;

const PROVISIONING_HINT = "make a new config.json with 'skiff config generate --fleet FLEET'";

/** The provisioning key's principal, or a 401 for an unknown, revoked or expired key. */
export async function authenticateProvisioning(ctx: ServiceContext, key: string): Promise<Extract<Principal, { kind: 'provisioning' }>> {
  const hash = hashKey(key);
  const row = await ctx.db.selectFrom('provisioning_keys').select(['id', 'fleet_id', 'key_hash', 'expires_at', 'revoked_at']).where('key_hash', '=', hash).executeTakeFirst();
  if (!row || !sameHash(row.key_hash, hash)) throw unauthorized('unknown provisioning key', PROVISIONING_HINT);
  if (row.revoked_at !== null) throw unauthorized('the provisioning key was revoked', PROVISIONING_HINT);
  if (row.expires_at !== null && row.expires_at <= isoNow(ctx)) throw unauthorized('the provisioning key has expired', PROVISIONING_HINT);
  return { kind: 'provisioning', keyId: row.id, fleetId: row.fleet_id };
}

/**
 * Registers a device in the provisioning key's fleet. A uuid that exists is a 409, except when the
 * same device asks again with the same key (its first answer was lost): then it gets the same 201,
 * so a registration cut short by a crash can simply be retried.
 */
export async function registerDevice(ctx: ServiceContext, caller: Extract<Principal, { kind: 'provisioning' }>, request: RegisterRequest): Promise<RegisterResponse> {
  const fleet = await ctx.db.selectFrom('fleets').selectAll().where('id', '=', request.application ?? caller.fleetId).executeTakeFirst();
  if (!fleet) throw notFound(`fleet ${request.application ?? caller.fleetId}`);
  authorize(caller, 'register', { kind: 'fleet', ownerId: fleet.owner_id, fleetId: fleet.id }, `fleet ${fleet.id}`);
  const dt = knownDeviceType(request.device_type, 'device_type');
  const fleetType = findDeviceType(fleet.device_type);
  if (fleetType && dt.arch !== fleetType.arch) throw badInput('device_type', `device type '${dt.slug}' is ${dt.arch}, the fleet is ${fleetType.arch}`);
  const keyHash = hashKey(request.api_key);
  const answer = (id: number): RegisterResponse => ({ id, uuid: request.uuid, api_key: request.api_key, device_type: dt.slug });
  const existing = await ctx.db.selectFrom('devices').select(['id', 'key_hash', 'fleet_id']).where('uuid', '=', request.uuid).executeTakeFirst();
  if (existing) {
    if (existing.fleet_id === fleet.id && sameHash(existing.key_hash, keyHash)) return answer(existing.id);
    throw conflict(`a device with uuid ${request.uuid} is registered`);
  }
  try {
    const row = await ctx.db.insertInto('devices').values({
      uuid: request.uuid, key_hash: keyHash, fleet_id: fleet.id, name: request.uuid.slice(0, 7), device_type: dt.slug,
      pinned_release_id: null, state_version: 1, last_seen: null, created_at: isoNow(ctx),
      status: null, os_version: request.os_version ?? null, os_variant: request.os_variant ?? null, supervisor_version: request.supervisor_version ?? null,
      ip_address: null, mac_address: request.mac_address ?? null, api_port: null, provisioning_state: null, running_release: null,
      update_status: null, update_error: null, rolled_back_from: null, services: '[]',
      memory_usage: null, memory_total: null, storage_usage: null, storage_total: null, cpu_usage: null, cpu_temp: null,
    }).returning('id').executeTakeFirstOrThrow();
    return answer(row.id);
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a device with uuid ${request.uuid} is registered, or its key is taken`);
    throw err;
  }
}

/** What the poll needs, found with one indexed lookup by the key's hash. */
export interface PollIdentity {
  principal: DevicePrincipal;
  /** Changes whenever the device's target may have changed: `"<device>.<version>.<fleet>.<version>"`. */
  etag: string;
  /** The device's part of its target, read in the same lookup as the ETag's versions. */
  device: TargetDevice;
}

/** A device as its target's assembly needs it, with its fleet's state version (the fleet cache's key). */
export interface TargetDevice {
  id: number;
  uuid: string;
  name: string;
  pinned_release_id: number | null;
  fleet_id: number;
  fleet_version: number;
}

/** The device a device key belongs to, with its ETag; undefined for an unknown key (the device was removed). */
export async function authenticateDevice(ctx: ServiceContext, key: string): Promise<PollIdentity | undefined> {
  const hash = hashKey(key);
  const row = await ctx.hot.deviceByKeyHash(hash);
  if (!row || !sameHash(row.key_hash, hash)) return undefined;
  return {
    principal: { kind: 'device', deviceId: row.id, uuid: row.uuid, fleetId: row.fleet_id },
    etag: `"${row.id}.${row.device_version}.${row.fleet_id}.${row.fleet_version}"`,
    device: { id: row.id, uuid: row.uuid, name: row.name, pinned_release_id: row.pinned_release_id, fleet_id: row.fleet_id, fleet_version: row.fleet_version },
  };
}

/** A device's own resource, for permissions.ts: another device's uuid is not found. */
function ownDevice(caller: DevicePrincipal, uuid: string): void {
  const deviceId = caller.uuid === uuid ? caller.deviceId : -1;
  authorize(caller, 'deviceState', { kind: 'device', ownerId: -1, fleetId: caller.fleetId, deviceId }, `device ${uuid}`);
}

/**
 * The poll: notes the device as seen (written in the next batch), then answers `notModified` when
 * `ifNoneMatch` is the current ETag, else the assembled target.
 */
export async function pollTarget(ctx: ServiceContext, identity: PollIdentity, uuid: string, ifNoneMatch: string | undefined): Promise<{ notModified: true; etag: string } | { notModified: false; etag: string; body: TargetStateV3 }> {
  ownDevice(identity.principal, uuid);
  ctx.lastSeen.note(identity.principal.deviceId);
  if (ifNoneMatch !== undefined && ifNoneMatch.split(',').some((t) => t.trim().replace(/^W\//, '') === identity.etag)) return { notModified: true, etag: identity.etag };
  return { notModified: false, etag: identity.etag, body: await targetFor(ctx, identity.device) };
}

/** Assembles a device's target from the database. */
export async function targetOf(ctx: ServiceContext, deviceId: number): Promise<TargetStateV3> {
  const device = await ctx.db.selectFrom('devices').innerJoin('fleets', 'fleets.id', 'devices.fleet_id')
    .select(['devices.id', 'devices.uuid', 'devices.name', 'devices.pinned_release_id', 'devices.fleet_id', 'fleets.state_version as fleet_version'])
    .where('devices.id', '=', deviceId).executeTakeFirstOrThrow();
  return targetFor(ctx, device);
}

/** Assembles the target of `device`: its own variables from the database, the rest from its fleet's part. */
async function targetFor(ctx: ServiceContext, device: TargetDevice): Promise<TargetStateV3> {
  const [part, own] = await Promise.all([fleetPart(ctx, device.fleet_id, device.fleet_version), ctx.hot.deviceVariables(device.id)]);
  const releaseId = chooseRelease({ device: device.pinned_release_id, fleet: part.fleet.pinned_release_id, latest: part.latestId });
  const scoped: ScopedVariable[] = own.map((v) => ({ level: 'device', service: v.service === '' ? null : v.service, name: v.name, value: v.value }));
  return assembleTarget({
    device: { uuid: device.uuid, name: device.name },
    fleet: part.fleet,
    release: releaseId === undefined ? undefined : await part.release(releaseId),
    variables: [...part.variables, ...scoped],
    registryHost: ctx.options.registryHost,
  });
}

/**
 * The part of a target every device of a fleet shares at one fleet state version: the fleet, the
 * release it tracks, its images and composition, the fleet-level variables. Every change to any of
 * them bumps the fleet's version in the same transaction (fleets.ts touchFleet), and the version
 * comes from the database with each poll, so an entry is right on every replica for as long as
 * its version is the fleet's.
 */
interface FleetPart {
  fleet: { id: number; uuid: string; name: string; pinned_release_id: number | null };
  /** The latest successful final valid release, when the fleet is not pinned (else unused). */
  latestId: number | null;
  variables: readonly ScopedVariable[];
  /** A release of the fleet by id (the fleet's own, or a device's pin), read once per version. */
  release(releaseId: number): Promise<TargetRelease | undefined>;
}

/** At most this many fleets' parts are kept (the oldest entry goes first); each is a few kB. */
const FLEET_CACHE_SIZE = 1000;

/** One cache per service context (per server), not per module: tests run many servers in one process. */
const fleetCaches = new WeakMap<ServiceContext, Map<number, { version: number; part: Promise<FleetPart> }>>();

/**
 * The fleet's part at `version`, read once for all its devices: after a fleet-wide change the
 * fleet's devices all fetch their new target within one poll interval, and without this each fetch
 * re-read the same release, images and variables. Concurrent misses share one read. The data is
 * read after `version` was, so it is never older than the version it is kept under (at worst newer,
 * as an uncached read would be).
 */
function fleetPart(ctx: ServiceContext, fleetId: number, version: number): Promise<FleetPart> {
  let cache = fleetCaches.get(ctx);
  if (!cache) fleetCaches.set(ctx, (cache = new Map()));
  const cached = cache.get(fleetId);
  if (cached && cached.version === version) return cached.part;
  const part = loadFleetPart(ctx, fleetId);
  // A device whose lookup ran before a change must not put the older version back in place.
  if (!cached || version > cached.version) {
    const entries = cache;
    entries.delete(fleetId);
    if (entries.size >= FLEET_CACHE_SIZE) {
      const oldest = entries.keys().next();
      if (!oldest.done) entries.delete(oldest.value);
    }
    entries.set(fleetId, { version, part });
    // A failed read (the database away) is not kept: the next poll tries again.
    part.catch(() => {
      if (entries.get(fleetId)?.part === part) entries.delete(fleetId);
    });
  }
  return part;
}

async function loadFleetPart(ctx: ServiceContext, fleetId: number): Promise<FleetPart> {
  const fleet = await ctx.db.selectFrom('fleets').select(['id', 'uuid', 'name', 'pinned_release_id']).where('id', '=', fleetId).executeTakeFirstOrThrow();
  const [latest, variables] = await Promise.all([
    fleet.pinned_release_id === null ? latestRelease(ctx.db, fleet.id) : Promise.resolve(undefined),
    ctx.db.selectFrom('variables').select(['service', 'name', 'value']).where('fleet_id', '=', fleet.id).where('device_id', 'is', null).execute(),
  ]);
  const releases = new Map<number, Promise<TargetRelease | undefined>>();
  return {
    fleet,
    latestId: latest?.id ?? null,
    variables: variables.map((v) => ({ level: 'fleet', service: v.service === '' ? null : v.service, name: v.name, value: v.value })),
    release: (releaseId) => {
      let release = releases.get(releaseId);
      if (!release) {
        release = loadTargetRelease(ctx, releaseId);
        releases.set(releaseId, release);
        release.catch(() => releases.delete(releaseId));
      }
      return release;
    },
  };
}

async function loadTargetRelease(ctx: ServiceContext, releaseId: number): Promise<TargetRelease | undefined> {
  const release = await ctx.db.selectFrom('releases').select(['id', 'commit', 'composition', 'status']).where('id', '=', releaseId).executeTakeFirst();
  // Only a successful release (every image checked in the registry) ever reaches a device.
  if (!release || release.status !== 'success') return undefined;
  const images = await ctx.db.selectFrom('release_images').select(['id', 'service', 'repository', 'digest']).where('release_id', '=', releaseId).execute();
  return {
    id: release.id, commit: release.commit, composition: parseJson<Composition>(release.composition, { services: {} }),
    images: images.flatMap((i) => (i.digest === null ? [] : [{ id: i.id, service: i.service, repository: i.repository, digest: i.digest }])),
  };
}

/** Only the fields the device sent change (balena's devices send what changed since the last report). */
function definedOnly<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** Stores a device's report (one UPDATE); the body was validated by the route's schema. */
export async function storeReport(ctx: ServiceContext, identity: PollIdentity, report: StateReportV3): Promise<void> {
  const entries = Object.entries(report);
  const [uuid, r] = entries[0] ?? [];
  if (uuid === undefined || r === undefined) throw badInput('body', 'the report names no device');
  ownDevice(identity.principal, uuid);
  ctx.lastSeen.note(identity.principal.deviceId);
  const changes: Updateable<DevicesTable> = definedOnly({
    status: r.status, os_version: r.os_version, os_variant: r.os_variant, supervisor_version: r.supervisor_version,
    ip_address: r.ip_address, mac_address: r.mac_address, api_port: r.api_port, provisioning_state: r.provisioning_state,
    memory_usage: r.memory_usage, memory_total: r.memory_total, storage_usage: r.storage_usage, storage_total: r.storage_total,
    cpu_usage: r.cpu_usage, cpu_temp: r.cpu_temp, update_error: r.update_error,
  });
  if (r.rolled_back_from !== undefined) changes.rolled_back_from = r.rolled_back_from === null ? null : JSON.stringify(r.rolled_back_from);
  if (r.update_download !== undefined) changes.update_download = r.update_download === null ? null : JSON.stringify(r.update_download);
  for (const app of Object.values(r.apps ?? {})) {
    if (app.release_uuid !== undefined) changes.running_release = app.release_uuid;
    const releases = Object.entries(app.releases ?? {});
    const [, release] = releases.find(([commit]) => commit === app.release_uuid) ?? releases[releases.length - 1] ?? [];
    if (release?.update_status !== undefined) changes.update_status = release.update_status;
    if (release?.services !== undefined) {
      changes.services = JSON.stringify(Object.entries(release.services).map(([name, s]) => ({ name, status: s.status, image: s.image ?? null, downloadProgress: s.download_progress ?? null })));
    }
  }
  if (Object.keys(changes).length === 0) return;
  // Through the devices' write pool: no wait for the commit's fsync (see HotQueries.deviceWrites).
  await ctx.hot.deviceWrites.updateTable('devices').set(changes).where('id', '=', identity.principal.deviceId).execute();
}

// --- a user's view -----------------------------------------------------------------------------

/** The caller's device by uuid or a unique prefix of 7+ characters, with its fleet; 404 otherwise. */
export async function deviceOf(ctx: ServiceContext, caller: User, uuid: string, action: 'read' | 'write' = 'read', db: Transaction<Database> | ServiceContext['db'] = ctx.db): Promise<{ device: DeviceRow; fleet: FleetRow }> {
  const prefix = uuid.toLowerCase();
  if (!/^[0-9a-f]{7,64}$/.test(prefix)) throw notFound(`device ${uuid}`);
  const rows = await db.selectFrom('devices').innerJoin('fleets', 'fleets.id', 'devices.fleet_id')
    .selectAll('devices').select(['fleets.owner_id'])
    .where('fleets.owner_id', '=', caller.userId)
    .where((eb) => (prefix.length >= 32 ? eb('devices.uuid', '=', prefix) : eb('devices.uuid', 'like', `${prefix}%`))).limit(2).execute();
  const row = rows.find((r) => r.uuid === prefix) ?? (rows.length === 1 ? rows[0] : undefined);
  if (!row) throw rows.length > 1 ? badInput('uuid', `'${uuid}' matches more than one device: give more of the uuid`) : notFound(`device ${uuid}`);
  authorize(caller, action, { kind: 'device', ownerId: row.owner_id, fleetId: row.fleet_id, deviceId: row.id }, `device ${uuid}`);
  const fleet = await db.selectFrom('fleets').selectAll().where('id', '=', row.fleet_id).executeTakeFirstOrThrow();
  const { owner_id: _owner, ...device } = row;
  return { device, fleet };
}

/** Devices of one fleet as the API shows them: a fixed number of queries however many devices. */
async function devicesJson(ctx: ServiceContext, fleet: FleetRow, devices: readonly DeviceRow[]): Promise<Device[]> {
  if (devices.length === 0) return [];
  const intervals = await pollIntervals(ctx.db, fleet.id, devices.map((d) => d.id));
  const ids = [...new Set([fleet.pinned_release_id, ...devices.map((d) => d.pinned_release_id)].filter((x): x is number => x !== null))];
  const commits = new Map<number, string>();
  for (let i = 0; i < ids.length; i += 500) {
    for (const r of await ctx.db.selectFrom('releases').select(['id', 'commit']).where('id', 'in', ids.slice(i, i + 500)).execute()) commits.set(r.id, r.commit);
  }
  const commitOf = (id: number | null) => (id === null ? null : commits.get(id) ?? null);
  const latest = fleet.pinned_release_id === null ? await latestRelease(ctx.db, fleet.id) : undefined;
  const now = ctx.clock().getTime();
  const split = (s: string | null) => (s ?? '').split(/\s+/).filter(Boolean);
  return devices.map((device) => {
    const lastSeen = ctx.lastSeen.unwritten(device.id) ?? device.last_seen;
    return {
      id: device.id, uuid: device.uuid, name: device.name, fleet: fleet.name, deviceType: device.device_type,
      status: deviceStatus(lastSeen ? Date.parse(lastSeen) : undefined, intervals.get(device.id) ?? DEFAULT_POLL_INTERVAL_MS, now),
      lastSeen,
      runningRelease: device.running_release,
      targetRelease: commitOf(device.pinned_release_id) ?? commitOf(fleet.pinned_release_id) ?? latest?.commit ?? null,
      pinnedRelease: commitOf(device.pinned_release_id),
      updateStatus: device.update_status, updateError: device.update_error,
      rolledBackFrom: parseJson<{ commit: string; reason: string } | null>(device.rolled_back_from, null),
      updateDownload: parseJson<UpdateDownload | null>(device.update_download, null),
      ipAddresses: split(device.ip_address), macAddresses: split(device.mac_address),
      osVersion: device.os_version, agentVersion: device.supervisor_version,
      services: parseJson(device.services, []),
      memoryUsage: device.memory_usage, memoryTotal: device.memory_total, storageUsage: device.storage_usage, storageTotal: device.storage_total,
      cpuUsage: device.cpu_usage, cpuTemp: device.cpu_temp, createdAt: device.created_at,
    };
  });
}

async function deviceJson(ctx: ServiceContext, device: DeviceRow, fleet: FleetRow): Promise<Device> {
  const [json] = await devicesJson(ctx, fleet, [device]);
  if (!json) throw new Error(`device ${device.uuid} vanished`);
  return json;
}

export async function getDevice(ctx: ServiceContext, caller: User, uuid: string): Promise<Device> {
  const { device, fleet } = await deviceOf(ctx, caller, uuid);
  return deviceJson(ctx, device, fleet);
}

/** The caller's devices, of one fleet when `fleetName` is given. */
export async function listDevices(ctx: ServiceContext, caller: User, fleetName?: string): Promise<Device[]> {
  const fleets = fleetName === undefined
    ? await ctx.db.selectFrom('fleets').selectAll().where('owner_id', '=', caller.userId).orderBy('name').execute()
    : [await fleetOf(ctx, caller, fleetName)];
  const out: Device[] = [];
  for (const fleet of fleets) {
    const devices = await ctx.db.selectFrom('devices').selectAll().where('fleet_id', '=', fleet.id).orderBy('id').execute();
    out.push(...await devicesJson(ctx, fleet, devices));
  }
  return out;
}

/** Renames, moves (to the caller's fleet of the same architecture) and/or pins a device. */
export async function updateDevice(ctx: ServiceContext, caller: User, uuid: string, request: UpdateDeviceRequest): Promise<Device> {
  const found = await ctx.db.transaction().execute(async (tx) => {
    const { device, fleet } = await deviceOf(ctx, caller, uuid, 'write', tx);
    const changes: { name?: string; fleet_id?: number; pinned_release_id?: number | null } = {};
    let target = fleet;
    if (request.name !== undefined) changes.name = request.name;
    if (request.fleet !== undefined && request.fleet !== fleet.name) {
      target = await fleetOf(ctx, caller, request.fleet, 'write', tx);
      const from = findDeviceType(device.device_type)?.arch;
      const to = findDeviceType(target.device_type)?.arch;
      if (from !== to) throw badInput('fleet', `fleet '${target.name}' is ${to ?? 'unknown'}, the device is ${from ?? 'unknown'}`);
      changes.fleet_id = target.id;
      // A pin names a release of the old fleet: it cannot follow the device.
      if (request.pinnedRelease === undefined) changes.pinned_release_id = null;
    }
    if (request.pinnedRelease !== undefined) {
      changes.pinned_release_id = request.pinnedRelease === null ? null : (await pinnableRelease(tx, target.id, request.pinnedRelease, 'pinnedRelease')).id;
    }
    const changed = Object.keys(changes).length > 0;
    if (changed) {
      await tx.updateTable('devices').set(changes).set((eb) => ({ state_version: eb('state_version', '+', 1) })).where('id', '=', device.id).execute();
    }
    return { device: await tx.selectFrom('devices').selectAll().where('id', '=', device.id).executeTakeFirstOrThrow(), fleet: target, changed };
  });
  // By id, not fleet: a moved device's socket learns its new fleet from this event.
  if (found.changed) await ctx.events.publish({ topic: 'target', deviceIds: [found.device.id] });
  return deviceJson(ctx, found.device, found.fleet);
}

/** Removes a device: its key stops working with the next request (every request looks the key up). */
export async function removeDevice(ctx: ServiceContext, caller: User, uuid: string): Promise<void> {
  const { device } = await deviceOf(ctx, caller, uuid, 'write');
  await ctx.db.deleteFrom('devices').where('id', '=', device.id).execute();
  // Its event socket is closed (the replica holding it finds the device gone).
  await ctx.events.publish({ topic: 'target', deviceIds: [device.id] });
}
