/**
 * Environment and config variables (fleet or device, optionally one service) and tags (fleet,
 * device or release). A variable change bumps the state version of what it is on, so the devices
 * concerned get a new target at their next poll.
 */
import type { SetTagRequest, SetVariableRequest, Tag, TagScope, Variable, VariableScope } from '../../api/resources.js';
import type { Principal } from '../permissions.js';
import { isConfigVariable } from '../target-state.js';
import { badInput, notFound, type ServiceContext } from './context.js';
import { fleetOf, touchFleet } from './fleets.js';
import { deviceOf } from './devices.js';
import { releaseOf } from './releases.js';

type User = Extract<Principal, { kind: 'user' }>;

interface ResolvedScope {
  fleetId: number | null;
  deviceId: number | null;
  fleetName: string | null;
  deviceUuid: string | null;
}

async function resolveScope(ctx: ServiceContext, caller: User, scope: { fleet?: string | undefined; device?: string | undefined }, action: 'read' | 'write'): Promise<ResolvedScope> {
  if ((scope.fleet === undefined) === (scope.device === undefined)) throw badInput('fleet', 'give exactly one of fleet and device');
  if (scope.fleet !== undefined) {
    const fleet = await fleetOf(ctx, caller, scope.fleet, action);
    return { fleetId: fleet.id, deviceId: null, fleetName: fleet.name, deviceUuid: null };
  }
  const { device } = await deviceOf(ctx, caller, scope.device ?? '', action);
  return { fleetId: null, deviceId: device.id, fleetName: null, deviceUuid: device.uuid };
}

function variableJson(row: { id: number; name: string; value: string; service: string }, scope: ResolvedScope): Variable {
  return {
    id: row.id, name: row.name, value: row.value, fleet: scope.fleetName, device: scope.deviceUuid,
    service: row.service === '' ? null : row.service, kind: isConfigVariable(row.name) ? 'config' : 'env',
  };
}

/** The variables of one scope; with `service`, only that service's. */
export async function listVariables(ctx: ServiceContext, caller: User, scope: VariableScope): Promise<Variable[]> {
  const s = await resolveScope(ctx, caller, scope, 'read');
  let q = ctx.db.selectFrom('variables').select(['id', 'name', 'value', 'service']);
  q = s.fleetId !== null ? q.where('fleet_id', '=', s.fleetId) : q.where('device_id', '=', s.deviceId ?? -1);
  if (scope.service !== undefined) q = q.where('service', '=', scope.service);
  const rows = await q.orderBy('service').orderBy('name').execute();
  return rows.map((r) => variableJson(r, s));
}

/** Sets (creates or replaces) a variable. A config variable (BALENA_/SKIFF_) has no service scope. */
export async function setVariable(ctx: ServiceContext, caller: User, request: SetVariableRequest): Promise<Variable> {
  if (request.service !== undefined && isConfigVariable(request.name)) throw badInput('service', `${request.name} is a config variable: it applies to the whole device, not one service`);
  const s = await resolveScope(ctx, caller, request, 'write');
  const service = request.service ?? '';
  const row = await ctx.db.transaction().execute(async (tx) => {
    let q = tx.selectFrom('variables').select('id').where('service', '=', service).where('name', '=', request.name);
    q = s.fleetId !== null ? q.where('fleet_id', '=', s.fleetId).where('device_id', 'is', null) : q.where('device_id', '=', s.deviceId ?? -1).where('fleet_id', 'is', null);
    const existing = await q.executeTakeFirst();
    const saved = existing
      ? await tx.updateTable('variables').set({ value: request.value }).where('id', '=', existing.id).returning(['id', 'name', 'value', 'service']).executeTakeFirstOrThrow()
      : await tx.insertInto('variables').values({ fleet_id: s.fleetId, device_id: s.deviceId, service, name: request.name, value: request.value }).returning(['id', 'name', 'value', 'service']).executeTakeFirstOrThrow();
    await touchScope(tx, s);
    return saved;
  });
  await announce(ctx, s);
  return variableJson(row, s);
}

