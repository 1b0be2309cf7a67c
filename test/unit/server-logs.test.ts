/** The server's log retention rule: which lines a device keeps (newest N lines and M bytes). */
import assert from 'node:assert/strict';
import { retentionCut } from '../../src/lib/server/services/logs.js';

/** Rows newest first: ids `newest`, `newest-1`, … each `bytes` long. */
const rows = (count: number, bytes: number | ((i: number) => number), newest = 1000) =>
  Array.from({ length: count }, (_, i) => ({ id: newest - i, bytes: typeof bytes === 'number' ? bytes : bytes(i) }));

describe('server log retention', () => {
  const cases: Array<[string, Array<{ id: number; bytes: number }>, { lines: number; bytes: number }, number | undefined]> = [
    ['nothing stored', [], { lines: 10, bytes: 100 }, undefined],
    ['under both limits', rows(5, 10), { lines: 10, bytes: 100 }, undefined],
    ['exactly the line limit', rows(10, 1), { lines: 10, bytes: 100 }, undefined],
    ['one line over the line limit keeps the newest 10', rows(11, 1), { lines: 10, bytes: 100 }, 991],
    ['exactly the byte limit', rows(10, 10), { lines: 100, bytes: 100 }, undefined],
    ['one byte over the byte limit drops the oldest line', rows(10, (i) => (i === 9 ? 11 : 10)), { lines: 100, bytes: 100 }, 992],
    ['bytes bind before lines', rows(50, 30), { lines: 40, bytes: 100 }, 998],
    ['lines bind before bytes', rows(50, 1), { lines: 20, bytes: 1000 }, 981],
    ['a newest line over the byte limit is kept alone', rows(3, 500), { lines: 10, bytes: 100 }, 1000],
    ['ids with gaps: the cut is a kept id', [{ id: 90, bytes: 1 }, { id: 50, bytes: 1 }, { id: 7, bytes: 1 }], { lines: 2, bytes: 100 }, 50],
  ];
  for (const [name, newestFirst, limits, cut] of cases) {
    it(name, () => assert.equal(retentionCut(newestFirst, limits), cut));
  }

  it('never keeps more than the limits, and keeps as much as they allow (random cases)', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    for (let n = 0; n < 500; n++) {
      const count = Math.floor(random() * 60);
      const given = rows(count, () => 1 + Math.floor(random() * 50));
      const limits = { lines: 1 + Math.floor(random() * 40), bytes: 1 + Math.floor(random() * 800) };
      const cut = retentionCut(given, limits);
      const kept = cut === undefined ? given : given.filter((r) => r.id >= cut);
      const bytes = kept.reduce((s, r) => s + r.bytes, 0);
      assert.ok(kept.length >= 1 || count === 0);
      assert.ok(kept.length <= limits.lines, `case ${n}: ${kept.length} lines kept`);
      assert.ok(bytes <= limits.bytes || kept.length === 1, `case ${n}: ${bytes} bytes kept`);
      const next = given[kept.length];
      if (next) assert.ok(kept.length + 1 > limits.lines || bytes + next.bytes > limits.bytes, `case ${n}: one more line would have fit`);
    }
  });
});
