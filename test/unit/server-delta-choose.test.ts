import assert from 'node:assert/strict';
import { chooseBases, commonBytes, finishDelta, MAX_BASES, NOT_SMALLER, NOTHING_IN_COMMON, NOTHING_TO_DOWNLOAD, planDelta, type EncodedLayer, type LayerListing, type LayerPlan, type TargetBlob } from '../../src/lib/server/deltas/choose.js';
import { sourceWindow } from '../../src/lib/server/deltas/generate.js';

const digest = (n: string | number): string => `sha256:${String(n).padStart(64, '0')}`;

/** A layer: id, then `path:size` entries. */
function layer(id: string | number, files: Record<string, number> = {}): LayerListing {
  const entries = new Map(Object.entries(files));
  return { diffId: digest(id), size: [...entries.values()].reduce((n, s) => n + s + 512, 1024), entries };
}

describe('server deltas: choosing layers and bases', () => {
  describe('commonBytes', () => {
    const cases: Array<[string, Record<string, number>, Record<string, number>, number]> = [
      ['nothing in common', { a: 10 }, { b: 10 }, 0],
      ['one shared path, counted at the target size', { a: 10, b: 5 }, { a: 99 }, 10],
      ['all shared', { a: 1, b: 2, c: 3 }, { a: 9, b: 9, c: 9 }, 6],
      ['empty target', {}, { a: 1 }, 0],
      ['empty source', { a: 1 }, {}, 0],
      ['larger target than source', { a: 1, b: 2, c: 3, d: 4 }, { d: 1 }, 4],
      ['zero-byte file shared', { a: 0 }, { a: 0 }, 0],
      ['paths are exact: no prefix matching', { 'usr/bin/x': 5 }, { 'usr/bin': 5 }, 0],
    ];
    for (const [name, target, source, expected] of cases) {
      it(name, () => assert.equal(commonBytes(layer(1, target), layer(2, source)), expected));
    }
  });

  describe('chooseBases', () => {
    const cases: Array<{ name: string; target: Record<string, number>; source: Array<Record<string, number>>; bases: number[] }> = [
      { name: 'no source layers', target: { a: 10 }, source: [], bases: [] },
      { name: 'no overlap with any layer', target: { a: 10 }, source: [{ b: 1 }, { c: 2 }], bases: [] },
      { name: 'only zero-byte files overlap', target: { a: 0, b: 0 }, source: [{ a: 1, b: 1 }], bases: [] },
      { name: 'the one layer that overlaps', target: { a: 10 }, source: [{ b: 1 }, { a: 1 }], bases: [1] },
      { name: 'the layer with the most bytes in common', target: { a: 100, b: 1 }, source: [{ b: 1 }, { a: 1 }], bases: [1] },
      { name: 'two layers each holding half, in source order', target: { a: 50, b: 50 }, source: [{ b: 1 }, { x: 1 }, { a: 1 }], bases: [0, 2] },
      { name: 'a layer covering everything is enough alone', target: { a: 50, b: 50 }, source: [{ a: 1 }, { a: 1, b: 1 }], bases: [1] },
      { name: 'ties go to the later (newer) layer', target: { a: 10 }, source: [{ a: 1 }, { a: 1 }], bases: [1] },
      { name: 'layers adding under 2% of the overlap each are left out', target: { a: 900, b: 30, c: 19, d: 19, e: 19, f: 13 }, source: [{ a: 1 }, { b: 1 }, { c: 1 }, { d: 1 }, { e: 1 }, { f: 1 }], bases: [0, 1] },
      { name: 'stops at 95% covered', target: { a: 95, b: 5 }, source: [{ a: 1 }, { b: 1 }], bases: [0] },
      { name: 'takes the second when under 95%', target: { a: 94, b: 6 }, source: [{ a: 1 }, { b: 1 }], bases: [0, 1] },
      {
        name: `at most ${MAX_BASES} bases`,
        target: { a: 20, b: 20, c: 20, d: 20, e: 20 },
        source: [{ a: 1 }, { b: 1 }, { c: 1 }, { d: 1 }, { e: 1 }],
        bases: [1, 2, 3, 4],
      },
      { name: 'marginal gain, not raw overlap, picks the second', target: { a: 40, b: 40, c: 20 }, source: [{ a: 1, b: 1 }, { a: 1, b: 1 }, { c: 1 }], bases: [1, 2] },
      { name: 'a duplicate layer is chosen once', target: { a: 10 }, source: [{ a: 1 }, { a: 1 }, { a: 1 }], bases: [2] },
      { name: 'many small files add up', target: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`f${i}`, 2])), source: [{ big: 1000 }, Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`f${i}`, 1]))], bases: [1] },
    ];
    for (const c of cases) {
      it(c.name, () => assert.deepEqual(chooseBases(layer('t', c.target), c.source.map((s, i) => layer(i + 100, s))), c.bases));
    }
  });

  describe('planDelta', () => {
    it('a layer with the same diffID is present, whatever its entries', () => {
      const same = layer(7, { a: 1 });
      assert.deepEqual(planDelta([same], [layer(7)]), [{ kind: 'present' }]);
    });
    it('plans each target layer in order: present, encode, pull', () => {
      const source = [layer(1, { 'bin/sh': 100 }), layer(2, { 'app/main.js': 1000 })];
      const target = [layer(1, { 'bin/sh': 100 }), layer(3, { 'app/main.js': 1001 }), layer(4, { 'new/thing': 50 })];
      assert.deepEqual(planDelta(source, target), [{ kind: 'present' }, { kind: 'encode', bases: [1] }, { kind: 'pull' }]);
    });
    it('a present source layer may still be a base of another target layer', () => {
      const source = [layer(1, { a: 100 }), layer(2, { b: 100 })];
      const target = [layer(1, { a: 100 }), layer(5, { a: 100, b: 100 })];
      assert.deepEqual(planDelta(source, target), [{ kind: 'present' }, { kind: 'encode', bases: [0, 1] }]);
    });
    it('an empty target image plans nothing', () => assert.deepEqual(planDelta([layer(1, { a: 1 })], []), []));
    it('an empty source image: every layer pulled', () => assert.deepEqual(planDelta([], [layer(1, { a: 1 }), layer(2, { b: 1 })]), [{ kind: 'pull' }, { kind: 'pull' }]));
    it('the same layer twice in the target: both present', () => {
      assert.deepEqual(planDelta([layer(1, { a: 1 })], [layer(1), layer(1)]), [{ kind: 'present' }, { kind: 'present' }]);
    });
  });

  describe('finishDelta', () => {
    const src = 'h/f/app@' + digest('a');
    const dest = 'h/f/app@' + digest('b');
    const blob = (i: number, bytes: number): TargetBlob => ({ digest: digest(`b${i}`), bytes, mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' });
    const enc = (bytes: number): EncodedLayer => ({ bytes, sha256: digest(`e${bytes}`) });
    function finish(plans: LayerPlan[], blobs: TargetBlob[], encoded: Array<[number, EncodedLayer]>, source = [layer(1, { a: 1 }), layer(2, { b: 1 })]) {
      const target = plans.map((p, i) => (p.kind === 'present' ? source[0] as LayerListing : layer(`t${i}`, { a: 1 })));
      return finishDelta({ id: 'ab'.repeat(16), src, dest, imageId: digest('c'), source, target, blobs, plans, encoded: new Map(encoded) });
    }
    const cases: Array<{ name: string; plans: LayerPlan[]; blobs: number[]; encoded: Array<[number, number]>; expect: string | Array<'present' | 'delta' | 'pull'>; download?: number; pull?: number }> = [
      { name: 'one smaller delta', plans: [{ kind: 'encode', bases: [0] }], blobs: [1000], encoded: [[0, 10]], expect: ['delta'], download: 10, pull: 1000 },
      { name: 'a delta as large as the blob is pulled: none', plans: [{ kind: 'encode', bases: [0] }], blobs: [1000], encoded: [[0, 1000]], expect: NOT_SMALLER },
      { name: 'a delta larger than the blob: none', plans: [{ kind: 'encode', bases: [0] }], blobs: [1000], encoded: [[0, 5000]], expect: NOT_SMALLER },
      { name: 'encoding gave up (no entry): none, not smaller', plans: [{ kind: 'encode', bases: [0] }], blobs: [1000], encoded: [], expect: NOT_SMALLER },
      { name: 'only pulls: nothing in common', plans: [{ kind: 'pull' }, { kind: 'pull' }], blobs: [10, 20], encoded: [], expect: NOTHING_IN_COMMON },
      { name: 'only present: nothing to download', plans: [{ kind: 'present' }], blobs: [10], encoded: [], expect: NOTHING_TO_DOWNLOAD },
      { name: 'present and pull: nothing in common', plans: [{ kind: 'present' }, { kind: 'pull' }], blobs: [10, 20], encoded: [], expect: NOTHING_IN_COMMON },
      { name: 'present, delta, pull', plans: [{ kind: 'present' }, { kind: 'encode', bases: [1] }, { kind: 'pull' }], blobs: [10, 500, 30], encoded: [[1, 7]], expect: ['present', 'delta', 'pull'], download: 37, pull: 530 },
      { name: 'one delta kept, one not smaller', plans: [{ kind: 'encode', bases: [0] }, { kind: 'encode', bases: [1] }], blobs: [100, 100], encoded: [[0, 5], [1, 150]], expect: ['delta', 'pull'], download: 105, pull: 200 },
      { name: 'a zero-byte delta of a non-empty blob is kept', plans: [{ kind: 'encode', bases: [0] }], blobs: [100], encoded: [[0, 0]], expect: ['delta'], download: 0, pull: 100 },
      { name: 'present layers count in neither figure', plans: [{ kind: 'present' }, { kind: 'present' }, { kind: 'encode', bases: [0] }], blobs: [1000, 2000, 300], encoded: [[2, 3]], expect: ['present', 'present', 'delta'], download: 3, pull: 300 },
      { name: 'an encoded size for a pull plan is ignored', plans: [{ kind: 'pull' }, { kind: 'encode', bases: [0] }], blobs: [100, 100], encoded: [[0, 1], [1, 2]], expect: ['pull', 'delta'], download: 102, pull: 200 },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const out = finish(c.plans, c.blobs.map((b, i) => blob(i, b)), c.encoded.map(([i, b]) => [i, enc(b)]));
        if (typeof c.expect === 'string') {
          assert.deepEqual(out, { kind: 'none', reason: c.expect });
          return;
        }
        assert.equal(out.kind, 'ready');
        if (out.kind !== 'ready') return;
        assert.deepEqual(out.descriptor.layers.map((l) => l.source), c.expect);
        assert.equal(out.descriptor.downloadBytes, c.download);
        assert.equal(out.descriptor.pullBytes, c.pull);
        assert.deepEqual(out.keep, c.expect.flatMap((k, i) => (k === 'delta' ? [i] : [])));
        for (const l of out.descriptor.layers) {
          if (l.source === 'delta') assert.ok(l.bases.length > 0 && l.bases.every((b) => /^sha256:/.test(b)));
          if (l.source === 'pull') assert.equal(l.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
        }
      });
    }
    it('a delta layer names its bases by diffID, in source order', () => {
      const source = [layer(1, { a: 1 }), layer(2, { b: 1 }), layer(3, { c: 1 })];
      const out = finish([{ kind: 'encode', bases: [0, 2] }], [blob(0, 100)], [[0, enc(1)]], source);
      assert.ok(out.kind === 'ready');
      const l = out.kind === 'ready' ? out.descriptor.layers[0] : undefined;
      assert.deepEqual(l?.source === 'delta' ? l.bases : [], [digest(1), digest(3)]);
    });
  });

  describe('sourceWindow', () => {
    const MiB = 1024 * 1024;
    const cases: Array<[number, number]> = [[0, MiB], [1, MiB], [MiB, MiB], [MiB + 1, 2 * MiB], [130 * MiB + 5, 131 * MiB], [256 * MiB + 1, 256 * MiB], [5 * 1024 * MiB, 256 * MiB]];
    for (const [bytes, window] of cases) it(`${bytes} bytes → ${window}`, () => assert.equal(sourceWindow(bytes), window));
  });
});
