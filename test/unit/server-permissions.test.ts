import assert from 'node:assert/strict';
import { decide, fleetUuidOfRepository, registryGrant, type Action, type Decision, type Principal, type Resource } from '../../src/lib/server/permissions.js';

const alice: Principal = { kind: 'user', userId: 1, email: 'a@x', isAdmin: false };
const admin: Principal = { kind: 'user', userId: 9, email: 'admin@x', isAdmin: true };
const device: Principal = { kind: 'device', deviceId: 10, uuid: 'aaaaaaa', fleetId: 100 };
const provisioning: Principal = { kind: 'provisioning', keyId: 5, fleetId: 100 };

const aliceFleet: Resource = { kind: 'fleet', ownerId: 1, fleetId: 100 };
const bobFleet: Resource = { kind: 'fleet', ownerId: 2, fleetId: 200 };
const ownDevice: Resource = { kind: 'device', ownerId: 1, fleetId: 100, deviceId: 10 };
const siblingDevice: Resource = { kind: 'device', ownerId: 1, fleetId: 100, deviceId: 11 };
const bobDevice: Resource = { kind: 'device', ownerId: 2, fleetId: 200, deviceId: 20 };
const aliceRelease: Resource = { kind: 'release', ownerId: 1, fleetId: 100 };
const bobRelease: Resource = { kind: 'release', ownerId: 2, fleetId: 200 };

const CASES: Array<[string, Principal, Action, Resource, Decision]> = [
  // users: their own objects, and nobody else's, whatever the action
  ['owner reads fleet', alice, 'read', aliceFleet, 'allow'],
  ['owner writes fleet', alice, 'write', aliceFleet, 'allow'],
  ['owner pushes to fleet', alice, 'push', aliceFleet, 'allow'],
  ['owner pulls from fleet', alice, 'pull', aliceFleet, 'allow'],
  ['owner registers into fleet (needs a provisioning key)', alice, 'register', aliceFleet, 'forbidden'],
  ['owner reads device', alice, 'read', ownDevice, 'allow'],
  ['owner cannot act as the device', alice, 'deviceState', ownDevice, 'forbidden'],
  ['owner writes release', alice, 'write', aliceRelease, 'allow'],
  ["another user's fleet read", alice, 'read', bobFleet, 'notFound'],
  ["another user's fleet write", alice, 'write', bobFleet, 'notFound'],
  ["another user's fleet push", alice, 'push', bobFleet, 'notFound'],
  ["another user's fleet pull", alice, 'pull', bobFleet, 'notFound'],
  ["another user's device", alice, 'read', bobDevice, 'notFound'],
  ["another user's device state", alice, 'deviceState', bobDevice, 'notFound'],
  ["another user's release", alice, 'read', bobRelease, 'notFound'],
  ['admin does not see other tenants', admin, 'read', aliceFleet, 'notFound'],
  ['admin does not push to other tenants', admin, 'push', aliceFleet, 'notFound'],
  ['admin manages users', admin, 'write', { kind: 'users' }, 'allow'],
  ['admin lists users', admin, 'read', { kind: 'users' }, 'allow'],
  ['a user cannot see the user admin', alice, 'read', { kind: 'users' }, 'notFound'],
  ['a user cannot create users', alice, 'write', { kind: 'users' }, 'notFound'],
  ['own API key', alice, 'write', { kind: 'apiKey', userId: 1 }, 'allow'],
  ["another user's API key", alice, 'write', { kind: 'apiKey', userId: 2 }, 'notFound'],
  ["admin and another user's API key", admin, 'write', { kind: 'apiKey', userId: 1 }, 'notFound'],
  // devices: only themselves, and pulls from their own fleet
  ['device reads its own state', device, 'deviceState', ownDevice, 'allow'],
  ['device reads itself as a user would', device, 'read', ownDevice, 'forbidden'],
  ['device writes itself as a user would', device, 'write', ownDevice, 'forbidden'],
  ['device on a sibling', device, 'deviceState', siblingDevice, 'notFound'],
  ['device on another tenant', device, 'deviceState', bobDevice, 'notFound'],
  ['device pulls its fleet', device, 'pull', aliceFleet, 'allow'],
  ['device pushes to its fleet', device, 'push', aliceFleet, 'forbidden'],
  ['device pulls another fleet', device, 'pull', bobFleet, 'notFound'],
  ['device pulls its release', device, 'pull', aliceRelease, 'allow'],
  ['device writes its release', device, 'write', aliceRelease, 'forbidden'],
  ['device reads another release', device, 'read', bobRelease, 'notFound'],
  ['device on users', device, 'read', { kind: 'users' }, 'notFound'],
  ['device on an API key', device, 'read', { kind: 'apiKey', userId: 1 }, 'notFound'],
  // provisioning keys: register into their fleet, nothing else
  ['provisioning registers', provisioning, 'register', aliceFleet, 'allow'],
  ['provisioning reads fleet', provisioning, 'read', aliceFleet, 'forbidden'],
  ['provisioning pulls', provisioning, 'pull', aliceFleet, 'forbidden'],
  ['provisioning registers elsewhere', provisioning, 'register', bobFleet, 'notFound'],
  ['provisioning reads a device', provisioning, 'read', ownDevice, 'notFound'],
  ['provisioning acts as a device', provisioning, 'deviceState', ownDevice, 'notFound'],
  ['provisioning on users', provisioning, 'write', { kind: 'users' }, 'notFound'],
];

