/**
 * Where a device's socket is, for a tunnel session that reached a replica other than the one
 * holding it. As with device actions (device-actions.ts), nothing is stored: the replica asks on
 * the bus (`tunnel-locate`) and the holder answers with its `--replica-url` (`tunnel-located`).
 * On SQLite there is one replica, so a device not connected here is offline at once.
 */
import { randomUUID } from 'node:crypto';
import type { DeviceChannels } from '../events/channel.js';
import type { ServiceContext } from './context.js';

/** How long to wait for the holder's answer (ms) before calling the device offline. */
export const LOCATE_WAIT_MS = 1500;

export type DeviceLocation = { here: true } | { here: false; replicaUrl: string };

/**
 * Answers other replicas' `tunnel-locate` for devices connected here; returns the unsubscribe.
 * The replica's URL is read at each answer: routes subscribe before the server listens, and the
 * URL is known only once it does (an ephemeral port).
 */
export function answerLocates(ctx: ServiceContext, channels: DeviceChannels): () => void {
  return ctx.events.subscribe('tunnel-locate', (e) => {
    const replicaUrl = ctx.options.replicaUrl;
    if (replicaUrl !== undefined && channels.has(e.deviceId)) void ctx.events.publish({ topic: 'tunnel-located', id: e.id, replicaUrl });
  });
}

/**
 * The replica holding device `deviceId`'s socket: here, another one (its URL), or none (undefined:
 * the device is offline).
 */
export async function locateDevice(ctx: ServiceContext, channels: DeviceChannels, deviceId: number, waitMs = LOCATE_WAIT_MS): Promise<DeviceLocation | undefined> {
  if (channels.has(deviceId)) return { here: true };
  if (ctx.dialect !== 'postgres') return undefined;
  const id = randomUUID();
  let found: (url: string) => void = () => undefined;
  const answered = new Promise<string>((resolve) => (found = resolve));
  const off = ctx.events.subscribe('tunnel-located', (e) => e.id === id && e.replicaUrl !== ctx.options.replicaUrl && found(e.replicaUrl));
  let timer: NodeJS.Timeout | undefined;
  try {
    await ctx.events.publish({ topic: 'tunnel-locate', id, deviceId });
    const url = await Promise.race([answered, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), waitMs)))]);
    // The socket may have moved here meanwhile.
    if (url === undefined) return channels.has(deviceId) ? { here: true } : undefined;
    return { here: false, replicaUrl: url };
  } finally {
    clearTimeout(timer);
    off();
  }
}
