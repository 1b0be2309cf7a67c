/**
 * The VCDIFF decoder against real xdelta3 output (a deterministic local tool, so these stay unit
 * tests): every shape of change decodes byte-exact, and every damaged stream is 'corrupt'.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeltaApplyError } from '../../src/lib/delta/apply-image.js';
import { openConcatenatedFiles } from '../../src/lib/delta/source-file.js';
import { adler32, VcdiffDecoder } from '../../src/lib/delta/vcdiff.js';
import { assertDeltaFailure } from '../support/delta.js';
import { scratchDir } from '../support/tmp.js';

const dir = scratchDir('skiff-vcdiff-');
let fileNo = 0;

function file(data: Buffer): string {
  const p = path.join(dir, `f${fileNo++}`);
  writeFileSync(p, data);
  return p;
}

/** What `xdelta3 -e -9 -S none -A` writes for `target` against the concatenation of `sources`. */
function encode(sources: Buffer[], target: Buffer, extra: string[] = []): Buffer {
  const source = file(Buffer.concat(sources));
  const out = path.join(dir, `d${fileNo++}`);
  execFileSync('xdelta3', ['-e', '-9', '-S', 'none', '-A', ...extra, '-f', '-s', source, file(target), out]);
  return readFileSync(out);
}

/** Decodes `delta` fed in `chunkSize`-byte pieces against the `sources` files, concatenated. */
async function decode(sources: Buffer[], delta: Buffer, chunkSize = 7919): Promise<Buffer> {
  const source = await openConcatenatedFiles(sources.map(file));
  const out: Buffer[] = [];
  try {
    const chunks: Buffer[] = [];
    for (let i = 0; i < delta.length; i += chunkSize) chunks.push(delta.subarray(i, i + chunkSize));
    await pipeline(Readable.from(chunks), new VcdiffDecoder(source), new Writable({
      write(chunk: Buffer, _e, cb) {
        out.push(chunk);
        cb();
      },
    }));
  } finally {
    await source.close();
  }
  return Buffer.concat(out);
}

function assertCorrupt(promise: Promise<unknown>, pattern?: RegExp): Promise<void> {
  return assertDeltaFailure(promise, 'corrupt', pattern);
}

