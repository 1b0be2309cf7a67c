/**
 * Who may do what to which object: one pure decision, used by every service after it loaded the
 * object, and by the registry's token endpoint. An object of another tenant is `notFound`, never
 * `forbidden`: a 403 would tell the caller it exists (CLOUD.md principle 7).
 */
import type { RegistryAction, RegistryPrincipal } from './registry/contract.js';

/** The caller of a request, as authentication established it. */
export type Principal =
  | { kind: 'user'; userId: number; email: string; isAdmin: boolean }
  | { kind: 'device'; deviceId: number; uuid: string; fleetId: number }
  | { kind: 'provisioning'; keyId: number; fleetId: number };

/** The object a request touches, with the facts the rules need (owner and fleet). */
export type Resource =
  | { kind: 'users' }
  | { kind: 'apiKey'; userId: number }
  | { kind: 'fleet'; ownerId: number; fleetId: number }
  | { kind: 'device'; ownerId: number; fleetId: number; deviceId: number }
  | { kind: 'release'; ownerId: number; fleetId: number };

/**
 * - `read`/`write`: a user's view and changes (a fleet's releases, variables, keys included);
 * - `register`: a provisioning key adding a device to its fleet;
 * - `deviceState`: a device reading its target or writing its report;
 * - `pull`/`push`: registry access to a fleet's images (on a `fleet` resource).
 */
export type Action = 'read' | 'write' | 'register' | 'deviceState' | 'pull' | 'push';

export type Decision = 'allow' | 'notFound' | 'forbidden';

function ownerOf(resource: Resource): number | undefined {
  return resource.kind === 'fleet' || resource.kind === 'device' || resource.kind === 'release' ? resource.ownerId : undefined;
}

/** The one rule table. Pure; see test/unit/server-permissions.test.ts for the cases. */
export function decide(principal: Principal, action: Action, resource: Resource): Decision {
  switch (principal.kind) {
    case 'user': {
      if (resource.kind === 'users') return principal.isAdmin ? (action === 'read' || action === 'write' ? 'allow' : 'forbidden') : 'notFound';
      if (resource.kind === 'apiKey') return resource.userId === principal.userId ? (action === 'read' || action === 'write' ? 'allow' : 'forbidden') : 'notFound';
      // Admins manage users, not other people's fleets: tenants stay apart for everyone.
      if (ownerOf(resource) !== principal.userId) return 'notFound';
      if (action === 'read' || action === 'write') return 'allow';
      if ((action === 'pull' || action === 'push') && resource.kind === 'fleet') return 'allow';
      return 'forbidden';
    }
    case 'device': {
      if (resource.kind === 'device') {
        if (resource.deviceId !== principal.deviceId) return 'notFound';
        return action === 'deviceState' ? 'allow' : 'forbidden';
      }
      if (resource.kind === 'fleet' || resource.kind === 'release') {
        if (resource.fleetId !== principal.fleetId) return 'notFound';
        return action === 'pull' ? 'allow' : 'forbidden';
      }
      return 'notFound';
    }
    case 'provisioning': {
      if (resource.kind === 'fleet' && resource.fleetId === principal.fleetId) return action === 'register' ? 'allow' : 'forbidden';
      return 'notFound';
    }
  }
}

/**
 * The registry actions `principal` may do on a fleet's repository: the subset of `requested` that
 * {@link decide} allows. `fleet` is undefined when the repository names no fleet that exists.
 */
export function registryGrant(principal: Principal, fleet: { ownerId: number; fleetId: number } | undefined, requested: readonly RegistryAction[]): RegistryAction[] {
  if (!fleet) return [];
  const resource: Resource = { kind: 'fleet', ...fleet };
  return [...new Set(requested)].filter((a) => decide(principal, a, resource) === 'allow');
}

/** The registry contract's principal for ours (provisioning keys get no registry access). */
export function registryPrincipal(p: Principal): RegistryPrincipal | undefined {
  if (p.kind === 'user') return { kind: 'user', userId: p.userId, email: p.email };
  if (p.kind === 'device') return { kind: 'device', deviceId: p.deviceId, uuid: p.uuid };
  return undefined;
}

/** The fleet uuid a repository `<fleet uuid>/<service>` names, or undefined for another shape. */
export function fleetUuidOfRepository(repository: string): string | undefined {
  const m = /^([0-9a-f]{32})\/[a-z0-9][a-z0-9_.-]*$/.exec(repository);
  return m?.[1];
}
