/**
 * The device path's PostgreSQL queries (db/database.ts HotQueries) on a real PostgreSQL: the
 * lookups batched per turn of the event loop answer each caller with its own row, and the devices'
 * writes run without waiting for the commit's fsync while everything else still waits.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { openDatabase, type OpenedDatabase } from '../../src/lib/server/db/database.js';
import { hashKey } from '../../src/lib/server/crypto.js';
import { LastSeenBatcher } from '../../src/lib/server/services/last-seen.js';
import { registerDevice } from '../../src/lib/server/services/devices.js';
import { dropPostgresDatabases, postgresDatabase } from '../support/postgres.js';
import { LocalEventBus } from '../../src/lib/server/events/bus.js';

describe('skiff server: the device path on PostgreSQL (batched lookups, asynchronous device writes)', function () {
  this.timeout(60_000);
  let dir: string;
  let opened: OpenedDatabase;
  let fleetId: number;
  const devices: { uuid: string; key: string; id: number }[] = [];

  before(async function () {
    const db = await postgresDatabase(this);
    dir = mkdtempSync(path.join(tmpdir(), 'skiff-pg-hot-'));
    opened = await openDatabase({ dataDir: dir, url: db.url, log: () => undefined });
    const ctx = {
      db: opened.db, hot: opened.hot, dialect: opened.dialect, clock: () => new Date(), registry: undefined,
      lastSeen: new LastSeenBatcher(opened.hot.deviceWrites, () => new Date(), () => undefined),
      events: new LocalEventBus(),
      options: { publicUrl: 'http://cloud.test', registryHost: 'cloud.test:48080', dataDir: '/nonexistent', replicaId: 'test', builderEngines: {}, buildContextLimit: 1024, logRetention: { lines: 100, bytes: 10_000 } },
      log: () => undefined,
    };
    const user = await opened.db.insertInto('users').values({ email: 'a@example.com', password_hash: 'x', is_admin: 1, created_at: new Date().toISOString() }).returning('id').executeTakeFirstOrThrow();
    fleetId = (await opened.db.insertInto('fleets').values({ uuid: randomBytes(16).toString('hex'), owner_id: user.id, name: 'hot', device_type: 'generic-amd64', pinned_release_id: null, state_version: 1, created_at: new Date().toISOString() }).returning('id').executeTakeFirstOrThrow()).id;
    for (let i = 0; i < 3; i++) {
      const uuid = randomUUID().replace(/-/g, '');
      const key = randomBytes(16).toString('hex');
      const { id } = await registerDevice(ctx, { kind: 'provisioning', keyId: 1, fleetId }, { uuid, api_key: key, device_type: 'generic-amd64' });
      devices.push({ uuid, key, id });
    }
  });

  after(async () => {
    await opened?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await dropPostgresDatabases();
  });

  it('answers lookups made together each with its own device, and an unknown key with nothing', async () => {
    const [d0, d1, d2] = devices;
    assert.ok(d0 && d1 && d2);
    const asked = [d2, d0, d2, d1].map((d) => hashKey(d.key));
    const found = await Promise.all([...asked, hashKey('not a key')].map((h) => opened.hot.deviceByKeyHash(h)));
    assert.deepEqual(found.map((r) => r?.uuid), [d2.uuid, d0.uuid, d2.uuid, d1.uuid, undefined]);
    for (const r of found.slice(0, 4)) assert.deepEqual([r?.fleet_id, r?.pinned_release_id, r?.device_version, r?.fleet_version], [fleetId, null, 1, 1]);
  });

  it("answers variable lookups made together each with the device's own variables only", async () => {
    const [d0, d1] = devices;
    assert.ok(d0 && d1);
    await opened.db.insertInto('variables').values([
      { fleet_id: fleetId, device_id: null, service: '', name: 'LEVEL', value: 'fleet' },
      { fleet_id: null, device_id: d0.id, service: '', name: 'LEVEL', value: 'd0' },
      { fleet_id: null, device_id: d0.id, service: 'main', name: 'ONLY', value: 'd0 main' },
      { fleet_id: null, device_id: d1.id, service: '', name: 'LEVEL', value: 'd1' },
    ]).execute();
    const sorted = (rows: { service: string; name: string; value: string }[]) => [...rows].sort((x, y) => `${x.service}/${x.name}`.localeCompare(`${y.service}/${y.name}`));
    const [v0, v1, none] = await Promise.all([d0.id, d1.id, devices[2]?.id ?? -1].map((id) => opened.hot.deviceVariables(id)));
    assert.deepEqual(sorted(v0 ?? []), [{ service: '', name: 'LEVEL', value: 'd0' }, { service: 'main', name: 'ONLY', value: 'd0 main' }]);
    assert.deepEqual(v1, [{ service: '', name: 'LEVEL', value: 'd1' }]);
    assert.deepEqual(none, []);
  });

  it("runs the devices' writes with synchronous_commit off, and every other statement with it on", async () => {
    const setting = async (db: OpenedDatabase['db']) => (await sql<{ synchronous_commit: string }>`SHOW synchronous_commit`.execute(db)).rows[0]?.synchronous_commit;
    assert.equal(await setting(opened.hot.deviceWrites), 'off');
    assert.equal(await setting(opened.db), 'on');
  });
});