describe('server permissions: decide', () => {
  for (const [name, principal, action, resource, expected] of CASES) {
    it(`${name} → ${expected}`, () => assert.equal(decide(principal, action, resource), expected));
  }

  it('never answers forbidden for an object of another tenant (no existence leak)', () => {
    const principals: Principal[] = [alice, admin, device, provisioning];
    const actions: Action[] = ['read', 'write', 'register', 'deviceState', 'pull', 'push'];
    const foreign: Resource[] = [bobFleet, bobDevice, bobRelease];
    for (const p of principals) for (const a of actions) for (const r of foreign) assert.equal(decide(p, a, r), 'notFound', `${p.kind} ${a} ${r.kind}`);
  });
});

describe('server permissions: registry grants', () => {
  it('gives a user pull and push on their own fleet, nothing on another', () => {
    assert.deepEqual(registryGrant(alice, { ownerId: 1, fleetId: 100 }, ['pull', 'push']), ['pull', 'push']);
    assert.deepEqual(registryGrant(alice, { ownerId: 2, fleetId: 200 }, ['pull', 'push']), []);
  });
  it('gives a device pull only, on its own fleet only', () => {
    assert.deepEqual(registryGrant(device, { ownerId: 1, fleetId: 100 }, ['pull', 'push']), ['pull']);
    assert.deepEqual(registryGrant(device, { ownerId: 1, fleetId: 101 }, ['pull']), []);
  });
  it('gives nothing on a repository of no fleet, and repeats no action', () => {
    assert.deepEqual(registryGrant(alice, undefined, ['pull']), []);
    assert.deepEqual(registryGrant(alice, { ownerId: 1, fleetId: 100 }, ['pull', 'pull']), ['pull']);
  });
  it('maps a repository to its fleet uuid, refusing other shapes', () => {
    const u = '0123456789abcdef0123456789abcdef';
    assert.equal(fleetUuidOfRepository(`${u}/main`), u);
    assert.equal(fleetUuidOfRepository(`${u}/my-service.v2`), u);
    for (const bad of [`${u}`, `${u}/`, `${u}/Main`, `${u}/a/b`, `x${u}/main`, 'library/busybox', `${u.toUpperCase()}/main`]) assert.equal(fleetUuidOfRepository(bad), undefined, bad);
  });
});
