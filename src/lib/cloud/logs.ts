/**
 * A cloud device's logs through the server (`GET /devices/:uuid/logs`): the history, or a follow
 * over server-sent events that, when the stream drops (the server restarted, the network cut),
 * reconnects with backoff from the last line id it printed, so nothing repeats or goes missing.
 */
import type { DeviceLogLine, DeviceLogsQuery } from '../api/logs.js';
import { SkiffError } from '../errors/errors.js';
import type { CloudClient } from './client.js';
import { readServerSentEvents } from './sse.js';

export interface CloudLogsOptions {
  /** Keep following after the history. */
  follow: boolean;
  /** Only these services. */
  services?: string[];
  /** Only the agent's own lines. */
  system?: boolean;
  /** Lines of history (the server's default, 1000, when absent). */
  maxLines?: number;
  /** Reconnect attempts in a row before giving up (follow). Default 1000. */
  maxRetry?: number;
  signal?: AbortSignal;
  onLine: (line: DeviceLogLine) => void;
  onReconnect?: (attempt: number, reason: string) => void;
}

/** Errors a reconnect cannot fix: the device is gone, the login expired, the request is wrong. */
function isFinal(err: unknown): boolean {
  return err instanceof SkiffError && ['notFound', 'notLoggedIn', 'usage', 'interrupted'].includes(err.code);
}

function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Prints (through `onLine`) the device's history, and with `follow` every new line until `signal`
 * aborts.
 *
 * @throws SkiffError notFound (12) for a device that is not the caller's; serverUnreachable (13)
 *   when the server stays away for `maxRetry` attempts in a row
 */
export async function cloudLogs(client: CloudClient, uuid: string, o: CloudLogsOptions): Promise<void> {
  const filter: DeviceLogsQuery = {
    ...(o.services && o.services.length > 0 ? { service: o.services } : {}),
    ...(o.system ? { system: 'true' as const } : {}),
    ...(o.maxLines !== undefined ? { count: String(o.maxLines) } : {}),
  };
  if (!o.follow) {
    for (const line of await client.deviceLogs(uuid, filter)) o.onLine(line);
    return;
  }
  let lastId: number | undefined;
  let attempt = 0;
  const maxRetry = o.maxRetry ?? 1000;
  for (;;) {
    try {
      const res = await client.stream('deviceLogs', {
        params: { uuid },
        // After a drop: everything after the last line printed (not the newest N), history included.
        query: { ...filter, follow: 'true', ...(lastId !== undefined ? { after: String(lastId) } : {}) },
        headers: { accept: 'text/event-stream' },
        ...(o.signal ? { signal: o.signal } : {}),
      });
      if (!res.body) throw new SkiffError('serverUnreachable', 'the server answered the log follow without a body');
      const reader = res.body;
      const abort = (): void => void reader.cancel().catch(() => {});
      o.signal?.addEventListener('abort', abort, { once: true });
      try {
        await readServerSentEvents(reader, (event) => {
          attempt = 0;
          const line = JSON.parse(event.data) as DeviceLogLine;
          if (lastId !== undefined && line.id <= lastId) return;
          lastId = line.id;
          o.onLine(line);
        });
      } finally {
        o.signal?.removeEventListener('abort', abort);
      }
      if (o.signal?.aborted) return;
      throw new SkiffError('serverUnreachable', 'the server ended the stream');
    } catch (err) {
      if (o.signal?.aborted) return;
      if (isFinal(err)) throw err;
      attempt++;
      if (attempt > maxRetry) throw err instanceof SkiffError ? err : new SkiffError('serverUnreachable', `lost the log stream: ${(err as Error).message}`);
      o.onReconnect?.(attempt, (err as Error).message);
      await pause(Math.min(5000, 250 * 2 ** Math.min(attempt, 5)), o.signal);
    }
  }
}
