/**
 * applyImageDelta against the real engine: v1 and v2 images built here, the delta files made with
 * xdelta3 + Brotli as the server makes them, v2 removed, then assembled from v1 and the delta.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, createReadStream, mkdirSync, openSync, readFileSync, readdirSync, statSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import type { DeltaDescriptor, DeltaLayer } from '../../src/lib/api/deltas.js';
import { applyImageDelta, cleanDeltaTmp, type ApplyImageDeltaOptions } from '../../src/lib/delta/apply-image.js';
import { createEngineClient } from '../../src/lib/docker/engine-lite.js';
import { assertDeltaFailure, fileSha256, makeDeltaFile } from '../support/delta.js';
import { BASE_AMD64, cleanupImages, ensureBaseImages, TEST_LABEL } from '../support/engine.js';
import { scratchDir } from '../support/tmp.js';

const LABEL = `${TEST_LABEL}=delta-apply`;
const engine = createEngineClient({ socketPath: '/var/run/docker.sock' });

function docker(...args: string[]): string {
  return execFileSync('docker', args, { encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function build(dir: string, tag: string, dockerfile: string): string {
  writeFileSync(path.join(dir, 'Dockerfile'), dockerfile);
  docker('build', '-q', '--label', LABEL, '-t', tag, dir);
  return docker('image', 'inspect', '--format', '{{.Id}}', tag);
}

interface Saved {
  config: Buffer;
  /** layer tar file per diffID, in rootfs order */
  layers: Array<{ diffId: string; file: string; size: number }>;
}

