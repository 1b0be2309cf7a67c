/**
 * The event bus across replicas: PostgreSQL LISTEN/NOTIFY on one channel, so replicas that share
 * a database share events without a broker. One dedicated connection (not from the pool: a pooled
 * connection goes back to the pool and stops listening) receives; publishing is one
 * `SELECT pg_notify(…)` on any pooled connection, so a listener that is reconnecting does not stop
 * this replica from telling the others.
 *
 * Each event is delivered once per replica: locally at once when published, and from the
 * notification on every other replica (a replica skips the echo of its own, by replica id).
 * Events are hints (bus.ts): one lost while the listener was down costs latency, not correctness,
 * and after a reconnect every device connected here is told to poll (`{topic:'target'}`).
 */
import pg from 'pg';
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { LocalEventBus, type ServerEvent, type Topic } from './bus.js';
import { parseJsonObject } from '../../text/json.js';

/** The NOTIFY channel every replica listens on. */
export const EVENT_CHANNEL = 'skiff_events';
/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. */
export const MAX_PAYLOAD_BYTES = 7999;
/** The listener's reconnect backoff: doubling from the first, capped (ms). */
const RECONNECT_FIRST_MS = 250;
const RECONNECT_MAX_MS = 30_000;

/** What crosses the channel: the publishing replica's id and the event. */
interface Envelope {
  r: string;
  e: ServerEvent;
}

// A record over every topic, so a new one cannot be left out (tunnel-locate was, and no replica heard it).
const TOPICS: ReadonlySet<string> = new Set(Object.keys({
  target: true, 'device-action': true, 'device-action-accepted': true, 'device-action-result': true, 'device-logs': true, build: true,
  'tunnel-locate': true, 'tunnel-located': true,
} satisfies Record<Topic, true>));

/**
 * A notification's payload as an envelope, or undefined for anything else (another program's
 * NOTIFY on our channel must not reach the subscribers as an event).
 */
export function parseEnvelope(payload: string | undefined): Envelope | undefined {
  if (payload === undefined) return undefined;
  const value = parseJsonObject(payload);
  if (!value) return undefined;
  const { r, e } = value;
  if (typeof r !== 'string' || !e || typeof e !== 'object') return undefined;
  const topic = (e as { topic?: unknown }).topic;
  if (typeof topic !== 'string' || !TOPICS.has(topic)) return undefined;
  return { r, e: e as ServerEvent };
}

/** The wait before reconnect attempt `failures` (1 for the first): doubling, capped, with up to half of it as jitter. */
export function reconnectDelayMs(failures: number, random: number): number {
  const base = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** Math.min(Math.max(failures - 1, 0), 20));
  return Math.round(base / 2 + (base / 2) * Math.min(Math.max(random, 0), 1));
}

export interface PgEventBusOptions {
  /** `postgres://…`, as the server's --database. */
  url: string;
  /** Publishes through this (the server's pool). */
  db: Kysely<Database>;
  /** This replica (ServiceContext.options.replicaId): its own echoes are skipped. */
  replicaId: string;
  log: (line: string) => void;
  /** Default {@link EVENT_CHANNEL} (tests use their own). */
  channel?: string;
}

export class PgEventBus extends LocalEventBus {
  private client: pg.Client | undefined;
  private closed = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly channel: string;

  private constructor(private readonly options: PgEventBusOptions) {
    super();
    this.channel = options.channel ?? EVENT_CHANNEL;
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(this.channel)) throw new Error(`bad channel name '${this.channel}'`);
  }

  /**
   * Connects the listener. Throws when PostgreSQL does not answer now (the server is starting and
   * needs its database anyway); a connection lost later is retried with backoff, for ever.
   */
  static async start(options: PgEventBusOptions): Promise<PgEventBus> {
    const bus = new PgEventBus(options);
    bus.client = await bus.listen();
    return bus;
  }

  override async publish(event: ServerEvent): Promise<void> {
    this.deliver(event);
    const payload = JSON.stringify({ r: this.options.replicaId, e: event } satisfies Envelope);
    if (Buffer.byteLength(payload) > MAX_PAYLOAD_BYTES) {
      this.options.log(`events: a '${event.topic}' event of ${Buffer.byteLength(payload)} bytes is too large for NOTIFY; other replicas will not see it`);
      return;
    }
    try {
      await sql`SELECT pg_notify(${this.channel}, ${payload})`.execute(this.options.db);
    } catch (err) {
      this.options.log(`events: could not tell the other replicas of a '${event.topic}' event: ${(err as Error).message}`);
    }
  }

  override async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
    await super.close();
  }

  private async listen(): Promise<pg.Client> {
    // Named, so an operator sees it in pg_stat_activity, and with the replica id: other replicas
    // take a listener's presence as the replica being alive (services/tunnel-sessions.ts liveReplicas).
    const client = new pg.Client({ connectionString: this.options.url, keepAlive: true, connectionTimeoutMillis: 5000, application_name: `skiff-events ${this.options.replicaId}` });
    let lost = false;
    const onLost = (why: string): void => {
      if (lost || this.closed) return;
      lost = true;
      if (this.client === client) this.client = undefined;
      client.end().catch(() => undefined);
      this.options.log(`events: lost the PostgreSQL listener (${why}); reconnecting. Devices still get changes by polling meanwhile`);
      this.reconnectLater();
    };
    client.on('error', (err) => onLost(err.message));
    client.on('end', () => onLost('connection closed'));
    client.on('notification', (message) => {
      if (message.channel !== this.channel) return;
      const envelope = parseEnvelope(message.payload);
      if (envelope && envelope.r !== this.options.replicaId) this.deliver(envelope.e);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${this.channel}`);
    } catch (err) {
      lost = true;
      await client.end().catch(() => undefined);
      throw err;
    }
    return client;
  }

  private reconnectLater(): void {
    if (this.closed) return;
    this.failures++;
    this.timer = setTimeout(() => {
      this.listen().then((client) => {
        if (this.closed) {
          void client.end().catch(() => undefined);
          return;
        }
        this.client = client;
        this.failures = 0;
        this.options.log('events: the PostgreSQL listener is back');
        // What other replicas published meanwhile is lost: every device connected here polls now.
        this.deliver({ topic: 'target' });
      }, () => this.reconnectLater());
    }, reconnectDelayMs(this.failures, Math.random()));
  }
}