async function touchScope(tx: ServiceContext['db'], s: ResolvedScope): Promise<void> {
  if (s.fleetId !== null) await touchFleet(tx, s.fleetId);
  else await tx.updateTable('devices').set((eb) => ({ state_version: eb('state_version', '+', 1) })).where('id', '=', s.deviceId ?? -1).execute();
}

/** Removes a variable; 404 when the scope has none of that name. */
export async function removeVariable(ctx: ServiceContext, caller: User, scope: VariableScope & { name: string }): Promise<void> {
  const s = await resolveScope(ctx, caller, scope, 'write');
  await ctx.db.transaction().execute(async (tx) => {
    let q = tx.deleteFrom('variables').where('service', '=', scope.service ?? '').where('name', '=', scope.name);
    q = s.fleetId !== null ? q.where('fleet_id', '=', s.fleetId) : q.where('device_id', '=', s.deviceId ?? -1);
    const result = await q.executeTakeFirst();
    if (Number(result.numDeletedRows) === 0) throw notFound(`variable ${scope.name}`);
    await touchScope(tx, s);
  });
  await announce(ctx, s);
}

/** Tells the devices concerned to fetch their target now (after the commit). */
async function announce(ctx: ServiceContext, s: ResolvedScope): Promise<void> {
  await ctx.events.publish(s.fleetId !== null ? { topic: 'target', fleetId: s.fleetId } : { topic: 'target', deviceIds: [s.deviceId ?? -1] });
}

// --- tags ----------------------------------------------------------------------------------------

interface TagTarget { column: 'fleet_id' | 'device_id' | 'release_id'; id: number; label: Pick<Tag, 'fleet' | 'device' | 'release'> }

async function resolveTagScope(ctx: ServiceContext, caller: User, scope: TagScope, action: 'read' | 'write'): Promise<TagTarget> {
  const given = [scope.fleet, scope.device, scope.release].filter((x) => x !== undefined).length;
  if (given !== 1) throw badInput('fleet', 'give exactly one of fleet, device and release');
  if (scope.fleet !== undefined) {
    const f = await fleetOf(ctx, caller, scope.fleet, action);
    return { column: 'fleet_id', id: f.id, label: { fleet: f.name, device: null, release: null } };
  }
  if (scope.device !== undefined) {
    const { device } = await deviceOf(ctx, caller, scope.device, action);
    return { column: 'device_id', id: device.id, label: { fleet: null, device: device.uuid, release: null } };
  }
  const { release } = await releaseOf(ctx, caller, scope.release ?? '', action);
  return { column: 'release_id', id: release.id, label: { fleet: null, device: null, release: release.commit } };
}

export async function listTags(ctx: ServiceContext, caller: User, scope: TagScope): Promise<Tag[]> {
  const t = await resolveTagScope(ctx, caller, scope, 'read');
  const rows = await ctx.db.selectFrom('tags').select(['key', 'value']).where(t.column, '=', t.id).orderBy('key').execute();
  return rows.map((r) => ({ ...r, ...t.label }));
}

export async function setTag(ctx: ServiceContext, caller: User, request: SetTagRequest): Promise<Tag> {
  const t = await resolveTagScope(ctx, caller, request, 'write');
  await ctx.db.transaction().execute(async (tx) => {
    const existing = await tx.selectFrom('tags').select('id').where(t.column, '=', t.id).where('key', '=', request.key).executeTakeFirst();
    if (existing) await tx.updateTable('tags').set({ value: request.value }).where('id', '=', existing.id).execute();
    else await tx.insertInto('tags').values({ fleet_id: null, device_id: null, release_id: null, [t.column]: t.id, key: request.key, value: request.value }).execute();
  });
  return { key: request.key, value: request.value, ...t.label };
}

export async function removeTag(ctx: ServiceContext, caller: User, scope: TagScope & { key: string }): Promise<void> {
  const t = await resolveTagScope(ctx, caller, scope, 'write');
  const result = await ctx.db.deleteFrom('tags').where(t.column, '=', t.id).where('key', '=', scope.key).executeTakeFirst();
  if (Number(result.numDeletedRows) === 0) throw notFound(`tag ${scope.key}`);
}
