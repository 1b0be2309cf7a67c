/**
 * Device logs on the server: the batches agents post (stored as they come, one multi-row insert
 * per batch), a bounded history per device (newest N lines and M bytes, pruned in the background),
 * and the reads behind `skiff logs UUID` (history, and a follow that reads by id so a reconnect
 * neither repeats nor skips a line).
 *
 * Ids grow in commit order for one device: an agent has one batch in flight at a time, so a
 * follower reading `id > last` never passes a line that commits later with a smaller id.
 */
import { sql } from 'kysely';
import type { DeviceLogBatch, DeviceLogLine } from '../../api/logs.js';
import type { DeviceLogRow } from '../db/schema.js';
import type { Principal } from '../permissions.js';
import { authorize, type ServiceContext } from './context.js';
import { deviceOf } from './devices.js';
import { withoutNul } from '../nul.js';

type User = Extract<Principal, { kind: 'user' }>;
type DevicePrincipal = Extract<Principal, { kind: 'device' }>;

/** History lines when the caller does not say (`count`). */
export const DEFAULT_HISTORY_LINES = 1000;
/** Rows a follower reads per query: what one slow reader may hold in the server's memory. */
export const FOLLOW_PAGE_LINES = 500;

/** Which lines a reader wants: one of the device's services (any of `services`), or the agent's own. */
export interface LogFilter {
  services?: readonly string[];
  /** Only the agent's own lines. */
  system?: boolean;
}

/**
 * Stores one batch of `caller`'s own lines (a batch for another uuid is "not found": a device key
 * reaches only its own device). `dropped` becomes a system line after the batch's lines. Returns
 * the largest id stored (undefined for an empty batch), after publishing `device-logs`.
 */
export async function storeLogBatch(ctx: ServiceContext, caller: DevicePrincipal, uuid: string, batch: DeviceLogBatch): Promise<number | undefined> {
  const deviceId = caller.uuid === uuid ? caller.deviceId : -1;
  authorize(caller, 'deviceState', { kind: 'device', ownerId: -1, fleetId: caller.fleetId, deviceId }, `device ${uuid}`);
  const rows = batch.lines.map((l) => ({
    device_id: caller.deviceId, timestamp: l.timestamp, service: l.isSystem || l.serviceName === undefined ? null : withoutNul(l.serviceName),
    is_system: l.isSystem ? 1 : 0, is_stderr: l.isStdErr ? 1 : 0, message: withoutNul(l.message),
  }));
  if (batch.dropped) {
    const last = batch.lines[batch.lines.length - 1];
    rows.push({
      device_id: caller.deviceId, timestamp: last?.timestamp ?? ctx.clock().getTime(), service: null, is_system: 1, is_stderr: 1,
      message: `${batch.dropped} log line${batch.dropped === 1 ? ' was' : 's were'} dropped by the device`,
    });
  }
  if (rows.length === 0) return undefined;
  // Through the devices' write pool (no wait for the commit's fsync): a lost last fraction of a
  // second of log lines after a database crash is a fair price for the fleet's write rate.
  const ids = await ctx.hot.deviceWrites.insertInto('device_logs').values(rows).returning('id').execute();
  const lastId = Math.max(...ids.map((r) => Number(r.id)));
  await ctx.events.publish({ topic: 'device-logs', deviceId: caller.deviceId, lastId });
  return lastId;
}

/** A stored row as the API shows it: optional fields only when set, like the local-mode stream. */
export function lineOf(row: Pick<DeviceLogRow, 'id' | 'timestamp' | 'service' | 'is_system' | 'is_stderr' | 'message'>): DeviceLogLine {
  return {
    id: Number(row.id), timestamp: Number(row.timestamp), message: row.message,
    ...(row.service !== null ? { serviceName: row.service } : {}),
    ...(row.is_system ? { isSystem: true } : {}),
    ...(row.is_stderr ? { isStdErr: true } : {}),
  };
}

/** The caller's device (uuid or a unique prefix of 7+), or 404: another user's device is not found. */
export async function logDevice(ctx: ServiceContext, caller: User, uuid: string): Promise<number> {
  return (await deviceOf(ctx, caller, uuid)).device.id;
}

/**
 * Lines of a device: without `after`, the newest `count` (oldest first); with `after`, the oldest
 * `count` lines whose id is larger (a reader resuming where it stopped wants what follows, not the
 * newest). `upTo` bounds the ids read (a follower's snapshot of the newest id).
 */
export async function readLogs(ctx: ServiceContext, deviceId: number, options: LogFilter & { count: number; after?: number; upTo?: number }): Promise<DeviceLogLine[]> {
  let query = ctx.db.selectFrom('device_logs').select(['id', 'timestamp', 'service', 'is_system', 'is_stderr', 'message']).where('device_id', '=', deviceId);
  if (options.after !== undefined) query = query.where('id', '>', options.after);
  if (options.upTo !== undefined) query = query.where('id', '<=', options.upTo);
  if (options.system) query = query.where('is_system', '=', 1);
  else if (options.services && options.services.length > 0) query = query.where('service', 'in', [...options.services]).where('is_system', '=', 0);
  const newest = options.after === undefined;
  const rows = await query.orderBy('id', newest ? 'desc' : 'asc').limit(options.count).execute();
  if (newest) rows.reverse();
  return rows.map(lineOf);
}

/** The device's newest line id (0 when it has none). */
export async function newestLogId(ctx: ServiceContext, deviceId: number): Promise<number> {
  const row = await ctx.db.selectFrom('device_logs').select((eb) => eb.fn.max('id').as('id')).where('device_id', '=', deviceId).executeTakeFirst();
  return Number(row?.id ?? 0);
}

