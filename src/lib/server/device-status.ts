/** A device's online/offline status from its last poll (balena's rule), pure. */

/** Default poll interval of the agent when no config variable sets one: 60 s (ms). */
export const DEFAULT_POLL_INTERVAL_MS = 60_000;

/**
 * `online` while the last poll is at most 1.5 × the poll interval + 15 s old, else `offline`
 * (also when it never polled). Times in ms since the epoch; `pollIntervalMs` in ms.
 */
export function deviceStatus(lastSeenMs: number | undefined, pollIntervalMs: number, nowMs: number): 'online' | 'offline' {
  if (lastSeenMs === undefined) return 'offline';
  return nowMs - lastSeenMs <= 1.5 * pollIntervalMs + 15_000 ? 'online' : 'offline';
}
