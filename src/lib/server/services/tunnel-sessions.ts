/**
 * The session log of tunnels (`device_sessions`, `GET /devices/:uuid/sessions`): every ssh, tunnel
 * and public-URL session to a device — who, which device, what, when, and the bytes each way. A
 * row is written when the session opens and completed when it ends; the byte counts of a long
 * session are written every {@link FLUSH_MS} so the log shows them while it runs.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { DeviceSession } from '../../api/tunnel.js';
import type { Principal } from '../permissions.js';
import { isoNow, type ServiceContext } from './context.js';
import { deviceOf } from './devices.js';

type User = Extract<Principal, { kind: 'user' }>;

/** Byte counts of an open session are written this often (ms). */
export const FLUSH_MS = 30_000;

/** What opens a session row. */
export interface SessionStart {
  deviceId: number;
  /** Null for a public URL. */
  userId: number | null;
  kind: DeviceSession['kind'];
  actor: string;
  target: string;
  clientAddress: string;
}

/** An open session: count bytes as they pass, then end it once with its outcome. */
export interface SessionRecorder {
  /** 32 hex digits. */
  readonly uuid: string;
  /** Bytes from the client towards the device. */
  addIn(bytes: number): void;
  /** Bytes from the device towards the client. */
  addOut(bytes: number): void;
  /** Writes the end (`exit 0`, `closed`, `device connection lost`, …); later calls do nothing. Never throws (logs). */
  end(outcome: string): Promise<void>;
}

/**
 * Writes the session's row and returns its recorder.
 * @throws whatever the database throws (the session is then refused: no unlogged sessions)
 */
export async function startSession(ctx: ServiceContext, start: SessionStart): Promise<SessionRecorder> {
  const uuid = randomBytes(16).toString('hex');
  const row = await ctx.db.insertInto('device_sessions').values({
    uuid, device_id: start.deviceId, user_id: start.userId, kind: start.kind,
    actor: start.actor.slice(0, 200), target: start.target.slice(0, 500), client_address: start.clientAddress.slice(0, 100),
    replica: ctx.options.replicaId, started_at: isoNow(ctx), ended_at: null, bytes_in: 0, bytes_out: 0, outcome: null,
  }).returning('id').executeTakeFirstOrThrow();
  let bytesIn = 0;
  let bytesOut = 0;
  let written = { in: 0, out: 0 };
  let ended: Promise<void> | undefined;
  const flush = async (): Promise<void> => {
    if (written.in === bytesIn && written.out === bytesOut) return;
    written = { in: bytesIn, out: bytesOut };
    await ctx.db.updateTable('device_sessions').set({ bytes_in: bytesIn, bytes_out: bytesOut }).where('id', '=', row.id).execute();
  };
  const timer = setInterval(() => void flush().catch((err: Error) => ctx.log(`sessions: ${err.message}`)), FLUSH_MS);
  timer.unref();
  return {
    uuid,
    addIn: (n) => void (bytesIn += n),
    addOut: (n) => void (bytesOut += n),
    end: (outcome) => (ended ??= (async () => {
      clearInterval(timer);
      try {
        await ctx.db.updateTable('device_sessions').set({ bytes_in: bytesIn, bytes_out: bytesOut, ended_at: isoNow(ctx), outcome: outcome.slice(0, 200) }).where('id', '=', row.id).execute();
      } catch (err) {
        ctx.log(`sessions: cannot record the end of session ${uuid}: ${(err as Error).message}`);
      }
    })()),
  };
}

/**
 * The caller's device's sessions, newest first, at most `limit`.
 * @throws SkiffError notFound (not the caller's device)
 */
export async function listSessions(ctx: ServiceContext, caller: User, uuid: string, limit = 100): Promise<DeviceSession[]> {
  const { device } = await deviceOf(ctx, caller, uuid);
  const rows = await ctx.db.selectFrom('device_sessions').selectAll().where('device_id', '=', device.id).orderBy('id', 'desc').limit(limit).execute();
  return rows.map((r) => ({
    id: r.uuid, device: device.uuid, kind: r.kind, actor: r.actor, target: r.target, clientAddress: r.client_address,
    startedAt: r.started_at, endedAt: r.ended_at, bytesIn: Number(r.bytes_in), bytesOut: Number(r.bytes_out), outcome: r.outcome,
  }));
}

/**
 * Ends the rows of sessions a stopped replica left open (outcome `server stopped`): on SQLite all
 * open ones at start (one replica); on PostgreSQL the caller passes the replica ids to close.
 */
export async function closeAbandonedSessions(ctx: ServiceContext, replicas?: readonly string[]): Promise<number> {
  let q = ctx.db.updateTable('device_sessions').set({ ended_at: isoNow(ctx), outcome: 'server stopped' }).where('ended_at', 'is', null);
  if (replicas) {
    if (replicas.length === 0) return 0;
    q = q.where('replica', 'in', [...replicas]);
  }
  const result = await q.executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/** Replica ids that have open session rows. */
export async function openSessionReplicas(ctx: ServiceContext): Promise<string[]> {
  const rows = await ctx.db.selectFrom('device_sessions').select('replica').distinct().where('ended_at', 'is', null).execute();
  return rows.map((r) => r.replica);
}

/** The application name of a replica's event listener on PostgreSQL (events/pg-bus.ts), followed by its replica id. */
export const LISTENER_APPLICATION_PREFIX = 'skiff-events ';

/**
 * PostgreSQL only: the replicas alive now, by their event listeners' connections (each replica
 * holds one for as long as it runs, named {@link LISTENER_APPLICATION_PREFIX}<replica id>). A
 * replica whose listener is reconnecting at this moment looks dead; its sessions' own ends then
 * write their true outcome over `server stopped`.
 */
export async function liveReplicas(ctx: ServiceContext): Promise<string[]> {
  const result = await sql<{ application_name: string }>`SELECT application_name FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE ${`${LISTENER_APPLICATION_PREFIX}%`}`.execute(ctx.db);
  return result.rows.map((r) => r.application_name.slice(LISTENER_APPLICATION_PREFIX.length));
}
