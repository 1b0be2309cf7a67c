/**
 * Device public URLs (issue 11; api/tunnel.ts): whether the server serves port 80 of a device to
 * anyone at `<public URL>/d/<uuid>/` (or `<uuid>.<--public-url-domain>`). A fleet has a default
 * (off until turned on); a device may override it either way, or follow its fleet again (null).
 */
import type { DevicePublicUrl, FleetPublicUrl } from '../../api/tunnel.js';
import { PUBLIC_URL_PREFIX } from '../../api/tunnel.js';
import { SkiffError } from '../../errors/errors.js';
import type { Principal } from '../permissions.js';
import type { ServiceContext } from './context.js';
import { deviceOf } from './devices.js';
import { fleetOf } from './fleets.js';

type User = Extract<Principal, { kind: 'user' }>;

/** A device uuid as the proxy takes it: the whole uuid, lower-case hex (no prefixes: a public URL is exact). */
export const PUBLIC_UUID = /^[0-9a-f]{7,64}$/;

/**
 * `--public-url-domain` checked and normalised (lower case, no trailing dot).
 * @throws SkiffError usage when it is not a DNS name (`devices.example.com`, `localhost`)
 */
export function parsePublicUrlDomain(value: string): string {
  const domain = value.trim().toLowerCase().replace(/\.$/, '');
  const label = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
  // A uuid label (up to 64) and a dot must still fit in a 253-character name.
  if (domain.length > 180 || !new RegExp(`^${label}(?:\\.${label})*$`).test(domain)) {
    throw new SkiffError('usage', `--public-url-domain '${value}' is not a DNS name`, { hint: 'e.g. --public-url-domain devices.example.com (with a wildcard DNS record *.devices.example.com pointing at the server)' });
  }
  return domain;
}

/** The public URL of device `uuid`: `<public URL>/d/<uuid>/`, or `<scheme>://<uuid>.<domain>[:port]/` with a domain. */
export function publicUrlOf(options: Pick<ServiceContext['options'], 'publicUrl' | 'publicUrlDomain'>, uuid: string): string {
  const base = new URL(options.publicUrl);
  if (options.publicUrlDomain === undefined) return `${base.origin}${base.pathname.replace(/\/+$/, '')}${PUBLIC_URL_PREFIX}${uuid}/`;
  return `${base.protocol}//${uuid}.${options.publicUrlDomain}${base.port === '' ? '' : `:${base.port}`}/`;
}

const asSetting = (v: number | null): boolean | null => (v === null ? null : v !== 0);

function deviceAnswer(ctx: ServiceContext, uuid: string, device: number | null, fleet: number): DevicePublicUrl {
  const deviceSetting = asSetting(device);
  const fleetSetting = fleet !== 0;
  return { device: uuid, enabled: deviceSetting ?? fleetSetting, deviceSetting, fleetSetting, url: publicUrlOf(ctx.options, uuid) };
}

/**
 * The caller's device's public URL and whether it is served.
 * @throws SkiffError notFound (not the caller's device)
 */
export async function getDevicePublicUrl(ctx: ServiceContext, caller: User, uuid: string): Promise<DevicePublicUrl> {
  const { device, fleet } = await deviceOf(ctx, caller, uuid);
  return deviceAnswer(ctx, device.uuid, device.public_url, fleet.public_url);
}

/**
 * Turns the caller's device's public URL on or off, or back to its fleet's default (null).
 * @throws SkiffError notFound (not the caller's device), forbidden (read-only key)
 */
export async function setDevicePublicUrl(ctx: ServiceContext, caller: User, uuid: string, enabled: boolean | null): Promise<DevicePublicUrl> {
  const { device, fleet } = await deviceOf(ctx, caller, uuid, 'write');
  const value = enabled === null ? null : enabled ? 1 : 0;
  await ctx.db.updateTable('devices').set({ public_url: value }).where('id', '=', device.id).execute();
  return deviceAnswer(ctx, device.uuid, value, fleet.public_url);
}

/**
 * The caller's fleet's default for its devices' public URLs.
 * @throws SkiffError notFound (not the caller's fleet)
 */
export async function getFleetPublicUrl(ctx: ServiceContext, caller: User, name: string): Promise<FleetPublicUrl> {
  const fleet = await fleetOf(ctx, caller, name);
  return { fleet: fleet.name, enabled: fleet.public_url !== 0 };
}

/**
 * Sets the caller's fleet's default; devices with their own setting keep it.
 * @throws SkiffError notFound (not the caller's fleet), forbidden (read-only key)
 */
export async function setFleetPublicUrl(ctx: ServiceContext, caller: User, name: string, enabled: boolean): Promise<FleetPublicUrl> {
  const fleet = await fleetOf(ctx, caller, name, 'write');
  await ctx.db.updateTable('fleets').set({ public_url: enabled ? 1 : 0 }).where('id', '=', fleet.id).execute();
  return { fleet: fleet.name, enabled };
}

/**
 * The device a public request names, when its public URL is on; undefined for an unknown device
 * and a disabled one alike (the proxy answers both the same, so uuids cannot be probed).
 */
export async function publicDevice(ctx: ServiceContext, uuid: string): Promise<{ id: number; uuid: string } | undefined> {
  if (!PUBLIC_UUID.test(uuid)) return undefined;
  const row = await ctx.db.selectFrom('devices').innerJoin('fleets', 'fleets.id', 'devices.fleet_id')
    .select(['devices.id as id', 'devices.uuid as uuid', 'devices.public_url as device', 'fleets.public_url as fleet'])
    .where('devices.uuid', '=', uuid).executeTakeFirst();
  if (!row || !(asSetting(row.device) ?? row.fleet !== 0)) return undefined;
  return { id: row.id, uuid: row.uuid };
}

/**
 * Whether `sessionUuid` names an open public-URL session of device `deviceId`: how a replica
 * trusts a request another replica relayed (that one logs the session; an outsider cannot know
 * an open session's random id, so it cannot skip the log by claiming to be a replica).
 */
export async function isOpenPublicSession(ctx: ServiceContext, deviceId: number, sessionUuid: string): Promise<boolean> {
  if (!/^[0-9a-f]{32}$/.test(sessionUuid)) return false;
  const row = await ctx.db.selectFrom('device_sessions').select('id')
    .where('uuid', '=', sessionUuid).where('device_id', '=', deviceId).where('kind', '=', 'public-url').where('ended_at', 'is', null).executeTakeFirst();
  return row !== undefined;
}
