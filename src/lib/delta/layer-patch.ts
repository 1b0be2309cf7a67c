/**
 * Makes one layer tar file from a download — a delta (Brotli-compressed VCDIFF against the bases)
 * or a registry blob — streamed with back-pressure, and verified as it is written: the file's
 * sha256 must be the layer's diffID and its size the descriptor's.
 */
import { createHash, type Hash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { Transform, Writable, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createBrotliDecompress, createGunzip } from 'node:zlib';
import { DeltaApplyError } from './errors.js';
import { openConcatenatedFiles } from './source-file.js';
import { VcdiffDecoder } from './vcdiff.js';

/** What the written layer must be. */
export interface ExpectedLayer {
  /** sha256 of the uncompressed layer tar (`sha256:<hex>`). */
  diffId: string;
  /** Its bytes, when known: more is refused as soon as it is written, less at the end. */
  size?: number;
  /** sha256 of the downloaded file itself (a delta file's descriptor `sha256`), checked at its end. */
  fileSha256?: string;
  /** Names the layer in messages, e.g. `layer 3`. */
  label: string;
}

/** Hashes (and counts) the bytes that pass. */
class Meter extends Transform {
  readonly hash: Hash = createHash('sha256');

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    callback(null, chunk);
  }

  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** A disk error as the apply reports it: ENOSPC (and quota) is 'disk', whatever stage hit it. */
export function diskError(err: unknown, what: string): DeltaApplyError | undefined {
  const code = errorCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new DeltaApplyError('disk', `no space left on the device for ${what}`, { cause: err });
  return undefined;
}

/**
 * Writes the layer file: hashes and counts each chunk, refuses more than the expected size as it
 * comes, and awaits the write, so the caller may reuse the chunk's buffer once it resolves.
 */
class LayerWriter {
  readonly hash: Hash = createHash('sha256');
  bytes = 0;

  constructor(private readonly handle: FileHandle, private readonly outFile: string, private readonly expected: ExpectedLayer) {}

  readonly write = async (chunk: Buffer): Promise<void> => {
    this.bytes += chunk.length;
    if (this.expected.size !== undefined && this.bytes > this.expected.size) {
      throw new DeltaApplyError('corrupt', `${this.expected.label} is larger than its ${this.expected.size} bytes`);
    }
    this.hash.update(chunk);
    try {
      for (let done = 0; done < chunk.length;) done += (await this.handle.write(chunk, done, chunk.length - done)).bytesWritten;
    } catch (err) {
      throw diskError(err, this.expected.label) ?? new DeltaApplyError('disk', `${this.expected.label}: cannot write ${this.outFile}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  };

  /** A Writable end for a pipeline that writes each chunk through {@link write}. */
  writable(): Writable {
    return new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        this.write(chunk).then(() => callback(), callback);
      },
    });
  }
}

/**
 * Streams `input` through `decoders` into `outFile`, hashing the output.
 * Errors: the input's own DeltaApplyError as is, another input error 'download', a decoder's
 * error 'corrupt' (a DeltaApplyError from the VCDIFF decoder as is), ENOSPC 'disk', a sha256 or
 * size mismatch 'corrupt'. The file is left for the caller to remove on failure.
 * @returns the layer's bytes
 */
export function writeLayerFile(input: Readable, decoders: Transform[], outFile: string, expected: ExpectedLayer, signal?: AbortSignal): Promise<number> {
  return writeLayer(input, () => decoders, outFile, expected, signal);
}

/** {@link writeLayerFile} with decoders that may write the layer themselves (`write`, awaited). */
async function writeLayer(input: Readable, makeDecoders: (write: (chunk: Buffer) => Promise<void>) => Transform[], outFile: string, expected: ExpectedLayer, signal?: AbortSignal): Promise<number> {
  const fileMeter = new Meter();
  let handle: FileHandle;
  try {
    handle = await open(outFile, 'w');
  } catch (err) {
    input.destroy();
    throw diskError(err, expected.label) ?? new DeltaApplyError('disk', `${expected.label}: cannot write ${outFile}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const writer = new LayerWriter(handle, outFile, expected);
  const decoders = makeDecoders(writer.write);
  // the first stage to fail names the failure (pipeline destroys the others after it)
  let failed: { stage: 'input' | 'decode' | 'output'; err: unknown } | undefined;
  const watch = (stage: 'input' | 'decode' | 'output', stream: NodeJS.EventEmitter): void => {
    stream.once('error', (err: unknown) => {
      failed ??= { stage, err };
    });
  };
  watch('input', input);
  for (const d of decoders) watch('decode', d);
  const output = writer.writable();
  watch('output', output);
  try {
    await pipeline([input, fileMeter, ...decoders, output], signal ? { signal } : {});
  } catch (err) {
    const first = failed ?? { stage: 'input' as const, err };
    const cause = first.err;
    if (cause instanceof DeltaApplyError) throw cause;
    const disk = diskError(cause, expected.label);
    if (disk) throw disk;
    if (signal?.aborted) throw new DeltaApplyError('download', `${expected.label}: the apply was cancelled`, { cause });
    const message = cause instanceof Error ? cause.message : String(cause);
    if (first.stage === 'input') throw new DeltaApplyError('download', `${expected.label}: download failed: ${message}`, { cause });
    if (first.stage === 'decode') throw new DeltaApplyError('corrupt', `${expected.label} does not decompress: ${message}`, { cause });
    throw new DeltaApplyError('disk', `${expected.label}: cannot write ${outFile}: ${message}`, { cause });
  } finally {
    await handle.close().catch(() => undefined);
  }
  if (expected.fileSha256 !== undefined) {
    const got = fileMeter.digest();
    if (got !== expected.fileSha256) throw new DeltaApplyError('corrupt', `${expected.label}: the downloaded file's sha256 is ${got}, not ${expected.fileSha256}`);
  }
  if (expected.size !== undefined && writer.bytes !== expected.size) {
    throw new DeltaApplyError('corrupt', `${expected.label} has ${writer.bytes} bytes, not ${expected.size}`);
  }
  const diffId = `sha256:${writer.hash.digest('hex')}`;
  if (diffId !== expected.diffId) throw new DeltaApplyError('corrupt', `${expected.label}'s sha256 is ${diffId}, not its diffID ${expected.diffId}`);
  return writer.bytes;
}

/**
 * Applies one delta layer: `deltaStream` (Brotli-compressed VCDIFF, as the server serves it) is
 * decoded against the files `bases` (concatenated in order) into `outFile`.
 * @throws DeltaApplyError ('corrupt' for a bad stream, checksum, size or sha256; 'disk'; 'download' for an input error)
 */
export async function patchLayer(deltaStream: Readable, bases: readonly string[], outFile: string, expected: ExpectedLayer, signal?: AbortSignal): Promise<number> {
  let source;
  try {
    source = await openConcatenatedFiles(bases);
  } catch (err) {
    deltaStream.destroy();
    throw new DeltaApplyError('source', `${expected.label}: cannot read its base layers: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  try {
    // the decoder writes each target window itself and reuses its buffer: no window-sized garbage
    return await writeLayer(deltaStream, (write) => [createBrotliDecompress(), new VcdiffDecoder(source, { sink: write })], outFile, expected, signal);
  } finally {
    await source.close();
  }
}

/**
 * A registry blob's decoder by media type: gzip (`…tar.gzip`, `…tar+gzip`), zstd (`…+zstd`) or a
 * plain tar.
 * @throws DeltaApplyError 'corrupt' for a media type that is no layer tar
 */
export async function blobDecoders(mediaType: string): Promise<Transform[]> {
  if (/gzip$/.test(mediaType)) return [createGunzip()];
  if (/zstd$/.test(mediaType)) return [await zstdDecompress()];
  if (/(\.tar|\.diff\.tar|layer\.v1\.tar)$/.test(mediaType)) return [];
  throw new DeltaApplyError('corrupt', `a layer blob has media type ${mediaType}, which is no layer tar`);
}

/** zstd through fzstd's streaming decoder (Node 20's zlib has none). */
async function zstdDecompress(): Promise<Transform> {
  const { Decompress } = await import('fzstd');
  const out = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      try {
        decoder.push(chunk);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    flush(callback) {
      try {
        decoder.push(new Uint8Array(0), true);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
  const decoder = new Decompress((chunk) => {
    out.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  });
  return out;
}
