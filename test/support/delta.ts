/**
 * Test support for delta updates: delta files made the way the server makes them
 * (`xdelta3 -e -9 -S none -A -n -B <n> -s <bases concatenated> <target>`, then Brotli).
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, rmSync, statSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { brotliCompressSync } from 'node:zlib';
import { DeltaApplyError, type DeltaFailure } from '../../src/lib/delta/apply-image.js';

/** sha256 of a file, `sha256:<hex>`. */
export async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

/** Writes the Brotli-compressed VCDIFF of `target` against `bases` (concatenated) to `out`. */
export async function makeDeltaFile(bases: string[], target: string, out: string, options: { window?: number } = {}): Promise<{ bytes: number; sha256: string }> {
  const source = `${out}.source`;
  const vcdiff = `${out}.vcdiff`;
  try {
    const sink = createWriteStream(source);
    for (const b of bases) await pipeline(createReadStream(b), sink, { end: false });
    await new Promise<void>((resolve, reject) => sink.end((err?: Error | null) => (err ? reject(err) : resolve())));
    let sourceBytes = 0;
    for (const b of bases) sourceBytes += statSync(b).size;
    const B = Math.max(1 << 20, 2 ** Math.ceil(Math.log2(Math.max(sourceBytes, 1))));
    execFileSync('xdelta3', ['-e', '-9', '-S', 'none', '-A', '-n', '-B', String(B), ...(options.window ? ['-W', String(options.window)] : []), '-f', '-s', source, target, vcdiff]);
    const { createBrotliCompress, constants } = await import('node:zlib');
    await pipeline(createReadStream(vcdiff), createBrotliCompress({ params: { [constants.BROTLI_PARAM_QUALITY]: 5 } }), createWriteStream(out));
  } finally {
    rmSync(source, { force: true });
    rmSync(vcdiff, { force: true });
  }
  return { bytes: statSync(out).size, sha256: await fileSha256(out) };
}

/** Brotli of a small buffer. */
export function brotli(data: Buffer): Buffer {
  return brotliCompressSync(data);
}


/** Asserts `promise` rejects with a one-line DeltaApplyError of kind `failure` (and message `pattern`). */
export async function assertDeltaFailure(promise: Promise<unknown>, failure: DeltaFailure, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof DeltaApplyError, `not a DeltaApplyError: ${String(err)}`);
    assert.equal(err.failure, failure, err.message);
    assert.ok(!err.message.includes('\n'), 'one line');
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}
