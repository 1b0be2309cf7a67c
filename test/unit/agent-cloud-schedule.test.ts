/**
 * The cloud agent's schedule as tables: the poll interval from config variables, jitter, the
 * error backoff `min(interval, 15 s · 2^n)`, Retry-After, and when a report is due.
 */
import assert from 'node:assert/strict';
import { backoffMs, BACKOFF_BASE_MS, DEFAULT_POLL_INTERVAL_MS, jitterMs, MAX_RETRY_AFTER_MS, MIN_POLL_INTERVAL_MS, nextDelayMs, pollIntervalMs, retryAfterMs } from '../../src/lib/agent/cloud/schedule.js';

describe('agent cloud: poll schedule', () => {
  const intervals: Array<[string, Record<string, string> | undefined, number | undefined, number]> = [
    ['no config', undefined, undefined, DEFAULT_POLL_INTERVAL_MS],
    ['empty config', {}, undefined, DEFAULT_POLL_INTERVAL_MS],
    ["balena's variable", { BALENA_SUPERVISOR_POLL_INTERVAL: '900000' }, undefined, 900_000],
    ['ours wins over balena', { SKIFF_AGENT_POLL_INTERVAL: '2000', BALENA_SUPERVISOR_POLL_INTERVAL: '900000' }, undefined, 2000],
    ['ours not a number: balena', { SKIFF_AGENT_POLL_INTERVAL: '2s', BALENA_SUPERVISOR_POLL_INTERVAL: '30000' }, undefined, 30_000],
    ['negative: skipped', { SKIFF_AGENT_POLL_INTERVAL: '-5' }, undefined, DEFAULT_POLL_INTERVAL_MS],
    ['empty string: skipped', { SKIFF_AGENT_POLL_INTERVAL: '' }, undefined, DEFAULT_POLL_INTERVAL_MS],
    ['spaces trimmed', { SKIFF_AGENT_POLL_INTERVAL: ' 4000 ' }, undefined, 4000],
    ['zero raised to the floor', { SKIFF_AGENT_POLL_INTERVAL: '0' }, undefined, MIN_POLL_INTERVAL_MS],
    ['the floor is 1 s, as the server reads it', { SKIFF_AGENT_POLL_INTERVAL: '999' }, undefined, 1000],
    ['config.json fallback', {}, 1000, 1000],
    ['variable wins over config.json', { BALENA_SUPERVISOR_POLL_INTERVAL: '5000' }, 1000, 5000],
    ['config.json fallback raised to the floor', {}, 10, MIN_POLL_INTERVAL_MS],
  ];
  for (const [name, config, fallback, want] of intervals) {
    it(`interval: ${name} → ${want} ms`, () => assert.equal(pollIntervalMs(config, fallback), want));
  }

  it('jitter is within a tenth of the interval and never negative', () => {
    for (const [interval, random, want] of [[60_000, 0, 0], [60_000, 0.5, 3000], [60_000, 0.9999999, 5999], [1000, 1, 99], [1000, -1, 0]] as const) {
      assert.equal(jitterMs(interval, random), want, `${interval} ${random}`);
    }
  });

  const backoffs: Array<[number, number, number]> = [
    // failures, interval, want
    [1, 60_000, 15_000],
    [2, 60_000, 30_000],
    [3, 60_000, 60_000],
    [4, 60_000, 60_000],
    [100, 60_000, 60_000],
    [1, 900_000, 15_000],
    [6, 900_000, 480_000],
    [7, 900_000, 900_000],
    [1, 1000, 1000], // a small interval caps the backoff: how a test makes retries fast
    [0, 60_000, 60_000],
  ];
  for (const [failures, interval, want] of backoffs) {
    it(`backoff after ${failures} error(s) at ${interval} ms → ${want} ms`, () => assert.equal(backoffMs(failures, interval), want));
  }
  it('the base is 15 s', () => assert.equal(BACKOFF_BASE_MS, 15_000));

  it('Retry-After: seconds, an HTTP date, garbage, bounds', () => {
    const now = Date.parse('2026-11-30T12:00:00Z');
    assert.equal(retryAfterMs('120', now), 120_000);
    assert.equal(retryAfterMs('0', now), 0);
    assert.equal(retryAfterMs('Mon, 30 Nov 2026 12:01:00 GMT', now), 60_000);
    assert.equal(retryAfterMs('Mon, 30 Nov 2026 11:00:00 GMT', now), 0);
    assert.equal(retryAfterMs('soon', now), undefined);
    assert.equal(retryAfterMs(undefined, now), undefined);
    assert.equal(retryAfterMs(null, now), undefined);
    assert.equal(retryAfterMs('99999999', now), MAX_RETRY_AFTER_MS);
  });

  const delays: Array<[string, Parameters<typeof nextDelayMs>[0], number, number, number]> = [
    ['success: interval + jitter', { failures: 0 }, 60_000, 0.5, 63_000],
    ['first error: base', { failures: 1 }, 60_000, 0.5, 15_000],
    ['Retry-After longer than the backoff', { failures: 1, retryAfterMs: 40_000 }, 60_000, 0, 40_000],
    ['Retry-After shorter than the backoff', { failures: 2, retryAfterMs: 1000 }, 60_000, 0, 30_000],
    ['Retry-After after a success (a 429 that still answered)', { failures: 0, retryAfterMs: 120_000 }, 60_000, 0, 120_000],
  ];
  for (const [name, outcome, interval, random, want] of delays) {
    it(`next poll: ${name}`, () => assert.equal(nextDelayMs(outcome, interval, random), want));
  }
});