/**
 * Follows a device's lines: history first (as {@link readLogs}), then every new line, each handed
 * to `send` (which should wait while the reader is slow), until `signal` aborts. Wakes on the bus's
 * `device-logs` events for the device and every `pollMs` (events are hints; the database is the
 * truth). Reads at most {@link FOLLOW_PAGE_LINES} rows at a time. At each quiet `pollMs`,
 * `stillAllowed` (when given) is asked again and a false ends the follow: a removed device, or a
 * revoked key, no longer keeps a stream open (the reader's reconnect then hears why).
 */
export async function followLogs(ctx: ServiceContext, deviceId: number, options: LogFilter & { count: number; after?: number; pollMs?: number; signal: AbortSignal; send: (line: DeviceLogLine) => Promise<void>; stillAllowed?: () => Promise<boolean> }): Promise<void> {
  const { signal } = options;
  let wake: (() => void) | undefined;
  let woken = false;
  const poke = (): void => {
    woken = true;
    wake?.();
  };
  // Subscribed before the first read: a line stored meanwhile wakes the loop, never slips by.
  const unsubscribe = ctx.events.subscribe('device-logs', (e) => {
    if (e.deviceId === deviceId) poke();
  });
  signal.addEventListener('abort', poke, { once: true });
  try {
    // The newest id before the history read: lines stored later are the follow's, and any the
    // history already showed are skipped by taking the larger of the two as the cursor.
    let cursor = await newestLogId(ctx, deviceId);
    if (options.after !== undefined) cursor = options.after;
    else {
      const history = await readLogs(ctx, deviceId, { ...options, upTo: cursor });
      for (const line of history) {
        if (signal.aborted) return;
        await options.send(line);
      }
    }
    while (!signal.aborted) {
      woken = false;
      const head = await newestLogId(ctx, deviceId);
      while (cursor < head && !signal.aborted) {
        const page = await readLogs(ctx, deviceId, { ...options, count: FOLLOW_PAGE_LINES, after: cursor, upTo: head });
        for (const line of page) {
          if (signal.aborted) return;
          await options.send(line);
        }
        // A short page means nothing else matches up to `head`: rows the filter left out are passed over.
        cursor = page.length < FOLLOW_PAGE_LINES ? head : (page[page.length - 1]?.id ?? head);
      }
      if (woken || signal.aborted) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, options.pollMs ?? 5000);
        function done(): void {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        }
        wake = done;
      });
      if (!woken && !signal.aborted && options.stillAllowed && !(await options.stillAllowed())) return;
    }
  } finally {
    unsubscribe();
    signal.removeEventListener('abort', poke);
  }
}

/**
 * The retention rule, pure: given a device's newest rows (newest first, each with its message's
 * size in bytes), the smallest id to keep so that at most `lines` lines and `bytes` bytes remain
 * (the newest line is always kept, however long). Undefined when nothing needs deleting.
 */
export function retentionCut(newestFirst: ReadonlyArray<{ id: number; bytes: number }>, limits: { lines: number; bytes: number }): number | undefined {
  let total = 0;
  for (let i = 0; i < newestFirst.length; i++) {
    const row = newestFirst[i] as { id: number; bytes: number };
    total += row.bytes;
    if (i >= limits.lines || (i > 0 && total > limits.bytes)) {
      const kept = newestFirst[i - 1] as { id: number; bytes: number };
      return kept.id;
    }
  }
  return undefined;
}

/**
 * Prunes the devices that received lines since the last sweep, in the background: every
 * `intervalMs`, at most `perSweep` devices (the rest wait for the next sweep), each by one read of
 * its newest `lines + 1` rows and one delete of the ids below the cut.
 */
export class LogRetention {
  private readonly pending = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly unsubscribe: () => void;

  constructor(private readonly ctx: ServiceContext, private readonly intervalMs = 5000, private readonly perSweep = 100) {
    this.unsubscribe = ctx.events.subscribe('device-logs', (e) => this.pending.add(e.deviceId));
  }

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.sweep().catch((err: Error) => this.ctx.log(`log retention: ${err.message}`)).finally(() => {
        this.running = undefined;
      });
    }, this.intervalMs);
    this.timer.unref();
  }

  /** One sweep now (tests, and the timer). */
  async sweep(): Promise<void> {
    const devices = [...this.pending].slice(0, this.perSweep);
    for (const id of devices) {
      this.pending.delete(id);
      await pruneDevice(this.ctx, id);
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.unsubscribe();
    await this.running;
  }
}

/** Applies {@link retentionCut} to one device; answers how many lines were deleted. */
export async function pruneDevice(ctx: ServiceContext, deviceId: number): Promise<number> {
  const { lines, bytes } = ctx.options.logRetention;
  const size = ctx.dialect === 'postgres' ? sql<number>`octet_length(message)` : sql<number>`length(CAST(message AS BLOB))`;
  const rows = await ctx.db.selectFrom('device_logs').select(['id', size.as('bytes')]).where('device_id', '=', deviceId)
    .orderBy('id', 'desc').limit(lines + 1).execute();
  const cut = retentionCut(rows.map((r) => ({ id: Number(r.id), bytes: Number(r.bytes) })), { lines, bytes });
  if (cut === undefined) return 0;
  const result = await ctx.hot.deviceWrites.deleteFrom('device_logs').where('device_id', '=', deviceId).where('id', '<', cut).executeTakeFirst();
  return Number(result.numDeletedRows);
}
