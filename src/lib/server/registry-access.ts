/**
 * What the core gives the registry part (registry/contract.ts): who a token request comes from
 * (RegistryAuthenticate) and what they may do to a repository (RegistryAccessCheck, by
 * permissions.ts's rules).
 */
import type { FastifyRequest } from 'fastify';
import type { RegistryAccessCheck, RegistryAuthenticate, RegistrySubjectExists } from './registry/contract.js';
import { fleetUuidOfRepository, registryGrant, registryPrincipal, type Principal } from './permissions.js';
import { bearerToken } from './crypto.js';
import type { ServiceContext } from './services/context.js';
import { authenticateUser, checkPassword } from './services/users.js';
import { authenticateDevice } from './services/devices.js';

function credentials(request: FastifyRequest): { user?: string; secret: string } | undefined {
  const h = request.headers.authorization ?? '';
  const bearer = bearerToken(h);
  if (bearer) return { secret: bearer };
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h);
  if (!basic?.[1]) return undefined;
  const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), secret: decoded.slice(colon + 1) };
}

/**
 * Basic `d_<uuid>:<device key>` → that device (the uuid must be the key's); basic `<any>:<session
 * token or API key>` or Bearer → its user; basic `<email>:<password>` → that user.
 */
export function registryAuthenticate(ctx: ServiceContext): RegistryAuthenticate {
  return async (request) => {
    const c = credentials(request);
    if (!c) return undefined;
    if (c.user?.startsWith('d_') || (c.user === undefined && !/^sk[sa]_/.test(c.secret))) {
      const identity = await authenticateDevice(ctx, c.secret);
      if (!identity || (c.user !== undefined && c.user.slice(2) !== identity.principal.uuid)) return undefined;
      return { kind: 'device', deviceId: identity.principal.deviceId, uuid: identity.principal.uuid };
    }
    if (/^sk[sa]_/.test(c.secret)) {
      const found = await authenticateUser(ctx, c.secret);
      return found ? registryPrincipal(found.principal) : undefined;
    }
    if (c.user === undefined) return undefined;
    const row = await checkPassword(ctx, c.user, c.secret);
    return row ? { kind: 'user', userId: row.id, email: row.email } : undefined;
  };
}

export function registryAccess(ctx: ServiceContext): RegistryAccessCheck {
  return async (who, repository, actions) => {
    const fleetUuid = fleetUuidOfRepository(repository);
    const fleet = fleetUuid === undefined ? undefined : await ctx.db.selectFrom('fleets').select(['id', 'owner_id']).where('uuid', '=', fleetUuid).executeTakeFirst();
    let principal: Principal | undefined;
    if (who.kind === 'user') {
      principal = { kind: 'user', userId: who.userId, email: who.email, isAdmin: false };
    } else {
      // The device's fleet now (it may have moved since its token request began).
      const device = await ctx.db.selectFrom('devices').select(['id', 'uuid', 'fleet_id']).where('id', '=', who.deviceId).executeTakeFirst();
      if (device) principal = { kind: 'device', deviceId: device.id, uuid: device.uuid, fleetId: device.fleet_id };
    }
    if (!principal) return [];
    return registryGrant(principal, fleet ? { ownerId: fleet.owner_id, fleetId: fleet.id } : undefined, actions);
  };
}

/** `device:<uuid>` and `user:<id>` exist while their row does; any other subject (the server's own) is left to distribution. */
export function registrySubjectExists(ctx: ServiceContext): RegistrySubjectExists {
  return async (subject) => {
    const [kind, id = ''] = subject.split(/:(.*)/s);
    if (kind === 'device') return (await ctx.db.selectFrom('devices').select('id').where('uuid', '=', id).executeTakeFirst()) !== undefined;
    if (kind === 'user') return /^\d+$/.test(id) && (await ctx.db.selectFrom('users').select('id').where('id', '=', Number(id)).executeTakeFirst()) !== undefined;
    return true;
  };
}