/** `docker save`s `tag` into `dir` and finds each layer tar by its place in the manifest. */
function save(tag: string, dir: string): Saved {
  mkdirSync(dir, { recursive: true });
  execFileSync('sh', ['-c', `docker save ${tag} | tar -C ${dir} -xf -`]);
  const [manifest] = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Array<{ Config: string; Layers: string[] }>;
  assert.ok(manifest);
  const config = readFileSync(path.join(dir, manifest.Config));
  const diffIds = (JSON.parse(config.toString()) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids;
  return {
    config,
    layers: manifest.Layers.map((l, i) => {
      const file = path.join(dir, l);
      return { diffId: diffIds[i] ?? '', file, size: statSync(file).size };
    }),
  };
}

/**
 * The delta from `v1` to `v2` as the server would describe it: layers v1 has are present, the
 * big layer and the version layer are deltas (the latter against two bases), the rest pulls.
 */
async function describe2(v1: Saved, v2: Saved, imageId: string, dir: string): Promise<{ delta: DeltaDescriptor; files: Map<number, string>; blobs: Map<string, string> }> {
  const files = new Map<number, string>();
  const blobs = new Map<string, string>();
  const have = new Set(v1.layers.map((l) => l.diffId));
  const layers: DeltaLayer[] = [];
  let downloadBytes = 0;
  for (const [i, l] of v2.layers.entries()) {
    if (have.has(l.diffId)) {
      layers.push({ source: 'present', diffId: l.diffId, size: l.size });
    } else if (i === 1 || i === 2) {
      const bases = i === 1 ? [v1.layers[1]!] : [v1.layers[2]!, v1.layers[1]!];
      const out = path.join(dir, `delta-${i}`);
      const made = await makeDeltaFile(bases.map((b) => b.file), l.file, out);
      files.set(i, out);
      downloadBytes += made.bytes;
      layers.push({ source: 'delta', diffId: l.diffId, size: l.size, bases: bases.map((b) => b.diffId), bytes: made.bytes, sha256: made.sha256 });
    } else {
      const out = path.join(dir, `blob-${i}.gz`);
      writeFileSync(out, gzipSync(readFileSync(l.file)));
      const digest = await fileSha256(out);
      blobs.set(digest, out);
      const bytes = readFileSync(out).length;
      downloadBytes += bytes;
      layers.push({ source: 'pull', diffId: l.diffId, size: l.size, digest, bytes, mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' });
    }
  }
  const hex = imageId.replace('sha256:', '');
  return {
    delta: { id: hex.slice(0, 32), src: `registry.local/app@sha256:${'1'.repeat(64)}`, dest: `registry.local/app@sha256:${'2'.repeat(64)}`, imageId, layers, downloadBytes, pullBytes: downloadBytes * 10 },
    files,
    blobs,
  };
}

function hasImage(name: string): boolean {
  try {
    docker('image', 'inspect', name);
    return true;
  } catch {
    return false;
  }
}

/** Builds v1 and v2 (v2: the big file changed a little, a new small layer), saves both, removes v2. */
async function makeImages(name: string, bigBytes: number, reordered = false): Promise<{ v1: Saved; v2: Saved; v2Id: string; v3?: { saved: Saved; id: string }; dir: string }> {
  const dir = scratchDir('skiff-delta-apply-');
  const ctx = path.join(dir, 'ctx');
  mkdirSync(ctx);
  // written a MiB at a time: the memory test must not start with the big file in this process
  const bigFile = path.join(ctx, 'big.bin');
  const fd = openSync(bigFile, 'w');
  for (let at = 0; at < bigBytes; at += 1 << 20) writeSync(fd, randomBytes(Math.min(1 << 20, bigBytes - at)));
  closeSync(fd);
  writeFileSync(path.join(ctx, 'version'), 'v1\n');
  build(ctx, `${name}:v1`, `FROM ${BASE_AMD64}\nCOPY big.bin /big.bin\nCOPY version /version\nCMD ["cat", "/version"]\n`);
  // v3: v1's two layers in the other order (same files, so the same diffIDs), built before they change
  let v3: { saved: Saved; id: string } | undefined;
  if (reordered) {
    const id = build(ctx, `${name}:v3`, `FROM ${BASE_AMD64}\nCOPY version /version\nCOPY big.bin /big.bin\nCMD ["cat", "/version"]\n`);
    v3 = { saved: save(`${name}:v3`, path.join(dir, 'v3')), id };
    docker('rmi', `${name}:v3`);
  }
  const change = openSync(bigFile, 'r+');
  writeSync(change, 'a small change in the middle of the big file', Math.floor(bigBytes / 2));
  closeSync(change);
  writeFileSync(path.join(ctx, 'version'), 'v2\n');
  writeFileSync(path.join(ctx, 'new.txt'), 'a new small layer\n');
  const v2Id = build(ctx, `${name}:v2`, `FROM ${BASE_AMD64}\nCOPY big.bin /big.bin\nCOPY version /version\nCOPY new.txt /new.txt\nCMD ["cat", "/version", "/new.txt"]\n`);
  const v1 = save(`${name}:v1`, path.join(dir, 'v1'));
  const v2 = save(`${name}:v2`, path.join(dir, 'v2'));
  docker('rmi', `${name}:v2`);
  assert.ok(!hasImage(v2Id));
  return { v1, v2, v2Id, dir, ...(v3 ? { v3 } : {}) };
}

function options(name: string, made: { delta: DeltaDescriptor; files: Map<number, string>; blobs: Map<string, string> }, config: Buffer, tmpDir: string, extra: Partial<ApplyImageDeltaOptions> = {}): ApplyImageDeltaOptions {
  return {
    docker: engine,
    source: `${name}:v1`,
    delta: made.delta,
    config,
    fetchDeltaLayer: (index, offset) => Promise.resolve(createReadStream(made.files.get(index) ?? '/nonexistent', { start: offset })),
    fetchBlob: (digest, offset) => Promise.resolve(createReadStream(made.blobs.get(digest) ?? '/nonexistent', { start: offset })),
    tmpDir,
    tag: `${name}:applied`,
    ...extra,
  };
}

describe('delta: applyImageDelta on the engine', function () {
  this.timeout(300_000);
  const name = 'skiff-delta-test/app';
  let images: Awaited<ReturnType<typeof makeImages>>;
  let made: Awaited<ReturnType<typeof describe2>>;

  before(async function () {
    await ensureBaseImages();
    await cleanupImages({ label: LABEL });
    images = await makeImages(name, 8 * 1024 * 1024, true);
    made = await describe2(images.v1, images.v2, images.v2Id, images.dir);
  });
  after(async function () {
    await cleanupImages({ label: LABEL });
  });
  afterEach(function () {
    if (hasImage(`${name}:applied`)) docker('rmi', `${name}:applied`);
  });

  it('assembles v2 byte-exact from v1, resuming a cut download, and tags it only then', async function () {
    assert.deepEqual(made.delta.layers.map((l) => l.source), ['present', 'delta', 'delta', 'pull']);
    const tmpDir = path.join(images.dir, 'tmp-ok');
    let cuts = 0;
    const progress: number[] = [];
    const result = await applyImageDelta(options(name, made, images.v2.config, tmpDir, {
      fetchDeltaLayer: (index, offset) => {
        const stream = createReadStream(made.files.get(index) ?? '', { start: offset });
        if (index !== 1 || cuts > 0) return Promise.resolve(stream);
        cuts++;
        // the first download of the big layer's delta breaks after 100 bytes
        let sent = 0;
        return Promise.resolve(Readable.from((async function* () {
          for await (const chunk of stream) {
            const buf = chunk as Buffer;
            if (sent + buf.length > 100) {
              yield buf.subarray(0, 100 - sent);
              stream.destroy();
              throw new Error('connection reset by peer');
            }
            sent += buf.length;
            yield buf;
          }
        })()));
      },
      onProgress: (downloaded, total) => {
        assert.equal(total, made.delta.downloadBytes);
        progress.push(downloaded);
      },
    }));
    assert.equal(cuts, 1);
    assert.equal(result.imageId, images.v2Id);
    assert.equal(result.downloadedBytes, made.delta.downloadBytes);
    assert.equal(progress.at(-1), made.delta.downloadBytes);
    assert.equal(docker('image', 'inspect', '--format', '{{.Id}}', `${name}:applied`), images.v2Id);
    assert.equal(docker('run', '--rm', '--label', LABEL, `${name}:applied`), 'v2\na new small layer');
    assert.deepEqual(readdirSync(tmpDir), []);
  });

  it('copies present layers out of their place from the export (nothing to download)', async function () {
    const v3 = images.v3;
    assert.ok(v3);
    const v1Layers = images.v1.layers.map((l) => l.diffId);
    assert.deepEqual(v3.saved.layers.map((l) => l.diffId), [v1Layers[0], v1Layers[2], v1Layers[1]], 'v3 reorders v1\'s layers');
    const delta: DeltaDescriptor = {
      ...made.delta,
      imageId: v3.id,
      layers: v3.saved.layers.map((l) => ({ source: 'present', diffId: l.diffId, size: l.size })),
      downloadBytes: 0,
    };
    const tmpDir = path.join(images.dir, 'tmp-present');
    const result = await applyImageDelta(options(name, { ...made, delta }, v3.saved.config, tmpDir));
    assert.deepEqual(result, { imageId: v3.id, downloadedBytes: 0 });
    assert.equal(docker('run', '--rm', '--label', LABEL, `${name}:applied`), 'v1');
    assert.deepEqual(readdirSync(tmpDir), []);
  });

  it('refuses a corrupt delta file: corrupt, nothing tagged, tmpDir empty', async function () {
    const tmpDir = path.join(images.dir, 'tmp-corrupt');
    const bad = path.join(images.dir, 'delta-1-bad');
    const data = readFileSync(made.files.get(1) ?? '');
    data[Math.floor(data.length / 2)] = (data[Math.floor(data.length / 2)] ?? 0) ^ 0x10;
    writeFileSync(bad, data);
    const files = new Map(made.files);
    files.set(1, bad);
    await assertDeltaFailure(applyImageDelta(options(name, { ...made, files }, images.v2.config, tmpDir)), 'corrupt');
    assert.ok(!hasImage(`${name}:applied`));
    assert.deepEqual(readdirSync(tmpDir), []);
  });

  it('refuses a missing source image as source', async function () {
    const tmpDir = path.join(images.dir, 'tmp-source');
    await assertDeltaFailure(applyImageDelta(options(name, made, images.v2.config, tmpDir, { source: `${name}:missing` })), 'source', /no image/);
    assert.deepEqual(readdirSync(tmpDir), []);
  });

  it('refuses a source image without the layers the delta names as source', async function () {
    const tmpDir = path.join(images.dir, 'tmp-source2');
    await assertDeltaFailure(applyImageDelta(options(name, made, images.v2.config, tmpDir, { source: BASE_AMD64 })), 'source', /lacks layer/);
    assert.deepEqual(readdirSync(tmpDir), []);
  });

  it('refuses a wrong config as corrupt', async function () {
    const tmpDir = path.join(images.dir, 'tmp-config');
    await assertDeltaFailure(applyImageDelta(options(name, made, images.v1.config, tmpDir)), 'corrupt', /config's sha256/);
    // a config whose digest is the delta's but whose layers are not
    const wrong = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [] } }));
    const delta = { ...made.delta, imageId: await fileSha256(writeTmp(images.dir, wrong)) };
    await assertDeltaFailure(applyImageDelta(options(name, { ...made, delta }, wrong, tmpDir)), 'corrupt', /not the delta's/);
    assert.deepEqual(readdirSync(tmpDir), []);
  });

  it('fails a download that keeps breaking as download', async function () {
    const tmpDir = path.join(images.dir, 'tmp-download');
    let calls = 0;
    await assertDeltaFailure(applyImageDelta(options(name, made, images.v2.config, tmpDir, {
      fetchDeltaLayer: () => {
        calls++;
        return Promise.reject(new Error('HTTP 503'));
      },
    })), 'download', /HTTP 503/);
    assert.equal(calls, 3);
    assert.ok(!hasImage(`${name}:applied`));
    assert.deepEqual(readdirSync(tmpDir), []);
  });

  it('cleanDeltaTmp empties what a killed apply left', async function () {
    const tmpDir = path.join(images.dir, 'tmp-killed');
    mkdirSync(path.join(tmpDir, 'sub'), { recursive: true });
    writeFileSync(path.join(tmpDir, 'export-0.part'), 'x');
    await cleanDeltaTmp(tmpDir);
    assert.deepEqual(readdirSync(tmpDir), []);
  });
});

describe('delta: applyImageDelta memory with a large layer', function () {
  this.timeout(600_000);
  const name = 'skiff-delta-test/big';
  const BIG = 256 * 1024 * 1024;

  before(async function () {
    await ensureBaseImages();
  });
  after(async function () {
    await cleanupImages({ label: LABEL });
  });

  it(`keeps the apply's memory growth under 64 MB for a ${BIG >> 20} MiB layer`, async function () {
    const images = await makeImages(name, BIG);
    const made = await describe2(images.v1, images.v2, images.v2Id, images.dir);
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 20);
    const tmpDir = path.join(images.dir, 'tmp-big');
    const started = Date.now();
    try {
      const result = await applyImageDelta(options(name, made, images.v2.config, tmpDir));
      assert.equal(result.imageId, images.v2Id);
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    const growth = (peak - baseline) / 1e6;
    console.log(`      apply of a ${BIG >> 20} MiB layer: RSS ${Math.round(baseline / 1e6)} MB → peak ${Math.round(peak / 1e6)} MB (+${growth.toFixed(1)} MB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    assert.ok(growth < 64, `RSS grew ${growth.toFixed(1)} MB`);
    assert.equal(docker('run', '--rm', '--label', LABEL, `${name}:applied`, 'sh', '-c', 'wc -c < /big.bin'), String(BIG));
    assert.deepEqual(readdirSync(tmpDir), []);
    docker('rmi', `${name}:applied`);
  });
});

function writeTmp(dir: string, data: Buffer): string {
  const file = path.join(dir, `tmp-${randomBytes(4).toString('hex')}`);
  writeFileSync(file, data);
  return file;
}
