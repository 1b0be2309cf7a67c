/**
 * The server's event bus: how a change made by one request reaches the code that must react to it
 * (a device's socket, a log follower, a build watcher), on this replica or another. With SQLite
 * there is one replica and the bus is in-process; with PostgreSQL events cross replicas through
 * LISTEN/NOTIFY (see pg-bus.ts), so no broker is needed. Events are hints, never the data: a
 * receiver reads the database for the truth, so a lost event costs latency, not correctness.
 * Publish after the transaction that made the change has committed.
 */
import { EventEmitter } from 'node:events';
import type { DeviceActionName } from '../../api/events.js';

/** Every event, by topic. Ids are the database's row ids. Payloads stay small (NOTIFY carries at most 8000 bytes). */
export type ServerEvent =
  /**
   * A device's target may have changed: one fleet's devices, or some devices (neither: every
   * device, as after a replica lost events while its bus reconnected). A device whose fleet
   * changed (a move) or that was removed is named in `deviceIds`.
   */
  | { topic: 'target'; fleetId?: number; deviceIds?: number[] }
  /** An action for a device, to be sent by whichever replica holds its socket. */
  | { topic: 'device-action'; id: string; deviceId: number; action: DeviceActionName; service?: string; force?: boolean }
  /** The replica holding the device's socket sent action `id` to it (no such notice: the device is connected nowhere). */
  | { topic: 'device-action-accepted'; id: string }
  /** The device's answer, for the replica whose request waits on `id`. */
  | { topic: 'device-action-result'; id: string; ok: boolean; message: string }
  /** New log lines of a device were stored, up to `lastId`. */
  | { topic: 'device-logs'; deviceId: number; lastId: number }
  /** A build has new events (up to `seq`) or a new status, or its cancel was requested. */
  | { topic: 'build'; buildId: number; seq?: number; cancel?: boolean }
  /** Which replica holds device `deviceId`'s socket? Asked by a replica that got a tunnel session for it. */
  | { topic: 'tunnel-locate'; id: string; deviceId: number }
  /** The answer to `tunnel-locate` `id`: the holder's URL for replicas (its --replica-url). */
  | { topic: 'tunnel-located'; id: string; replicaUrl: string };

export type Topic = ServerEvent['topic'];
export type EventOf<T extends Topic> = Extract<ServerEvent, { topic: T }>;

export interface EventBus {
  /** Delivers to every subscriber on every replica (this one included). Never throws for a lost event: logs it. */
  publish(event: ServerEvent): Promise<void>;
  /** Returns the unsubscribe function. Handlers run asynchronously and must not throw. */
  subscribe<T extends Topic>(topic: T, handler: (event: EventOf<T>) => void): () => void;
  close(): Promise<void>;
}

/** One replica's bus (SQLite, or tests): an EventEmitter, delivering on the next tick. */
export class LocalEventBus implements EventBus {
  protected readonly emitter = new EventEmitter();

  constructor() {
    // Every follower and socket subscribes: thousands of listeners per topic are normal here.
    this.emitter.setMaxListeners(0);
  }

  publish(event: ServerEvent): Promise<void> {
    this.deliver(event);
    return Promise.resolve();
  }

  /** Hands an event (local, or received from another replica) to this replica's subscribers. */
  protected deliver(event: ServerEvent): void {
    setImmediate(() => this.emitter.emit(event.topic, event));
  }

  subscribe<T extends Topic>(topic: T, handler: (event: EventOf<T>) => void): () => void {
    const listener = (event: EventOf<T>) => handler(event);
    this.emitter.on(topic, listener);
    return () => this.emitter.off(topic, listener);
  }

  close(): Promise<void> {
    this.emitter.removeAllListeners();
    return Promise.resolve();
  }
}
