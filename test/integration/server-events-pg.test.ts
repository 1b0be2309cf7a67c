/**
 * The event bus across replicas (events/pg-bus.ts) on a real PostgreSQL: two buses on one
 * database stand for two replicas. Each event reaches every replica once (the publisher's own
 * subscribers too, without the echo), one too large for NOTIFY stays local and says so, and a
 * listener whose connection the database cuts comes back by itself, tells its devices to poll,
 * and carries events again.
 */
import assert from 'node:assert/strict';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Database } from '../../src/lib/server/db/schema.js';
import type { ServerEvent } from '../../src/lib/server/events/bus.js';
import { PgEventBus } from '../../src/lib/server/events/pg-bus.js';
import { dropPostgresDatabases, postgresDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait.js';

describe('server events: the PostgreSQL LISTEN/NOTIFY bus between two replicas', function () {
  this.timeout(60_000);
  let database: TestDatabase;
  let db: Kysely<Database>;
  const buses: PgEventBus[] = [];
  const logs: string[] = [];
  const channel = `skiff_events_test_${process.pid}`;

  const replica = async (replicaId: string): Promise<{ bus: PgEventBus; got: ServerEvent[] }> => {
    const bus = await PgEventBus.start({ url: database.url, db, replicaId, channel, log: (line) => logs.push(`${replicaId}: ${line}`) });
    buses.push(bus);
    const got: ServerEvent[] = [];
    bus.subscribe('target', (e) => got.push(e));
    bus.subscribe('device-action', (e) => got.push(e));
    return { bus, got };
  };

  before(async function () {
    database = await postgresDatabase(this);
    const pool = new pg.Pool({ connectionString: database.url, max: 2 });
    pool.on('error', (err) => logs.push(`pool: ${err.message}`));
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  });

  after(async () => {
    for (const bus of buses.splice(0)) await bus.close();
    await db?.destroy();
    await dropPostgresDatabases();
  });

  it('an event published on one replica reaches both, once each', async () => {
    const one = await replica('one');
    const two = await replica('two');
    await one.bus.publish({ topic: 'target', fleetId: 7 });
    await two.bus.publish({ topic: 'device-action', id: 'a1', deviceId: 3, action: 'identify' });
    // Notifications reach a listener in commit order: once the other replica's later event
    // arrived, anything committed before it (an echo included) would have too.
    await one.bus.publish({ topic: 'target', fleetId: 101 });
    await two.bus.publish({ topic: 'target', fleetId: 102 });
    await waitFor(() => one.got.some((e) => e.topic === 'target' && e.fleetId === 102) && two.got.some((e) => e.topic === 'target' && e.fleetId === 101), 'each replica\'s later event on the other', 10_000, 20);
    for (const r of [one, two]) {
      // Local events come at once, the other replica's a moment later: the order may differ.
      const fleets = r.got.flatMap((e) => (e.topic === 'target' ? [e.fleetId] : [])).sort();
      assert.deepEqual(fleets, [101, 102, 7]);
      assert.deepEqual(r.got.filter((e) => e.topic === 'device-action'), [{ topic: 'device-action', id: 'a1', deviceId: 3, action: 'identify' }]);
    }
    for (const bus of buses.splice(0)) await bus.close();
  });

  it('an event too large for NOTIFY reaches only its own replica, and the log says why', async () => {
    const one = await replica('big1');
    const two = await replica('big2');
    const deviceIds = Array.from({ length: 3000 }, (_, i) => i + 1);
    await one.bus.publish({ topic: 'target', deviceIds });
    await waitFor(() => one.got.length === 1, 'the local delivery', 5000, 20);
    await one.bus.publish({ topic: 'target', fleetId: 1 });
    await waitFor(() => two.got.length === 1, 'the small event after it', 5000, 20);
    assert.deepEqual(two.got, [{ topic: 'target', fleetId: 1 }]);
    assert.ok(logs.some((l) => /^big1: .*too large for NOTIFY/.test(l)), logs.join('\n'));
    for (const bus of buses.splice(0)) await bus.close();
  });

  it('a listener cut by the database reconnects, tells its devices to poll, and carries events again', async () => {
    const one = await replica('cut1');
    const two = await replica('cut2');
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    try {
      const cut = await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'skiff-events %' AND datname = current_database()");
      assert.equal(cut.rowCount, 2, 'both listeners found');
    } finally {
      await admin.end();
    }
    await waitFor(() => logs.filter((l) => /^cut[12]: events: the PostgreSQL listener is back/.test(l)).length === 2, 'both listeners back', 30_000, 50);
    assert.ok(logs.some((l) => /^cut1: events: lost the PostgreSQL listener/.test(l)), logs.join('\n'));
    // What may have been missed meanwhile: every device connected to the replica is told to poll.
    for (const r of [one, two]) assert.deepEqual(r.got, [{ topic: 'target' }]);
    await two.bus.publish({ topic: 'target', fleetId: 9 });
    await waitFor(() => one.got.length === 2, 'an event crossing after the reconnect', 10_000, 20);
    assert.deepEqual(one.got[1], { topic: 'target', fleetId: 9 });
  });
});
