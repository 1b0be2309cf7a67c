/**
 * Verification catches a drive that does not hold what was written, with nothing in the product
 * to help: the test flashes through the lib and changes one byte of the real loop device (or
 * file) from outside, in the progress callback that flashImage calls once the drives are written
 * and closed and before it reads them back. Also: a zip made on macOS flashed by the binary.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { inspectTarget, type Target } from '../../src/lib/os/drives.js';
import { flashImage, type FlashProgress } from '../../src/lib/os/flash.js';
import { openImageSource } from '../../src/lib/os/source.js';
import { runCli } from '../support/cli.js';
import { tempDir } from '../support/os-images.js';

const MiB = 1 << 20;
const sh = (cmd: string, cwd: string) => execFileSync('sh', ['-c', cmd], { cwd, encoding: 'utf8' }).trim();

/** Flips one byte of the target in place, flushed to the device (what a failing card does on its own). */
function flipByte(target: Target, offset: number): void {
  const fd = openSync(target.resolved, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, offset);
    b[0] = (b[0] ?? 0) ^ 0xff;
    writeSync(fd, b, 0, 1, offset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

describe('os flash verification (the lib, a real loop device)', function () {
  this.timeout(120_000);
  const tmp = tempDir('skiff-verify-');
  const loops: string[] = [];
  const file = (name: string) => path.join(tmp.dir, name);
  let image: Buffer;

  before(() => {
    image = Buffer.concat([randomBytes(36 * MiB), Buffer.alloc(4 * MiB)]);
    writeFileSync(file('os.img'), image);
    sh('gzip -k -1 os.img', tmp.dir);
  });
  after(() => {
    for (const dev of loops) {
      try {
        execFileSync('losetup', ['-d', dev]);
      } catch {
        // already gone
      }
    }
    tmp.remove();
  });

  function loop(name: string, size: number): string {
    sh(`truncate -s ${size} ${name}`, tmp.dir);
    const dev = sh(`losetup -f --show ${name}`, tmp.dir);
    loops.push(dev);
    return dev;
  }

  /** Flashes `imageFile` to `drive`, flipping the byte at `offset` when verification starts. */
  async function flashCorrupting(imageFile: string, drive: string, offset: number): Promise<{ error: unknown; phases: string[] }> {
    const target = await inspectTarget(drive);
    const phases: string[] = [];
    const onProgress = (p: FlashProgress) => {
      if (phases.at(-1) !== p.phase) phases.push(p.phase);
      if (p.phase === 'verifying' && p.bytes === 0) flipByte(target, offset);
    };
    const error = await flashImage({ source: await openImageSource(imageFile), targets: [target], verify: true, onProgress, reopen: () => openImageSource(imageFile) }).then(() => undefined, (err: unknown) => err);
    return { error, phases };
  }

  const differsAt = (drive: string, offset: number) => (err: unknown) =>
    err instanceof SkiffError && new RegExp(`^verification of ${drive} failed: it differs from the image at offset ${offset}\\. The card may be failing`).test(err.toLine());

  it('a byte changed on the loop device after writing is found, at its exact offset (compressed image: read again)', async () => {
    const dev = loop('gz.bin', 48 * MiB);
    const { error, phases } = await flashCorrupting(file('os.img.gz'), dev, 20_000_000);
    assert.deepEqual(phases, ['writing', 'flushing', 'verifying']);
    assert.ok(differsAt(dev, 20_000_000)(error), String(error));
  });

  it('the same with a raw image file (the bad block is read again from the file)', async () => {
    const dev = loop('raw.bin', 48 * MiB);
    const { error } = await flashCorrupting(file('os.img'), dev, 30_000_001);
    assert.ok(differsAt(dev, 30_000_001)(error), String(error));
  });

  it('the same when the target is an image file', async () => {
    const out = file('copy.img');
    const { error } = await flashCorrupting(file('os.img'), out, 5);
    assert.ok(differsAt(out, 5)(error), String(error));
  });

  it('left alone, the same flash verifies (the callback itself changes nothing)', async () => {
    const dev = loop('clean.bin', 48 * MiB);
    const target = await inspectTarget(dev);
    const result = await flashImage({ source: await openImageSource(file('os.img.gz')), targets: [target], verify: true, onProgress: () => {} });
    assert.deepEqual(result.drives.map((d) => d.verified), [true]);
  });
});

describe('os flash with a zip made on macOS (the binary)', function () {
  this.timeout(60_000);
  const tmp = tempDir('skiff-maczip-flash-');
  after(() => tmp.remove());

  it('flashes disk.img, not __MACOSX/._disk.img', async () => {
    const image = randomBytes(2 * MiB);
    mkdirSync(path.join(tmp.dir, '__MACOSX'));
    writeFileSync(path.join(tmp.dir, 'disk.img'), image);
    writeFileSync(path.join(tmp.dir, '__MACOSX/._disk.img'), Buffer.concat([Buffer.from([0, 5, 0x16, 7, 0, 2, 0, 0]), Buffer.alloc(4000)]));
    writeFileSync(path.join(tmp.dir, '.DS_Store'), Buffer.alloc(6148, 1));
    sh('zip -q mac.zip disk.img __MACOSX/._disk.img .DS_Store', tmp.dir);
    const out = path.join(tmp.dir, 'out.img');
    const r = await runCli(['os', 'flash', path.join(tmp.dir, 'mac.zip'), '--drive', out, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^Writing disk\.img from .*mac\.zip \(zip, 2\.0 MB\)/m);
    assert.ok(readFileSync(out).equals(image));
  });
});