/** Text-like data with repeats (compresses like a file system layer does). */
function texty(n: number, seed: number): Buffer {
  const words = ['layer', 'busybox', 'skiff', 'device', 'fleet', 'release', '\n', 'etc/', 'usr/lib/', '0000644'];
  const parts: string[] = [];
  let x = seed;
  let len = 0;
  while (len < n) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const w = words[x % words.length]!;
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

describe('delta: VCDIFF decoder', function () {
  const base = Buffer.concat([texty(150_000, 1), randomBytes(100_000)]);
  const cases: Array<{ name: string; sources: Buffer[]; target: Buffer; extra?: string[] }> = [
    { name: 'identical files', sources: [base], target: base },
    { name: 'a one-byte change', sources: [base], target: Buffer.concat([base.subarray(0, 1000), Buffer.from([base[1000]! ^ 0xff]), base.subarray(1001)]) },
    { name: 'an insertion', sources: [base], target: Buffer.concat([base.subarray(0, 70_000), Buffer.from('inserted bytes here'), base.subarray(70_000)]) },
    { name: 'a deletion', sources: [base], target: Buffer.concat([base.subarray(0, 50_000), base.subarray(60_000)]) },
    { name: 'appended data', sources: [base], target: Buffer.concat([base, randomBytes(3000)]) },
    { name: 'an empty target', sources: [base], target: Buffer.alloc(0) },
    { name: 'an empty source', sources: [Buffer.alloc(0)], target: texty(40_000, 2) },
    { name: 'self-repeats (RUN and overlapping COPY)', sources: [Buffer.from('x')], target: Buffer.concat([Buffer.alloc(5000, 0x41), Buffer.from('abcabcabcabcabcabcabcabcabcabcabcabc'.repeat(300)), Buffer.alloc(20_000, 0)]) },
    { name: 'many windows (-W 16384)', sources: [base], target: Buffer.concat([base.subarray(100_000), Buffer.from('moved'), base.subarray(0, 100_000)]), extra: ['-W', '16384'] },
    { name: 'several base files concatenated', sources: [texty(30_000, 3), randomBytes(20_000), texty(25_000, 4)], target: Buffer.alloc(0) },
    { name: 'random data against random data', sources: [randomBytes(60_000)], target: randomBytes(60_000) },
    // what the server writes: no Adler-32 per window (the layer's sha256 is checked instead)
    { name: 'a one-byte change without window checksums (-n, as the server encodes)', sources: [base], target: Buffer.concat([base.subarray(0, 1000), Buffer.from([base[1000]! ^ 0xff]), base.subarray(1001)]), extra: ['-n', '-W', '16384'] },
  ];
  // the concatenated-bases target: bits of each base, reordered, so copies cross file boundaries
  const multi = cases[9]!;
  const all = Buffer.concat(multi.sources);
  multi.target = Buffer.concat([all.subarray(45_000, 60_000), all.subarray(0, 31_000), Buffer.from('new'), all.subarray(20_000, 75_000)]);

  for (const c of cases) {
    it(`round-trips ${c.name}`, async function () {
      const delta = encode(c.sources, c.target, c.extra);
      const out = await decode(c.sources, delta);
      assert.equal(out.length, c.target.length);
      assert.ok(out.equals(c.target), 'decoded bytes differ from the target');
      // one byte at a time too: every parse step must wait for the rest of its input
      if (delta.length < 2000) assert.ok((await decode(c.sources, delta, 1)).equals(c.target));
    });
  }

  it('computes Adler-32 as zlib does', function () {
    assert.equal(adler32(Buffer.from('Wikipedia')), 0x11e60398);
    assert.equal(adler32(Buffer.alloc(0)), 1);
    assert.equal(adler32(Buffer.alloc(100_000, 0xff)), adler32(Buffer.concat([Buffer.alloc(100_000, 0xff)])));
  });

  describe('damaged input', function () {
    const target = Buffer.concat([base.subarray(0, 80_000), Buffer.from('changed: new text in the middle'), base.subarray(80_100)]);
    let delta: Buffer;
    before(function () {
      delta = encode([base], target);
    });

    it('refuses a wrong magic', async function () {
      const bad = Buffer.from(delta);
      bad[1] = 0x00;
      await assertCorrupt(decode([base], bad), /not a VCDIFF stream/);
    });

    it('refuses a secondary compressor and a custom code table', async function () {
      for (const [bit, what] of [[0x01, /secondary compressor/], [0x02, /custom code table/]] as const) {
        const bad = Buffer.from(delta);
        bad[4] = bit;
        await assertCorrupt(decode([base], bad), what);
      }
    });

    it('refuses a truncated stream at every cut', async function () {
      for (const cut of [0, 3, 5, 6, 8, 12, 20, delta.length - 10, delta.length - 1]) {
        await assertCorrupt(decode([base], delta.subarray(0, cut)));
      }
    });

    it('refuses a window larger than the limit', async function () {
      const source = await openConcatenatedFiles([file(base)]);
      try {
        await assertCorrupt(pipeline(Readable.from([delta]), new VcdiffDecoder(source, { maxWindow: 1000 }), new Writable({ write: (_c, _e, cb) => cb() })), /larger than the 1000-byte limit/);
      } finally {
        await source.close();
      }
      // a header claiming a 1 GiB target window
      const huge = Buffer.from([0xd6, 0xc3, 0xc4, 0x00, 0x00, 0x00, 0x0f, 0x84, 0x80, 0x80, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
      await assertCorrupt(decode([base], huge), /limit/);
    });

    it('refuses a flipped byte in each section of a window', async function () {
      // each byte of the window after the magic: every one must fail or (rarely) still be checked by Adler-32
      let failures = 0;
      for (let i = 5; i < delta.length; i++) {
        for (const flip of [0x01, 0x80]) {
          const bad = Buffer.from(delta);
          bad[i] = bad[i]! ^ flip;
          try {
            const out = await decode([base], bad, 4096);
            // a flip that still decodes must give the right bytes (e.g. a same-valued address)
            assert.ok(out.equals(target), `byte ${i} ^ ${flip} decoded to other bytes without an error`);
          } catch (err) {
            assert.ok(err instanceof DeltaApplyError && err.failure === 'corrupt', `byte ${i}: ${String(err)}`);
            failures++;
          }
        }
      }
      assert.ok(failures > 0);
    });

    it('never hangs or throws anything but corrupt on random bytes after the header', async function () {
      for (let i = 0; i < 300; i++) {
        const junk = Buffer.concat([Buffer.from([0xd6, 0xc3, 0xc4, 0x00, 0x00]), randomBytes(1 + (i % 60))]);
        try {
          await decode([base], junk, 1 + (i % 7));
        } catch (err) {
          assert.ok(err instanceof DeltaApplyError && err.failure === 'corrupt', String(err));
        }
      }
    });

    it('refuses a stream with trailing garbage', async function () {
      await assertCorrupt(decode([base], Buffer.concat([delta, Buffer.from([0x01, 0x02])])));
    });

    it('refuses copies past the end of the source', async function () {
      await assertCorrupt(decode([base.subarray(0, 1000)], delta), /past the source/);
    });
  });
});
