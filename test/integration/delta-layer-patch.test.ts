/** patchLayer and the blob decoders: a layer file is written only as the bytes its diffID names. */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { DeltaApplyError } from '../../src/lib/delta/apply-image.js';
import { blobDecoders, patchLayer, writeLayerFile } from '../../src/lib/delta/layer-patch.js';
import { assertDeltaFailure, fileSha256, makeDeltaFile } from '../support/delta.js';
import { scratchDir } from '../support/tmp.js';

describe('delta: layer patch', function () {
  const dir = scratchDir('skiff-layer-patch-');
  const base1 = path.join(dir, 'base1.tar');
  const base2 = path.join(dir, 'base2.tar');
  const target = path.join(dir, 'target.tar');
  const deltaFile = path.join(dir, 'layer.delta');
  let delta: { bytes: number; sha256: string };
  let diffId: string;
  let size: number;

  before(async function () {
    const a = randomBytes(300_000);
    const b = randomBytes(200_000);
    writeFileSync(base1, a);
    writeFileSync(base2, b);
    const t = Buffer.concat([b.subarray(0, 150_000), Buffer.from('changed'), a.subarray(1000, 250_000), randomBytes(5000)]);
    writeFileSync(target, t);
    size = t.length;
    diffId = await fileSha256(target);
    delta = await makeDeltaFile([base1, base2], target, deltaFile, { window: 65536 });
  });

  const deltaStream = (data = readFileSync(deltaFile)): Readable => Readable.from([data.subarray(0, 1000), data.subarray(1000)]);

  it('writes the target layer from a Brotli VCDIFF against several bases', async function () {
    const out = path.join(dir, 'out1.tar');
    const n = await patchLayer(deltaStream(), [base1, base2], out, { diffId, size, fileSha256: delta.sha256, label: 'layer 1' });
    assert.equal(n, size);
    assert.ok(readFileSync(out).equals(readFileSync(target)));
  });

  it('refuses a wrong diffID, size or file sha256 as corrupt', async function () {
    const out = path.join(dir, 'out2.tar');
    await assertDeltaFailure(patchLayer(deltaStream(), [base1, base2], out, { diffId: `sha256:${'0'.repeat(64)}`, size, label: 'layer 1' }), 'corrupt', /diffID/);
    await assertDeltaFailure(patchLayer(deltaStream(), [base1, base2], out, { diffId, size: size - 1, label: 'layer 1' }), 'corrupt', /larger than/);
    await assertDeltaFailure(patchLayer(deltaStream(), [base1, base2], out, { diffId, size: size + 1, label: 'layer 1' }), 'corrupt', /bytes, not/);
    await assertDeltaFailure(patchLayer(deltaStream(), [base1, base2], out, { diffId, size, fileSha256: `sha256:${'1'.repeat(64)}`, label: 'layer 1' }), 'corrupt', /downloaded file's sha256/);
  });

  it('refuses a flipped byte, a cut file and a file that is no Brotli as corrupt', async function () {
    const out = path.join(dir, 'out3.tar');
    const data = readFileSync(deltaFile);
    const flipped = Buffer.from(data);
    const mid = Math.floor(data.length / 2);
    flipped[mid] = (flipped[mid] ?? 0) ^ 0x20;
    await assertDeltaFailure(patchLayer(deltaStream(flipped), [base1, base2], out, { diffId, size, label: 'layer 1' }), 'corrupt');
    await assertDeltaFailure(patchLayer(deltaStream(data.subarray(0, data.length - 5)), [base1, base2], out, { diffId, size, label: 'layer 1' }), 'corrupt');
    // Brotli checks little up front: random bytes either fail to decompress, or decompress to
    // something that is no VCDIFF, or (seen once in CI) to a stream too short for its header.
    await assertDeltaFailure(patchLayer(deltaStream(randomBytes(5000)), [base1, base2], out, { diffId, size, label: 'layer 1' }), 'corrupt', /does not decompress|not a VCDIFF stream|ends before its VCDIFF header/);
  });

  it('refuses the wrong bases (a source layer that changed) as corrupt', async function () {
    await assertDeltaFailure(patchLayer(deltaStream(), [base2, base1], path.join(dir, 'out4.tar'), { diffId, size, label: 'layer 1' }), 'corrupt');
  });

  it('reports a failing download as download, and missing bases as source', async function () {
    const failing = new Readable({
      read() {
        this.destroy(new Error('connection reset'));
      },
    });
    await assertDeltaFailure(patchLayer(failing, [base1, base2], path.join(dir, 'out5.tar'), { diffId, size, label: 'layer 1' }), 'download', /connection reset/);
    await assertDeltaFailure(patchLayer(deltaStream(), [path.join(dir, 'missing.tar')], path.join(dir, 'out6.tar'), { diffId, size, label: 'layer 1' }), 'source');
  });

  it('reports a full disk as disk', async function () {
    // /dev/full fails every write with ENOSPC
    await assertDeltaFailure(patchLayer(deltaStream(), [base1, base2], '/dev/full', { diffId, size, label: 'layer 1' }), 'disk', /no space left/);
    await assertDeltaFailure(writeLayerFile(Readable.from([readFileSync(target)]), [], '/dev/full', { diffId, size, label: 'layer 2' }), 'disk', /no space left/);
  });

  it('keeps a DeltaApplyError message to one line', function () {
    assert.equal(new DeltaApplyError('engine', 'the engine said:\n  bad\r\nthings\n').message, 'the engine said: bad things');
  });

  it('decodes gzip and plain blobs by media type, and refuses others', async function () {
    const tar = readFileSync(target);
    const out = path.join(dir, 'out7.tar');
    await writeLayerFile(Readable.from([gzipSync(tar)]), await blobDecoders('application/vnd.docker.image.rootfs.diff.tar.gzip'), out, { diffId, size, label: 'layer 2' });
    assert.ok(readFileSync(out).equals(tar));
    await writeLayerFile(Readable.from([tar]), await blobDecoders('application/vnd.oci.image.layer.v1.tar'), out, { diffId, size, label: 'layer 2' });
    await assertDeltaFailure(writeLayerFile(Readable.from([Buffer.from('not gzip at all')]), await blobDecoders('application/vnd.oci.image.layer.v1.tar+gzip'), out, { diffId, size, label: 'layer 2' }), 'corrupt', /does not decompress/);
    const zst = path.join(dir, 'target.tar.zst');
    execFileSync('zstd', ['-q', '-f', '-o', zst, target]);
    await writeLayerFile(Readable.from([readFileSync(zst)]), await blobDecoders('application/vnd.oci.image.layer.v1.tar+zstd'), out, { diffId, size, label: 'layer 2' });
    assert.ok(readFileSync(out).equals(tar));
    await assertDeltaFailure(blobDecoders('application/json'), 'corrupt', /no layer tar/);
    assert.ok(existsSync(out));
  });
});
