/**
 * The poll's fleet cache (services/devices.ts fleetPart): the fleet-level part of a target is read
 * once per fleet state version. On a real SQLite database in a temp dir (no subprocess, no
 * network), through the same service functions the routes call.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { openDatabase, type OpenedDatabase } from '../../src/lib/server/db/database.js';
import { LastSeenBatcher } from '../../src/lib/server/services/last-seen.js';
import type { ServiceContext } from '../../src/lib/server/services/context.js';
import { authenticateDevice, pollTarget, registerDevice, storeReport, targetOf, type PollIdentity } from '../../src/lib/server/services/devices.js';
import { touchFleet } from '../../src/lib/server/services/fleets.js';
import type { TargetStateV3 } from '../../src/lib/api/device-state.js';
import { LocalEventBus } from '../../src/lib/server/events/bus.js';

describe('server: the fleet part of a target, cached per fleet version (SQLite)', () => {
  let dir: string;
  let opened: OpenedDatabase;
  let ctx: ServiceContext;
  let fleetId: number;
  let fleetUuid: string;
  let device: { uuid: string; key: string };

  const newContext = (): ServiceContext => ({
    db: opened.db, hot: opened.hot, dialect: opened.dialect, clock: () => new Date(), registry: undefined,
    lastSeen: new LastSeenBatcher(opened.hot.deviceWrites, () => new Date(), () => undefined),
    events: new LocalEventBus(),
    options: { publicUrl: 'http://cloud.test', registryHost: 'cloud.test:48080', dataDir: '/nonexistent', replicaId: 'test', builderEngines: {}, buildContextLimit: 1024, logRetention: { lines: 100, bytes: 10_000 } },
    log: () => undefined,
  });
  const identity = async (): Promise<PollIdentity> => {
    const found = await authenticateDevice(ctx, device.key);
    assert.ok(found, 'the device key is known');
    return found;
  };
  const target = async (on: ServiceContext = ctx): Promise<TargetStateV3> => {
    const answer = await pollTarget(on, await identity(), device.uuid, undefined);
    assert.equal(answer.notModified, false);
    return answer.notModified ? {} : answer.body;
  };
  const fleetVariable = async (name: string, value: string) => {
    await opened.db.deleteFrom('variables').where('fleet_id', '=', fleetId).where('name', '=', name).execute();
    await opened.db.insertInto('variables').values({ fleet_id: fleetId, device_id: null, service: '', name, value }).execute();
  };
  const configOf = (t: TargetStateV3) => t[device.uuid]?.config ?? {};
  const releasesOf = (t: TargetStateV3) => Object.keys(t[device.uuid]?.apps[fleetUuid]?.releases ?? {});

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'skiff-target-cache-'));
    opened = await openDatabase({ dataDir: dir, log: () => undefined });
    ctx = newContext();
    const user = await opened.db.insertInto('users').values({ email: 'a@example.com', password_hash: 'x', is_admin: 1, created_at: new Date().toISOString() }).returning('id').executeTakeFirstOrThrow();
    fleetUuid = randomBytes(16).toString('hex');
    const fleet = await opened.db.insertInto('fleets').values({ uuid: fleetUuid, owner_id: user.id, name: 'cache', device_type: 'generic-amd64', pinned_release_id: null, state_version: 1, created_at: new Date().toISOString() }).returning('id').executeTakeFirstOrThrow();
    fleetId = fleet.id;
    device = { uuid: randomUUID().replace(/-/g, ''), key: randomBytes(16).toString('hex') };
    await registerDevice(ctx, { kind: 'provisioning', keyId: 1, fleetId }, { uuid: device.uuid, api_key: device.key, device_type: 'generic-amd64' });
  });

  afterEach(async () => {
    await opened.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads the fleet part once per fleet version: a change that bumps the version is served at once', async () => {
    await fleetVariable('SKIFF_AGENT_POLL_INTERVAL', '30000');
    await touchFleet(opened.db, fleetId);
    assert.equal(configOf(await target()).SKIFF_AGENT_POLL_INTERVAL, '30000');
    // A write that does not bump the version (no service does that) shows that the part is kept…
    await fleetVariable('SKIFF_AGENT_POLL_INTERVAL', '45000');
    assert.equal(configOf(await target()).SKIFF_AGENT_POLL_INTERVAL, '30000', 'served from the cache at the same version');
    // …and the version, read from the database with every poll, is what ends it: as after a
    // change made through another replica.
    await touchFleet(opened.db, fleetId);
    assert.equal(configOf(await target()).SKIFF_AGENT_POLL_INTERVAL, '45000');
    // A second server on the same database (a replica) has its own cache and reads the same.
    assert.equal(configOf(await target(newContext())).SKIFF_AGENT_POLL_INTERVAL, '45000');
  });

  it('reads the device part (its variables, name and pin) at every fetch, and targetOf agrees with the poll', async () => {
    assert.equal(configOf(await target()).SKIFF_AGENT_POLL_INTERVAL, undefined);
    const own = await opened.db.selectFrom('devices').select('id').where('uuid', '=', device.uuid).executeTakeFirstOrThrow();
    await opened.db.insertInto('variables').values({ fleet_id: null, device_id: own.id, service: '', name: 'SKIFF_AGENT_POLL_INTERVAL', value: '20000' }).execute();
    const polled = await target();
    assert.equal(configOf(polled).SKIFF_AGENT_POLL_INTERVAL, '20000', 'a device variable, with the fleet part cached');
    assert.deepEqual(await targetOf(ctx, own.id), polled);
  });

  it("serves a new release to the fleet, a device's pin to the device, and several devices' concurrent misses the same part", async () => {
    const release = async (commit: string) => {
      const row = await opened.db.insertInto('releases').values({
        fleet_id: fleetId, commit, status: 'success', is_final: 1, is_invalidated: 0, semver: null, notes: null,
        composition: JSON.stringify({ services: { main: { image: 'main' } } }), created_at: new Date().toISOString(),
      }).returning('id').executeTakeFirstOrThrow();
      await opened.db.insertInto('release_images').values({ release_id: row.id, service: 'main', repository: `v2/${fleetUuid}/main`, digest: `sha256:${'a'.repeat(64)}`, size: 1 }).execute();
      await touchFleet(opened.db, fleetId);
      return row.id;
    };
    assert.deepEqual(releasesOf(await target()), []);
    const first = await release('c'.repeat(32));
    assert.deepEqual(releasesOf(await target()), ['c'.repeat(32)]);
    await release('d'.repeat(32));
    assert.deepEqual(releasesOf(await target()), ['d'.repeat(32)]);
    await opened.db.updateTable('devices').set({ pinned_release_id: first }).set((eb) => ({ state_version: eb('state_version', '+', 1) })).where('uuid', '=', device.uuid).execute();
    assert.deepEqual(releasesOf(await target()), ['c'.repeat(32)], "the device's pin, from the same cached fleet part");
    const answers = await Promise.all(Array.from({ length: 20 }, () => target()));
    for (const t of answers) assert.deepEqual(releasesOf(t), ['c'.repeat(32)]);
  });

  it('stores a report through the devices\' write connection (on SQLite the same one)', async () => {
    assert.equal(opened.hot.deviceWrites, opened.db);
    await storeReport(ctx, await identity(), { [device.uuid]: { status: 'Idle', ip_address: '192.0.2.9' } });
    const row = await opened.db.selectFrom('devices').select(['status', 'ip_address']).where('uuid', '=', device.uuid).executeTakeFirstOrThrow();
    assert.deepEqual(row, { status: 'Idle', ip_address: '192.0.2.9' });
  });
});
