/**
 * One replica's device sockets (events/channel.ts) with real WebSockets on loopback, the
 * in-process bus and a real SQLite database: updates go to the sockets an event concerns (a
 * moved device follows its new fleet, a removed one is closed), an action goes to its device and
 * only that device's answer comes back on the bus, a second socket of a device replaces the first,
 * and a socket that stops answering pings is dropped.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import WebSocket, { WebSocketServer } from 'ws';
import { openDatabase, type OpenedDatabase } from '../../src/lib/server/db/database.js';
import { LocalEventBus, type ServerEvent } from '../../src/lib/server/events/bus.js';
import { DeviceChannels } from '../../src/lib/server/events/channel.js';
import { waitFor } from '../support/wait.js';

describe('server events: one replica\'s device sockets (real WebSockets on loopback)', function () {
  this.timeout(30_000);
  let dir: string;
  let opened: OpenedDatabase;
  let bus: LocalEventBus;
  let channels: DeviceChannels;
  let wss: WebSocketServer;
  let url: string;
  const clients: WebSocket[] = [];
  const fleets: number[] = [];
  const devices: number[] = [];
  let nextDevice = 0;

  /** Connects a client as device `deviceId` of `fleetId`; resolves with its received messages. */
  const connect = async (deviceId: number, fleetId: number): Promise<{ ws: WebSocket; got: unknown[] }> => {
    const attached = new Promise<void>((resolve) => wss.once('connection', (socket) => {
      channels.attach(socket, deviceId, fleetId);
      resolve();
    }));
    const ws = new WebSocket(url);
    clients.push(ws);
    const got: unknown[] = [];
    // The hello (the server's clock) opens every connection; the tests look at what follows it.
    ws.on('message', (data) => {
      const message = JSON.parse(data.toString()) as { type: string; time?: unknown };
      if (message.type === 'hello') assert.equal(typeof message.time, 'number');
      else got.push(message);
    });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    await attached;
    return { ws, got };
  };

  const device = async (fleetId: number): Promise<number> => {
    const row = await opened.db.insertInto('devices').values({
      uuid: randomBytes(16).toString('hex'), key_hash: randomBytes(32).toString('hex'), fleet_id: fleetId, name: `d${nextDevice++}`, device_type: 'generic-amd64',
      pinned_release_id: null, state_version: 1, last_seen: null, created_at: new Date().toISOString(),
      status: null, os_version: null, os_variant: null, supervisor_version: null, ip_address: null, mac_address: null, api_port: null, provisioning_state: null, running_release: null,
      update_status: null, update_error: null, rolled_back_from: null, services: '[]',
      memory_usage: null, memory_total: null, storage_usage: null, storage_total: null, cpu_usage: null, cpu_temp: null,
    }).returning('id').executeTakeFirstOrThrow();
    devices.push(row.id);
    return row.id;
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'skiff-channel-'));
    opened = await openDatabase({ dataDir: dir, log: () => undefined });
    const user = await opened.db.insertInto('users').values({ email: 'a@example.com', password_hash: 'x', is_admin: 0, created_at: new Date().toISOString() }).returning('id').executeTakeFirstOrThrow();
    for (const name of ['one', 'two']) {
      fleets.push((await opened.db.insertInto('fleets').values({ uuid: randomBytes(16).toString('hex'), owner_id: user.id, name, device_type: 'generic-amd64', pinned_release_id: null, state_version: 1, created_at: new Date().toISOString() }).returning('id').executeTakeFirstOrThrow()).id);
    }
    bus = new LocalEventBus();
    channels = new DeviceChannels(bus, opened.db, () => undefined, { pingIntervalMs: 200, maxBufferedBytes: 64 * 1024, actionAnswerMs: 5000 });
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((resolve) => wss.once('listening', resolve));
    url = `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}`;
  });

  after(async () => {
    for (const c of clients) c.terminate();
    channels.close();
    await new Promise((resolve) => wss.close(resolve));
    await bus.close();
    await opened.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a fleet\'s update reaches its devices only; a moved device follows its new fleet; a removed one is closed', async () => {
    const [one, two] = fleets as [number, number];
    const a = await connect(await device(one), one);
    const b = await connect(await device(two), two);
    await bus.publish({ topic: 'target', fleetId: one });
    await waitFor(() => a.got.length === 1, 'A told to fetch');
    assert.deepEqual(a.got, [{ type: 'update' }]);
    assert.deepEqual(b.got, []);
    // B moves to fleet one: the event names it, and from then on fleet one's events reach it.
    const bId = devices[1] as number;
    await opened.db.updateTable('devices').set({ fleet_id: one }).where('id', '=', bId).execute();
    await bus.publish({ topic: 'target', deviceIds: [bId] });
    await waitFor(() => b.got.length === 1, 'B told after its move');
    await bus.publish({ topic: 'target', fleetId: one });
    await waitFor(() => a.got.length === 2 && b.got.length === 2, 'both told as devices of fleet one');
    // A removed: the event closes its socket.
    const aId = devices[0] as number;
    const closed = new Promise<number>((resolve) => a.ws.once('close', (code) => resolve(code)));
    await opened.db.deleteFrom('devices').where('id', '=', aId).execute();
    await bus.publish({ topic: 'target', deviceIds: [aId] });
    assert.equal(await closed, 4004);
    assert.equal(channels.has(aId), false);
  });

  it('an action reaches its device, is acknowledged, and only that device\'s answer is relayed, once', async () => {
    const [one] = fleets as [number];
    const target = await connect(await device(one), one);
    const other = await connect(await device(one), one);
    const targetId = devices[devices.length - 2] as number;
    const seen: ServerEvent[] = [];
    bus.subscribe('device-action-accepted', (e) => seen.push(e));
    bus.subscribe('device-action-result', (e) => seen.push(e));
    await bus.publish({ topic: 'device-action', id: 'act-1', deviceId: targetId, action: 'restart', service: 'web' });
    await waitFor(() => target.got.length === 1 && seen.length === 1, 'the action sent and acknowledged');
    const { sentAt, validMs, ...action } = target.got[0] as { sentAt: number; validMs: number };
    assert.deepEqual(action, { type: 'action', id: 'act-1', action: 'restart', service: 'web' });
    assert.ok(Math.abs(Date.now() - sentAt) < 60_000, 'stamped with the server\'s clock');
    assert.equal(validMs, 25_000);
    assert.deepEqual(seen, [{ topic: 'device-action-accepted', id: 'act-1' }]);
    assert.deepEqual(other.got, []);
    // Another device answering this action is ignored; so is garbage; the device's answer counts once.
    other.ws.send(JSON.stringify({ type: 'action-result', id: 'act-1', ok: false, message: 'forged' }));
    target.ws.send('not json');
    target.ws.send(JSON.stringify({ type: 'action-result', id: 'act-1', ok: true, message: 'restarted' }));
    target.ws.send(JSON.stringify({ type: 'action-result', id: 'act-1', ok: true, message: 'again' }));
    await waitFor(() => seen.length >= 2, 'the answer relayed');
    // The bus delivers in order: one more event after the answers shows nothing else came.
    await bus.publish({ topic: 'device-action-result', id: 'marker', ok: true, message: '' });
    await waitFor(() => seen.some((e) => e.topic === 'device-action-result' && e.id === 'marker'), 'the marker');
    assert.deepEqual(seen.filter((e) => e.topic === 'device-action-result' && e.id === 'act-1'), [{ topic: 'device-action-result', id: 'act-1', ok: true, message: 'restarted' }]);
  });

  it('a second socket of a device replaces the first; a socket that stops answering pings is dropped', async () => {
    const [one] = fleets as [number];
    const id = await device(one);
    const first = await connect(id, one);
    const replaced = new Promise<number>((resolve) => first.ws.once('close', (code) => resolve(code)));
    const second = await connect(id, one);
    assert.equal(await replaced, 4000);
    assert.equal(channels.has(id), true);
    // The client stops reading (a device frozen, a link gone silent): no pong comes back.
    const raw = (second.ws as unknown as { _socket: net.Socket })._socket;
    raw.pause();
    await waitFor(() => !channels.has(id), 'the silent socket dropped after a missed ping', 5000, 20);
  });
});
