/**
 * Reading a device's log stream (`GET /v2/local/logs`, newline-delimited JSON), with reconnects.
 */
import type { LogLine } from '../device-api/wire.js';
import { SkiffError } from '../errors/errors.js';
import type { DeviceClient } from './client.js';

/**
 * One log entry as read from a device: the wire format's line ({@link LogLine}), except that a
 * balenaOS supervisor starts each stream with `{"message":"Streaming logs","isSystem":true}` (no
 * timestamp), so `timestamp` is absent when the device did not give one.
 */
export type DeviceLogEntry = Omit<LogLine, 'timestamp'> & {
  /** Milliseconds since the epoch. */
  timestamp?: number;
};

function toTimestamp(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v !== 'string' || v.trim() === '') return undefined;
  const n = /^\d+$/.test(v.trim()) ? Number(v) : Date.parse(v);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * One line of the stream as an entry, whatever its shape: a line that is not JSON becomes its own
 * message, a message that is not a string its JSON, and fields of the wrong type are left out.
 * Never throws: a device's odd line is printed as well as it can be, not a crash.
 */
export function parseLogLine(line: string): DeviceLogEntry {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { message: line.replace(/\r$/, '') };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { message: typeof raw === 'string' ? raw : line };
  const r = raw as Record<string, unknown>;
  const message = typeof r.message === 'string' ? r.message : r.message === undefined || r.message === null ? line : JSON.stringify(r.message);
  const timestamp = toTimestamp(r.timestamp);
  return {
    message,
    ...(timestamp !== undefined ? { timestamp } : {}),
    ...(r.isSystem === true ? { isSystem: true } : {}),
    // balena's own tests also show `isStdout`.
    ...(r.isStdErr === true || r.isStdout === false ? { isStdErr: true } : {}),
    ...(typeof r.serviceName === 'string' && r.serviceName !== '' ? { serviceName: r.serviceName } : {}),
    ...(typeof r.serviceId === 'number' && Number.isInteger(r.serviceId) ? { serviceId: r.serviceId } : {}),
  };
}

/** Entries of one source come in time order: the system messages, or one service's output. */
function sourceOf(e: DeviceLogEntry): string {
  return e.isSystem ? 'system' : `service:${e.serviceName ?? e.serviceId ?? ''}`;
}

interface Mark {
  /** The newest timestamp seen from the source... */
  timestamp: number;
  /** ...and how many entries with exactly that timestamp were seen. */
  count: number;
}

/**
 * Tells the entries a device sends again after a reconnect (our agent replays its buffer; a
 * restarted agent re-reads the containers' logs with their original timestamps) from new ones.
 * Identical lines are not duplicates: a service that writes `same` three times in one millisecond
 * shows it three times. So per source it remembers the newest timestamp and how many entries had
 * it; after a reconnect it skips that source's older entries and that many at the newest
 * timestamp, and the first entry past them ends the replay for the source.
 * An entry without a timestamp cannot be placed, so it is always shown.
 */
export class ReplayFilter {
  private readonly seen = new Map<string, Mark>();
  private replay = new Map<string, Mark & { skipped: number }>();

  /** A new connection: what was seen so far may come again. */
  reconnected(): void {
    this.replay = new Map([...this.seen].map(([source, m]) => [source, { ...m, skipped: 0 }]));
  }

  /** True for an entry not seen before (and remembers it); false for one replayed. */
  isNew(e: DeviceLogEntry): boolean {
    const ts = e.timestamp;
    if (ts === undefined) return true;
    const source = sourceOf(e);
    const r = this.replay.get(source);
    if (r) {
      if (ts < r.timestamp) return false;
      if (ts === r.timestamp && r.skipped < r.count) {
        r.skipped++;
        return false;
      }
      this.replay.delete(source);
    }
    const m = this.seen.get(source);
    if (!m || ts > m.timestamp) this.seen.set(source, { timestamp: ts, count: 1 });
    else if (ts === m.timestamp) m.count++;
    return true;
  }
}

export interface StreamLogsOptions {
  /** Keep following after the history (otherwise stop once the history is read). */
  follow: boolean;
  services?: string[];
  system?: boolean;
  /** Reconnect attempts after the stream drops (follow mode). */
  maxRetry?: number;
  signal?: AbortSignal;
  onEntry: (e: DeviceLogEntry) => void;
  onReconnect?: (attempt: number, reason: string) => void;
}

function wanted(e: DeviceLogEntry, o: StreamLogsOptions): boolean {
  if (o.system) return Boolean(e.isSystem);
  if (o.services && o.services.length > 0) return Boolean(e.serviceName && o.services.includes(e.serviceName));
  return true;
}

/** Waits `ms`, or less if the signal aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Streams entries until the signal aborts (follow) or the history ends. After a reconnect, skips what the device replays. */
export async function streamLogs(client: DeviceClient, o: StreamLogsOptions): Promise<void> {
  const replays = new ReplayFilter();
  let attempt = 0;
  let connections = 0;
  const maxRetry = o.maxRetry ?? 1000;
  const take = (line: string) => {
    if (!line.trim()) return;
    const e = parseLogLine(line);
    if (replays.isNew(e) && wanted(e, o)) o.onEntry(e);
  };
  for (;;) {
    try {
      const res = await client.request('GET', `/v2/local/logs${o.follow ? '' : '?follow=false'}`, undefined, 10_000);
      if (!res.ok || !res.body) throw new SkiffError('deviceRefused', `the device refused the log stream (HTTP ${res.status})`);
      attempt = 0;
      if (connections++ > 0) replays.reconnected();
      const reader = res.body.getReader();
      const abort = () => void reader.cancel().catch(() => {});
      o.signal?.addEventListener('abort', abort, { once: true });
      const decoder = new TextDecoder();
      let partial = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          partial += decoder.decode(value, { stream: true });
          const lines = partial.split('\n');
          partial = lines.pop() ?? '';
          for (const line of lines) take(line);
        }
        // The history's last line may lack its newline. (A followed stream that drops mid-line
        // is not taken: the device sends that entry again after the reconnect.)
        if (!o.follow) take(partial + decoder.decode());
      } finally {
        o.signal?.removeEventListener('abort', abort);
      }
      if (!o.follow || o.signal?.aborted) return;
      throw new Error('the stream ended');
    } catch (err) {
      if (o.signal?.aborted) return;
      if (!o.follow) throw err;
      attempt++;
      if (attempt > maxRetry) throw err instanceof SkiffError ? err : new SkiffError('deviceUnreachable', `lost the device's log stream: ${(err as Error).message}`);
      o.onReconnect?.(attempt, (err as Error).message);
      await pause(Math.min(5000, 250 * 2 ** Math.min(attempt, 5)), o.signal);
    }
  }
}
