/**
 * This replica's device sockets (`GET /device/v3/:uuid/events`): one per connected device, fed
 * from the event bus. A `target` event becomes `{type:'update'}` for every connected device it
 * concerns; a `device-action` for a device connected here is sent to it, acknowledged on the bus
 * (`device-action-accepted`, which is how the replica serving the request knows the device is
 * online somewhere), and its answer goes back on the bus (`device-action-result`).
 *
 * Bounded: a socket whose send buffer is over {@link ChannelOptions.maxBufferedBytes} drops
 * messages instead of queueing them (an `update` is idempotent and polling catches up); a socket
 * that does not answer a ping within one interval is dropped.
 */
import type { WebSocket, RawData } from 'ws';
import type { Kysely } from 'kysely';
import { SkiffError } from '../../errors/errors.js';
import type { DeviceToServer, ServerToDevice } from '../../api/events.js';
import type { Database } from '../db/schema.js';
import type { EventBus, EventOf } from './bus.js';
import { parseJsonObject } from '../../text/json.js';
import type { TunnelOpen } from '../../api/tunnel.js';
import { DeviceMuxClient, STREAM_WINDOW_BYTES, type MuxStream } from '../../tunnel/mux.js';

export interface ChannelOptions {
  /** A ping every this many ms; no pong before the next one drops the socket (default 20 s). */
  pingIntervalMs: number;
  /** Messages to a socket with more than this many bytes unsent are dropped (default 64 KiB). */
  maxBufferedBytes: number;
  /** An action's answer is taken from its device for this long (ms) after it was sent (default 60 s). */
  actionAnswerMs: number;
}

/**
 * How long a device may still act on an action after it was sent (ms): the request's wait for the
 * answer (services/device-actions.ts, 20 s) plus a margin for the trip.
 */
export const ACTION_VALID_MS = 25_000;

export const DEFAULT_CHANNEL_OPTIONS: ChannelOptions = { pingIntervalMs: 20_000, maxBufferedBytes: 64 * 1024, actionAnswerMs: 60_000 };

/** A device's answer longer than this is cut: it is shown on one line to a person. */
const MAX_ANSWER_CHARS = 1000;

interface Connection {
  socket: WebSocket;
  deviceId: number;
  fleetId: number;
  alive: boolean;
  /** Tunnel sessions to the device ride the socket's binary messages (tunnel/mux.ts). */
  mux: DeviceMuxClient;
}

/**
 * A device's message as the one shape it may send, or undefined (ignored: a device cannot make
 * the server do anything but relay the answer to an action it was sent).
 */
export function parseDeviceMessage(data: string): DeviceToServer | undefined {
  const m = parseJsonObject(data);
  if (!m) return undefined;
  if (m.type !== 'action-result' || typeof m.id !== 'string' || typeof m.ok !== 'boolean' || typeof m.message !== 'string') return undefined;
  return { type: 'action-result', id: m.id, ok: m.ok, message: m.message.slice(0, MAX_ANSWER_CHARS) };
}

/**
 * The devices connected to this replica whose sockets an event concerns: `fleetId` → its
 * devices, `deviceIds` → those, neither → all. Pure, for tests.
 */
export function concerned<C extends { deviceId: number; fleetId: number }>(connections: Iterable<C>, event: { fleetId?: number; deviceIds?: readonly number[] }): C[] {
  const out: C[] = [];
  const ids = event.deviceIds ? new Set(event.deviceIds) : undefined;
  const all = event.fleetId === undefined && ids === undefined;
  for (const c of connections) if (all || c.fleetId === event.fleetId || ids?.has(c.deviceId)) out.push(c);
  return out;
}

export class DeviceChannels {
  private readonly connections = new Map<number, Connection>();
  /** Actions sent from here: id → the device that may answer it, and until when. */
  private readonly pending = new Map<string, { deviceId: number; until: number }>();
  private readonly unsubscribe: Array<() => void> = [];
  private readonly timer: NodeJS.Timeout;
  /** Messages dropped for a full send buffer since the last log line. */
  private dropped = 0;

  constructor(
    private readonly events: EventBus,
    private readonly db: Kysely<Database>,
    private readonly log: (line: string) => void,
    private readonly options: ChannelOptions = DEFAULT_CHANNEL_OPTIONS,
  ) {
    this.unsubscribe.push(events.subscribe('target', (e) => void this.onTarget(e).catch((err: Error) => log(`events: ${err.message}`))));
    this.unsubscribe.push(events.subscribe('device-action', (e) => this.onAction(e)));
    this.timer = setInterval(() => this.heartbeat(), options.pingIntervalMs);
    this.timer.unref();
  }

  /** How many devices hold a socket here. */
  get size(): number {
    return this.connections.size;
  }

  /** Whether the device holds a socket on this replica. */
  has(deviceId: number): boolean {
    return this.connections.has(deviceId);
  }

