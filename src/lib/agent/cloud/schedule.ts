/**
 * When the agent talks to the cloud: pure functions of the target's config, the failures in a row
 * and a random number, so the schedule is tested by tables (test/unit/agent-cloud-schedule.test.ts).
 * The rules follow balena-supervisor (`src/api-binder/poll.ts`, `report.ts`): the poll interval is
 * a config variable, every poll gets random jitter so a fleet coming back online does not poll in
 * the same second, and errors back off `min(interval, 15 s · 2^n)`.
 */

/** Poll interval when the target sets none (balena's is 15 min; a self-hosted fleet is smaller). */
export const DEFAULT_POLL_INTERVAL_MS = 60_000;
/** The smallest interval a config variable may set: a typo must not make a fleet hammer its server. */
export const MIN_POLL_INTERVAL_MS = 1000;
/** The first backoff after an error; it doubles per error in a row, capped by the poll interval. */
export const BACKOFF_BASE_MS = 15_000;
/** A Retry-After the server sends is honoured up to this (an hour): a wrong header must not park a device for days. */
export const MAX_RETRY_AFTER_MS = 3_600_000;
/** State reports at most this often unless something important changed (applied, failed). */
export const STATE_REPORT_INTERVAL_MS = 10_000;
/** Metrics (memory, storage, cpu) at most this often. */
export const METRICS_REPORT_INTERVAL_MS = 300_000;

/** Config variables that set the poll interval (ms, as a string), ours first. */
export const POLL_INTERVAL_VARIABLES = ['SKIFF_AGENT_POLL_INTERVAL', 'BALENA_SUPERVISOR_POLL_INTERVAL'] as const;

/**
 * The poll interval in ms from the target's config variables: `SKIFF_AGENT_POLL_INTERVAL`, else
 * `BALENA_SUPERVISOR_POLL_INTERVAL`, else `fallbackMs` (config.json's `appUpdatePollInterval`, as
 * balenaOS has it, before the first target; else 60 s). A value that is not a whole number of ms is skipped
 * (the next variable, or the default, applies); one below {@link MIN_POLL_INTERVAL_MS} is raised to it.
 * @example pollIntervalMs({ BALENA_SUPERVISOR_POLL_INTERVAL: '900000' }) // 900000
 */
export function pollIntervalMs(config: Readonly<Record<string, string>> | undefined, fallbackMs = DEFAULT_POLL_INTERVAL_MS): number {
  for (const name of POLL_INTERVAL_VARIABLES) {
    const raw = config?.[name]?.trim();
    if (raw === undefined || !/^\d+$/.test(raw)) continue;
    return Math.max(MIN_POLL_INTERVAL_MS, Number(raw));
  }
  return Math.max(MIN_POLL_INTERVAL_MS, fallbackMs);
}

/**
 * Random jitter added to every regular poll: up to a tenth of the interval (balena: 0–60 s on
 * 15 min). `random` is in [0, 1), e.g. `Math.random()`.
 */
export function jitterMs(intervalMs: number, random: number): number {
  return Math.floor(Math.min(Math.max(random, 0), 0.999999) * (intervalMs / 10));
}

/** The wait after `failures` errors in a row (1 for the first): `min(interval, base · 2^(failures-1))`. */
export function backoffMs(failures: number, intervalMs: number, baseMs = BACKOFF_BASE_MS): number {
  if (failures <= 0) return intervalMs;
  return Math.min(intervalMs, baseMs * 2 ** Math.min(failures - 1, 30));
}

/**
 * A `Retry-After` header in ms from `nowMs`: delay-seconds or an HTTP date; undefined when absent
 * or unreadable, at most {@link MAX_RETRY_AFTER_MS}, never negative.
 */
export function retryAfterMs(header: string | null | undefined, nowMs: number): number | undefined {
  if (!header) return undefined;
  const text = header.trim();
  let ms: number;
  if (/^\d+$/.test(text)) ms = Number(text) * 1000;
  else {
    const at = Date.parse(text);
    if (Number.isNaN(at)) return undefined;
    ms = at - nowMs;
  }
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

/** What happened to the last request, for {@link nextDelayMs}. */
export interface Outcome {
  /** Errors in a row, this one included; 0 after a success. */
  failures: number;
  /** The server's Retry-After, in ms, if it sent one. */
  retryAfterMs?: number;
}

/**
 * The wait before the next poll: the interval plus jitter after a success; after an error the
 * backoff, or the server's Retry-After when that is longer.
 * @example nextDelayMs({ failures: 2 }, 60_000, 0) // 30000
 */
export function nextDelayMs(outcome: Outcome, intervalMs: number, random: number, baseMs = BACKOFF_BASE_MS): number {
  const own = outcome.failures > 0 ? backoffMs(outcome.failures, intervalMs, baseMs) : intervalMs + jitterMs(intervalMs, random);
  return Math.max(own, outcome.retryAfterMs ?? 0);
}
