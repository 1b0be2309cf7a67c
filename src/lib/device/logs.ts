/**
 * Reading a device's log stream (`GET /v2/local/logs`, newline-delimited JSON), with reconnects.
 */
import type { LogLine } from '../device-api/wire.js';
import { SkiffError } from '../errors/errors.js';
import type { DeviceClient } from './client.js';

/** One entry of the device's log stream: the wire format's line, as the device sent it. */
export type DeviceLogEntry = LogLine;

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

/** Streams entries until the signal aborts (follow) or the history ends. Skips entries already seen after a reconnect. */
export async function streamLogs(client: DeviceClient, o: StreamLogsOptions): Promise<void> {
  // After a reconnect the device sends its history again: skip what was printed already.
  // (Entries arrive in the order the device got them, not by timestamp, so a set, not a high-water mark.)
  const seen = new Set<string>();
  const order: string[] = [];
  let attempt = 0;
  const maxRetry = o.maxRetry ?? 1000;
  for (;;) {
    try {
      const res = await client.request('GET', `/v2/local/logs${o.follow ? '' : '?follow=false'}`, undefined, 10_000);
      if (!res.ok || !res.body) throw new SkiffError('deviceRefused', `the device refused the log stream (HTTP ${res.status})`);
      attempt = 0;
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
          for (const line of lines) {
            if (!line.trim()) continue;
            let e: DeviceLogEntry;
            try {
              e = JSON.parse(line) as DeviceLogEntry;
            } catch {
              continue;
            }
            const key = `${e.timestamp}|${e.serviceName ?? ''}|${e.message}`;
            if (seen.has(key)) continue;
            seen.add(key);
            order.push(key);
            if (order.length > 20_000) seen.delete(order.shift() ?? '');
            if (wanted(e, o)) o.onEntry(e);
          }
        }
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
      await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(attempt, 5))));
    }
  }
}