  /** Takes a device's new socket; one it held before (a reconnect the server saw late) is closed. */
  attach(socket: WebSocket, deviceId: number, fleetId: number): void {
    const previous = this.connections.get(deviceId);
    if (previous) previous.socket.close(4000, 'replaced by a newer connection');
    const connection: Connection = { socket, deviceId, fleetId, alive: true, mux: new DeviceMuxClient(socket) };
    this.connections.set(deviceId, connection);
    this.send(connection, { type: 'hello', time: Date.now() });
    socket.on('pong', () => {
      connection.alive = true;
    });
    socket.on('message', (data: RawData, isBinary: boolean) => {
      connection.alive = true;
      if (isBinary) {
        connection.mux.receive(rawBuffer(data));
        return;
      }
      if (rawLength(data) > MAX_DEVICE_TEXT_BYTES) return;
      this.onMessage(connection, rawText(data));
    });
    socket.on('close', () => {
      connection.mux.socketClosed();
      if (this.connections.get(deviceId) === connection) this.connections.delete(deviceId);
    });
    socket.on('error', () => socket.terminate());
  }

  /**
   * Opens a tunnel session on a device whose socket is on this replica (tunnel/mux.ts).
   * @throws TunnelRefused the device said no or did not answer; SkiffError conflict: not connected here
   */
  async openStream(deviceId: number, open: TunnelOpen): Promise<MuxStream> {
    const c = this.connections.get(deviceId);
    if (!c) throw new SkiffError('conflict', 'the device is not connected to this replica');
    return await c.mux.open(open);
  }

  /** True once {@link close} was called: sessions on the devices' sockets end because the server stops, not the devices. */
  get stopping(): boolean {
    return this.stopped;
  }
  private stopped = false;

  /** Closes every socket (the server is stopping: the agents reconnect, maybe to another replica). Idempotent. */
  close(): void {
    this.stopped = true;
    clearInterval(this.timer);
    for (const off of this.unsubscribe.splice(0)) off();
    for (const c of this.connections.values()) c.socket.close(1001, 'the server is stopping');
    this.connections.clear();
  }

  private send(connection: Connection, message: ServerToDevice): boolean {
    const { socket } = connection;
    if (socket.readyState !== socket.OPEN) return false;
    // Tunnel bytes share the socket: each open session may have up to its window of them waiting.
    if (socket.bufferedAmount > this.options.maxBufferedBytes + connection.mux.streams * STREAM_WINDOW_BYTES) {
      if (this.dropped++ === 0) this.log(`events: device ${connection.deviceId}'s connection is not keeping up; dropping messages to it (its polls catch up)`);
      return false;
    }
    socket.send(JSON.stringify(message));
    return true;
  }

  private async onTarget(event: EventOf<'target'>): Promise<void> {
    if (event.deviceIds && event.deviceIds.length > 0) {
      // A move or a removal changes what the fleet cache says: read the named devices' fleets again.
      const here = event.deviceIds.filter((id) => this.connections.has(id));
      if (here.length > 0) {
        const rows = await this.db.selectFrom('devices').select(['id', 'fleet_id']).where('id', 'in', here).execute();
        const fleets = new Map(rows.map((r) => [r.id, r.fleet_id]));
        for (const id of here) {
          const c = this.connections.get(id);
          if (!c) continue;
          const fleetId = fleets.get(id);
          if (fleetId === undefined) {
            c.socket.close(4004, 'the device was removed');
            this.connections.delete(id);
          } else c.fleetId = fleetId;
        }
      }
    }
    for (const c of concerned(this.connections.values(), event)) this.send(c, { type: 'update' });
  }

  private onAction(event: EventOf<'device-action'>): void {
    const c = this.connections.get(event.deviceId);
    if (!c) return;
    const sent = this.send(c, {
      type: 'action', id: event.id, action: event.action,
      ...(event.service !== undefined ? { service: event.service } : {}), ...(event.force !== undefined ? { force: event.force } : {}),
      sentAt: Date.now(), validMs: ACTION_VALID_MS,
    });
    if (!sent) return;
    const now = Date.now();
    for (const [id, p] of this.pending) if (p.until < now) this.pending.delete(id);
    this.pending.set(event.id, { deviceId: c.deviceId, until: now + this.options.actionAnswerMs });
    void this.events.publish({ topic: 'device-action-accepted', id: event.id });
  }

  private onMessage(connection: Connection, text: string): void {
    const message = parseDeviceMessage(text);
    if (!message) return;
    const p = this.pending.get(message.id);
    // Only the device an action went to answers it, once.
    if (!p || p.deviceId !== connection.deviceId) return;
    this.pending.delete(message.id);
    void this.events.publish({ topic: 'device-action-result', id: message.id, ok: message.ok, message: message.message });
  }

  private heartbeat(): void {
    if (this.dropped > 1) this.log(`events: dropped ${this.dropped} messages to slow device connections`);
    this.dropped = 0;
    for (const c of this.connections.values()) {
      if (!c.alive) {
        this.log(`events: device ${c.deviceId} did not answer a ping within ${Math.round(this.options.pingIntervalMs / 1000)} s; dropping its connection`);
        c.socket.terminate();
        this.connections.delete(c.deviceId);
        continue;
      }
      c.alive = false;
      c.socket.ping();
    }
  }
}

/** Largest JSON message a device may send (an action's answer is a few hundred bytes); binary ones are the multiplexer's. */
const MAX_DEVICE_TEXT_BYTES = 16 * 1024;

function rawLength(data: RawData): number {
  if (Array.isArray(data)) return data.reduce((n, b) => n + b.length, 0);
  return Buffer.isBuffer(data) ? data.length : data.byteLength;
}

function rawBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
