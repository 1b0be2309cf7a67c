/**
 * The event bus and what rides it, offline: the in-process bus, which sockets an event concerns,
 * what a device or another replica may send, the reconnect schedules; and, on a real SQLite
 * database in a temp dir, device actions (services/device-actions.ts) answered over the bus as
 * the replica holding a device's socket answers them, and the 'target' events the services
 * publish after their changes.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { LocalEventBus, type EventOf, type ServerEvent } from '../../src/lib/server/events/bus.js';
import { concerned, parseDeviceMessage } from '../../src/lib/server/events/channel.js';
import { MAX_PAYLOAD_BYTES, parseEnvelope, reconnectDelayMs as listenerDelayMs } from '../../src/lib/server/events/pg-bus.js';
import { actionLateness, eventsUrl, parseServerMessage, reconnectDelayMs } from '../../src/lib/agent/cloud/events.js';
import { openDatabase, type OpenedDatabase } from '../../src/lib/server/db/database.js';
import { LastSeenBatcher } from '../../src/lib/server/services/last-seen.js';
import type { ServiceContext } from '../../src/lib/server/services/context.js';
import { registerDevice, updateDevice, removeDevice } from '../../src/lib/server/services/devices.js';
import { setVariable, removeVariable } from '../../src/lib/server/services/variables.js';
import { updateFleet } from '../../src/lib/server/services/fleets.js';
import { DeviceDidNotAnswer, runDeviceAction } from '../../src/lib/server/services/device-actions.js';
import { SkiffError } from '../../src/lib/errors/errors.js';

describe('server events: the in-process bus', () => {
  it('delivers on a later tick to every subscriber of the topic, and not after unsubscribe', async () => {
    const bus = new LocalEventBus();
    const got: ServerEvent[] = [];
    const off = bus.subscribe('target', (e) => got.push(e));
    bus.subscribe('build', (e) => got.push(e));
    await bus.publish({ topic: 'target', fleetId: 3 });
    assert.deepEqual(got, [], 'not during publish: the publisher finishes first');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(got, [{ topic: 'target', fleetId: 3 }]);
    off();
    await bus.publish({ topic: 'target', fleetId: 4 });
    await new Promise((r) => setImmediate(r));
    assert.equal(got.length, 1);
    await bus.close();
  });
});

describe('server events: which device sockets an event concerns', () => {
  const sockets = [{ deviceId: 1, fleetId: 10 }, { deviceId: 2, fleetId: 10 }, { deviceId: 3, fleetId: 11 }];
  const cases: Array<[string, { fleetId?: number; deviceIds?: number[] }, number[]]> = [
    ['a fleet: its devices', { fleetId: 10 }, [1, 2]],
    ['another fleet', { fleetId: 12 }, []],
    ['devices by id', { deviceIds: [3, 9] }, [3]],
    ['a fleet and devices', { fleetId: 11, deviceIds: [1] }, [1, 3]],
    ['neither: every device (a replica lost events)', {}, [1, 2, 3]],
    ['an empty list of devices', { deviceIds: [] }, []],
  ];
  for (const [what, event, ids] of cases) {
    it(what, () => assert.deepEqual(concerned(sockets, event).map((c) => c.deviceId), ids));
  }
});

describe('server events: what a device may send on its socket', () => {
  it('an action result, its message cut to 1000 characters', () => {
    assert.deepEqual(parseDeviceMessage('{"type":"action-result","id":"x","ok":true,"message":"done"}'), { type: 'action-result', id: 'x', ok: true, message: 'done' });
    assert.equal(parseDeviceMessage(JSON.stringify({ type: 'action-result', id: 'x', ok: false, message: 'y'.repeat(5000) }))?.message.length, 1000);
  });
  for (const text of ['', 'not json', '[]', 'null', '{"type":"update"}', '{"type":"action-result","id":1,"ok":true,"message":""}', '{"type":"action-result","id":"x","ok":"yes","message":""}', '{"type":"action-result","id":"x","ok":true}']) {
    it(`ignores ${JSON.stringify(text)}`, () => assert.equal(parseDeviceMessage(text), undefined));
  }
});

describe('server events: what crosses PostgreSQL NOTIFY', () => {
  it('an envelope of a known topic, with its replica', () => {
    assert.deepEqual(parseEnvelope('{"r":"a1","e":{"topic":"target","fleetId":2}}'), { r: 'a1', e: { topic: 'target', fleetId: 2 } });
  });
  for (const text of [undefined, '', 'x', '{"e":{"topic":"target"}}', '{"r":"a","e":{"topic":"other"}}', '{"r":"a","e":"target"}', '{"r":1,"e":{"topic":"target"}}']) {
    it(`ignores ${JSON.stringify(text)} (another program's NOTIFY on the channel)`, () => assert.equal(parseEnvelope(text), undefined));
  }
  it('PostgreSQL\'s payload limit is under 8000 bytes', () => assert.ok(MAX_PAYLOAD_BYTES < 8000));
});

describe('reconnect schedules: doubling, capped, half of each wait random', () => {
  const table: Array<[string, (n: number, r: number) => number, number, number, number]> = [
    // [who, fn, failures, min, max]
    ['agent', reconnectDelayMs, 1, 500, 1000],
    ['agent', reconnectDelayMs, 2, 1000, 2000],
    ['agent', reconnectDelayMs, 7, 30_000, 60_000],
    ['agent', reconnectDelayMs, 50, 30_000, 60_000],
    ['server listener', listenerDelayMs, 1, 125, 250],
    ['server listener', listenerDelayMs, 20, 15_000, 30_000],
  ];
  for (const [who, fn, failures, min, max] of table) {
    it(`${who}, failure ${failures}: ${min}–${max} ms`, () => {
      assert.equal(fn(failures, 0), min);
      assert.equal(fn(failures, 1), max);
      const mid = fn(failures, 0.5);
      assert.ok(mid > min && mid < max);
    });
  }
  it('never below the first wait for nonsense input', () => {
    assert.equal(reconnectDelayMs(0, -1), 500);
    assert.equal(reconnectDelayMs(-5, 2), 1000);
  });
});

describe('agent events: the channel URL and what the server may send', () => {
  it('maps http(s) to ws(s) and names the device', () => {
    assert.equal(eventsUrl('https://cloud.example.com:48080/', 'ab12'), 'wss://cloud.example.com:48080/device/v3/ab12/events');
    assert.equal(eventsUrl('http://127.0.0.1:1', 'ab12'), 'ws://127.0.0.1:1/device/v3/ab12/events');
  });
  it('reads update and actions; drops unknown fields and wrong types', () => {
    assert.deepEqual(parseServerMessage('{"type":"update","extra":1}'), { type: 'update' });
    assert.deepEqual(parseServerMessage('{"type":"action","id":"i","action":"restart","service":"web","force":true}'), { type: 'action', id: 'i', action: 'restart', service: 'web', force: true });
    assert.deepEqual(parseServerMessage('{"type":"action","id":"i","action":"reboot","service":3}'), { type: 'action', id: 'i', action: 'reboot' });
    assert.deepEqual(parseServerMessage('{"type":"action","id":"i","action":"reboot","sentAt":1000,"validMs":25000}'), { type: 'action', id: 'i', action: 'reboot', sentAt: 1000, validMs: 25_000 });
    assert.deepEqual(parseServerMessage('{"type":"action","id":"i","action":"reboot","sentAt":"soon","validMs":null}'), { type: 'action', id: 'i', action: 'reboot' });
    assert.deepEqual(parseServerMessage('{"type":"hello","time":1700000000000}'), { type: 'hello', time: 1_700_000_000_000 });
  });
  it('judges how late an action arrived by the server\'s clock, whatever the device\'s clock says', () => {
    // The device's clock is an hour behind the server's: skew +3,600,000 ms, learnt from the hello.
    const skew = 3_600_000;
    const sentAt = 1_700_000_000_000;
    assert.equal(actionLateness({ sentAt }, skew, sentAt - skew + 300), 300, 'read 300 ms after it was sent');
    assert.equal(actionLateness({ sentAt }, skew, sentAt - skew + 90_000), 90_000, 'read after the agent was frozen for 90 s');
    assert.equal(actionLateness({ sentAt }, undefined, sentAt), undefined, 'no hello on this connection: cannot tell');
    assert.equal(actionLateness({}, skew, sentAt), undefined, 'an action from a server that does not stamp them');
  });
  for (const text of ['', '{}', '{"type":"hello"}', '{"type":"action","id":"i","action":"format-disk"}', '{"type":"action","action":"reboot"}', '"update"']) {
    it(`ignores ${JSON.stringify(text)}`, () => assert.equal(parseServerMessage(text), undefined));
  }
});

describe('server events: device actions and target events over the bus (SQLite)', () => {
  let dir: string;
  let opened: OpenedDatabase;
  let ctx: ServiceContext;
  let events: LocalEventBus;
  let owner: { kind: 'user'; userId: number; email: string; isAdmin: boolean };
  let fleetId: number;
  let otherFleetId: number;
  let deviceId: number;
  const uuid = randomUUID().replace(/-/g, '');
  const fast = { acceptMs: 200, answerMs: 300 };
  let seen: ServerEvent[];

  /** Answers actions as the replica holding the device's socket and the device would. */
  const holder = (answer: (e: EventOf<'device-action'>) => Array<ServerEvent>) => events.subscribe('device-action', (e) => {
    for (const reply of answer(e)) void events.publish(reply);
  });

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'skiff-events-'));
    opened = await openDatabase({ dataDir: dir, log: () => undefined });
    events = new LocalEventBus();
    ctx = {
      db: opened.db, hot: opened.hot, dialect: opened.dialect, clock: () => new Date(), registry: undefined,
      lastSeen: new LastSeenBatcher(opened.hot.deviceWrites, () => new Date(), () => undefined),
      events,
      options: { publicUrl: 'http://cloud.test', registryHost: 'cloud.test:48080', dataDir: dir, replicaId: 'test', builderEngines: {}, buildContextLimit: 1024, logRetention: { lines: 100, bytes: 10_000 } },
      log: () => undefined,
    };
    const user = await opened.db.insertInto('users').values({ email: 'a@example.com', password_hash: 'x', is_admin: 0, created_at: new Date().toISOString() }).returning('id').executeTakeFirstOrThrow();
    owner = { kind: 'user', userId: user.id, email: 'a@example.com', isAdmin: false };
    const fleet = (name: string) => opened.db.insertInto('fleets').values({ uuid: randomBytes(16).toString('hex'), owner_id: user.id, name, device_type: 'generic-amd64', pinned_release_id: null, state_version: 1, created_at: new Date().toISOString() }).returning('id').executeTakeFirstOrThrow();
    fleetId = (await fleet('one')).id;
    otherFleetId = (await fleet('two')).id;
    deviceId = (await registerDevice(ctx, { kind: 'provisioning', keyId: 1, fleetId }, { uuid, api_key: randomBytes(16).toString('hex'), device_type: 'generic-amd64' })).id;
    seen = [];
    events.subscribe('target', (e) => seen.push(e));
  });

  afterEach(async () => {
    await events.close();
    await opened.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const settle = () => new Promise((r) => setImmediate(r));

  it('the device\'s answer is the result; the action carries the device, service and force', async () => {
    let sent: EventOf<'device-action'> | undefined;
    holder((e) => {
      sent = e;
      return [{ topic: 'device-action-accepted', id: e.id }, { topic: 'device-action-result', id: e.id, ok: true, message: 'restarted' }];
    });
    assert.deepEqual(await runDeviceAction(ctx, owner, uuid.slice(0, 7), { action: 'restart', service: 'web', force: true }, fast), { ok: true, message: 'restarted' });
    assert.equal(sent?.deviceId, deviceId);
    assert.equal(sent?.service, 'web');
    assert.equal(sent?.force, true);
  });

  it('a refusal is a result with ok false, not an error', async () => {
    holder((e) => [{ topic: 'device-action-accepted', id: e.id }, { topic: 'device-action-result', id: e.id, ok: false, message: 'locked' }]);
    assert.deepEqual(await runDeviceAction(ctx, owner, uuid, { action: 'reboot' }, fast), { ok: false, message: 'locked' });
  });

  it('an answer that overtakes the acknowledgement counts', async () => {
    holder((e) => [{ topic: 'device-action-result', id: e.id, ok: true, message: 'fast' }]);
    assert.deepEqual(await runDeviceAction(ctx, owner, uuid, { action: 'identify' }, fast), { ok: true, message: 'fast' });
  });

  it('no replica holds the device\'s socket: 409 offline', async () => {
    await assert.rejects(runDeviceAction(ctx, owner, uuid, { action: 'identify' }, fast), (err: SkiffError) => err.code === 'conflict' && /not connected to the server \(offline\?\)/.test(err.message));
  });

  it('sent, but the device does not answer: DeviceDidNotAnswer (504)', async () => {
    holder((e) => [{ topic: 'device-action-accepted', id: e.id }]);
    await assert.rejects(runDeviceAction(ctx, owner, uuid, { action: 'identify' }, fast), (err: unknown) => err instanceof DeviceDidNotAnswer);
  });

  it('answers for other actions are not taken for this one', async () => {
    holder((e) => [{ topic: 'device-action-accepted', id: e.id }, { topic: 'device-action-result', id: 'another', ok: true, message: 'wrong' }]);
    await assert.rejects(runDeviceAction(ctx, owner, uuid, { action: 'identify' }, fast), (err: unknown) => err instanceof DeviceDidNotAnswer);
  });

  it('another user\'s device is not found; --service with a whole-device action is a 400 naming service', async () => {
    const stranger = { kind: 'user' as const, userId: owner.userId + 100, email: 'b@example.com', isAdmin: true };
    await assert.rejects(runDeviceAction(ctx, stranger, uuid, { action: 'identify' }, fast), (err: SkiffError) => err.code === 'notFound');
    await assert.rejects(runDeviceAction(ctx, owner, uuid, { action: 'reboot', service: 'web' }, fast), (err: SkiffError) => err.code === 'usage' && err.where === 'service');
  });

  it('services publish target events after their changes: fleet variables by fleet, device variables, moves and removals by device', async () => {
    await setVariable(ctx, owner, { fleet: 'one', name: 'A', value: '1' });
    await setVariable(ctx, owner, { device: uuid, name: 'B', value: '2' });
    await removeVariable(ctx, owner, { fleet: 'one', name: 'A' });
    await updateFleet(ctx, owner, 'one', { name: 'uno' });
    await updateDevice(ctx, owner, uuid, { fleet: 'two' });
    await removeDevice(ctx, owner, uuid);
    await settle();
    assert.deepEqual(seen, [
      { topic: 'target', fleetId },
      { topic: 'target', deviceIds: [deviceId] },
      { topic: 'target', fleetId },
      // a rename changes no target: no event
      { topic: 'target', deviceIds: [deviceId] },
      { topic: 'target', deviceIds: [deviceId] },
    ]);
    assert.ok(otherFleetId > 0);
  });
});
