import assert from 'node:assert/strict';
import { batchLookups } from '../../src/lib/server/db/batch.js';

describe('server: lookups batched per turn of the event loop (db/batch.ts)', () => {
  it('answers the lookups of one turn with one load, each with its own value (undefined when not found)', async () => {
    const loads: string[][] = [];
    const lookup = batchLookups<string, number>(async (keys) => {
      loads.push(keys);
      return new Map(keys.filter((k) => k !== 'missing').map((k) => [k, k.length]));
    });
    const answers = await Promise.all(['a', 'bb', 'a', 'missing', 'cccc'].map(lookup));
    assert.deepEqual(answers, [1, 2, 1, undefined, 4]);
    assert.deepEqual(loads, [['a', 'bb', 'missing', 'cccc']], 'one load, each key once');
    assert.equal(await lookup('ddd'), 3);
    assert.equal(loads.length, 2, 'a later turn is a new load');
  });

  it('splits at the largest batch, and fails every lookup of a batch whose load fails', async () => {
    const sizes: number[] = [];
    const lookup = batchLookups<number, number>(async (keys) => {
      sizes.push(keys.length);
      if (keys.includes(-1)) throw new Error('database away');
      return new Map(keys.map((k) => [k, k * 2]));
    }, 3);
    assert.deepEqual(await Promise.all([1, 2, 3, 4, 5].map(lookup)), [2, 4, 6, 8, 10]);
    assert.deepEqual(sizes, [3, 2]);
    const results = await Promise.allSettled([7, -1].map(lookup));
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    assert.match(String((results[0] as PromiseRejectedResult).reason), /database away/);
    assert.equal(await lookup(8), 16, 'the next batch runs again');
  });
});
