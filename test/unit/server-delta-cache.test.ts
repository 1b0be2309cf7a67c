import assert from 'node:assert/strict';
import { parseByteSize, planEviction, type CachedDelta } from '../../src/lib/server/deltas/cache.js';
import { parseRange } from '../../src/lib/server/http/routes/deltas.js';
import { parseImageRef, retryAfterSeconds } from '../../src/lib/server/services/deltas.js';
import { deltaText } from '../../src/commands/release/info.js';
import { formatBytes } from '../../src/ui/format.js';
import { SkiffError } from '../../src/lib/errors/errors.js';

const d = (id: string, bytes: number, usedAt: number): CachedDelta => ({ id, bytes, usedAt });

describe('server deltas: cache bound, ranges, answers', () => {
  describe('planEviction', () => {
    const cases: Array<{ name: string; cached: CachedDelta[]; bound: number; keep?: string[]; evict: string[] }> = [
      { name: 'nothing cached', cached: [], bound: 0, evict: [] },
      { name: 'under the bound', cached: [d('a', 10, 1), d('b', 10, 2)], bound: 20, evict: [] },
      { name: 'one over: the oldest used goes', cached: [d('a', 10, 5), d('b', 10, 2)], bound: 15, evict: ['b'] },
      { name: 'several go until under', cached: [d('a', 10, 1), d('b', 10, 2), d('c', 10, 3), d('d', 10, 4)], bound: 15, evict: ['a', 'b', 'c'] },
      { name: 'bound 0 removes all', cached: [d('a', 1, 1), d('b', 1, 2)], bound: 0, evict: ['a', 'b'] },
      { name: 'kept ones stay even over the bound', cached: [d('a', 10, 1), d('b', 10, 2)], bound: 0, keep: ['a', 'b'], evict: [] },
      { name: 'a kept old one is skipped, the next oldest goes', cached: [d('a', 10, 1), d('b', 10, 2), d('c', 10, 3)], bound: 20, keep: ['a'], evict: ['b'] },
      { name: 'ties by id', cached: [d('b', 10, 1), d('a', 10, 1)], bound: 10, evict: ['a'] },
      { name: 'an unknown folder (used 0) goes first', cached: [d('a', 10, 100), d('z', 1, 0)], bound: 10, evict: ['z'] },
      { name: 'a large recent one can push out many old ones', cached: [d('a', 1, 1), d('b', 1, 2), d('big', 100, 3)], bound: 100, keep: ['big'], evict: ['a', 'b'] },
      { name: 'exactly at the bound: nothing', cached: [d('a', 5, 1), d('b', 5, 2)], bound: 10, evict: [] },
      { name: 'empty folders count nothing', cached: [d('a', 0, 1), d('b', 20, 2)], bound: 10, keep: ['b'], evict: ['a'] },
    ];
    for (const c of cases) it(c.name, () => assert.deepEqual(planEviction(c.cached, c.bound, new Set(c.keep ?? [])), c.evict));
  });

  describe('parseByteSize', () => {
    const ok: Array<[string, number]> = [['10G', 10 * 1024 ** 3], ['500M', 500 * 1024 ** 2], ['1.5GiB', 1.5 * 1024 ** 3], ['4096', 4096], ['1k', 1024], ['2TB', 2 * 1024 ** 4], ['0', 0], [' 3 M ', 3 * 1024 ** 2]];
    for (const [text, bytes] of ok) it(`'${text}' is ${bytes}`, () => assert.equal(parseByteSize(text), bytes));
    for (const bad of ['', 'G', '-1G', '10X', 'ten', '1.2.3G', '10 GG']) {
      it(`refuses '${bad}' naming the flag`, () => assert.throws(() => parseByteSize(bad), (err: unknown) => err instanceof SkiffError && err.code === 'usage' && /--delta-cache-size/.test(err.message)));
    }
  });

  describe('parseRange', () => {
    const cases: Array<[string | undefined, number, ReturnType<typeof parseRange>]> = [
      [undefined, 100, undefined],
      ['bytes=0-9', 100, { start: 0, end: 9 }],
      ['bytes=10-', 100, { start: 10, end: 99 }],
      ['bytes=-10', 100, { start: 90, end: 99 }],
      ['bytes=-1000', 100, { start: 0, end: 99 }],
      ['bytes=50-1000', 100, { start: 50, end: 99 }],
      ['bytes=99-99', 100, { start: 99, end: 99 }],
      ['bytes=100-', 100, 'unsatisfiable'],
      ['bytes=-0', 100, 'unsatisfiable'],
      ['bytes=9-5', 100, undefined],
      ['bytes=0-1,5-6', 100, undefined],
      ['items=0-1', 100, undefined],
      ['bytes=-', 100, undefined],
      ['BYTES = 1 - 2', 100, { start: 1, end: 2 }],
    ];
    for (const [header, size, expected] of cases) it(`${String(header)} of ${size}`, () => assert.deepEqual(parseRange(header, size), expected));
  });

  describe('parseImageRef', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    it('splits host, repository and digest', () => assert.deepEqual(parseImageRef(`h:1/f/app@${digest}`), { ref: `h:1/f/app@${digest}`, repository: 'f/app', digest }));
    it('no host: no repository', () => assert.equal(parseImageRef(`app@${digest}`).repository, ''));
  });

  describe('retryAfterSeconds', () => {
    const now = new Date('2026-12-01T00:01:00Z');
    const cases: Array<['queued' | 'running', string, number]> = [
      ['queued', '2026-12-01T00:00:00Z', 2], ['running', '2026-12-01T00:00:55Z', 2], ['running', '2026-12-01T00:00:30Z', 3], ['running', '2026-11-30T23:00:00Z', 5],
    ];
    for (const [status, updated, seconds] of cases) it(`${status} since ${updated}: ${seconds} s`, () => assert.equal(retryAfterSeconds({ status, updated_at: updated }, now), seconds));
  });

  describe('release info DELTA column', () => {
    const base = { from: '1a2b3c4d5e6f', downloadBytes: null, pullBytes: null, reason: null };
    const cases: Array<[Parameters<typeof deltaText>[0], string]> = [
      [null, '-'],
      [undefined, '-'],
      [{ ...base, status: 'done', downloadBytes: 1.2 * 1024 * 1024, pullBytes: 39 * 1024 * 1024 }, 'from 1a2b3c4: 1.2 MB vs 39.0 MB pull (33×)'],
      [{ ...base, status: 'done', downloadBytes: 500, pullBytes: 1000 }, 'from 1a2b3c4: 500 B vs 1000 B pull (2.0×)'],
      [{ ...base, status: 'queued' }, 'from 1a2b3c4: being made'],
      [{ ...base, status: 'running' }, 'from 1a2b3c4: being made'],
      [{ ...base, status: 'none', reason: 'no delta smaller than the pull' }, 'from 1a2b3c4: none (no delta smaller than the pull)'],
      [{ ...base, status: 'failed', reason: 'xdelta3 exited with 1' }, 'from 1a2b3c4: failed (xdelta3 exited with 1)'],
    ];
    for (const [delta, text] of cases) it(text, () => assert.equal(deltaText(delta, formatBytes), text));
  });
});
