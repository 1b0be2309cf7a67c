/**
 * Takes the layer tars an apply needs out of the engine's image export (`GET /images/{name}/get`)
 * as it streams by, writing only those to disk, each verified by its sha256 (= its diffID).
 *
 * Export layouts handled:
 * - docker save's legacy layout (Docker 20.10, overlay2): `<v1 id>/layer.tar`, whose name says
 *   nothing of its diffID (and manifest.json comes last), so each layer tar is written while
 *   hashed and kept only if needed — unless its size proves it is none of the needed ones;
 * - the OCI layout (Docker ≥ 25): `blobs/sha256/<hex>`, where an uncompressed layer's name is its
 *   diffID, so one not needed is skipped unread;
 * - gzip-compressed layer entries (the containerd image store): decompressed while hashed.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { DeltaApplyError } from './errors.js';
import { diskError } from './layer-patch.js';

/** A layer wanted from the export: where to write it, and its size when the descriptor says. */
export interface WantedLayer {
  file: string;
  size?: number;
}

const SKIPPED_NAMES = /(^|\/)(json|VERSION|repositories|manifest\.json|index\.json|oci-layout|[^/]*\.json)$/;
const BLOB_NAME = /^blobs\/sha256\/([0-9a-f]{64})$/;

/** Reads the first chunk of `stream` and puts it back; null for an empty stream. */
function peek(stream: Readable): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
    };
    const onReadable = (): void => {
      const chunk = stream.read() as Buffer | null;
      if (chunk === null) return;
      cleanup();
      stream.unshift(chunk);
      resolve(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(null);
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('error', onError);
  });
}

class Sha256 extends Transform {
  private readonly hash = createHash('sha256');
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    callback(null, chunk);
  }

  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/**
 * Drains an entry without keeping it. By iteration, not `resume()`: after {@link peek}'s
 * 'readable' listener, a tar-stream entry (readable-stream 3) stayed paused on `resume()`.
 */
async function skip(stream: Readable): Promise<void> {
  for await (const chunk of stream) void chunk;
}

/**
 * Streams `exported` (a docker save tar) and writes each wanted layer (by diffID) to its file.
 * @throws DeltaApplyError 'source' when a wanted layer is not in the export (or the export is no tar), 'disk' for ENOSPC
 */
export async function extractLayers(exported: Readable, wanted: ReadonlyMap<string, WantedLayer>, tmpDir: string, what: string): Promise<void> {
  const found = new Set<string>();
  if (wanted.size === 0) {
    exported.destroy();
    return;
  }
  const sizes = [...wanted.values()].every((w) => w.size !== undefined) ? new Set([...wanted.values()].map((w) => w.size)) : undefined;
  const tarStream = await import('tar-stream');
  const extract = tarStream.extract();
  let part = 0;

  const onEntry = async (header: { name: string; size?: number; type?: string | null }, stream: Readable): Promise<void> => {
    const name = header.name.replace(/^\.\//, '');
    if (header.type !== 'file' || SKIPPED_NAMES.test(name)) return skip(stream);
    const blob = BLOB_NAME.exec(name);
    const named = blob ? `sha256:${blob[1]}` : undefined;
    if (named === undefined && sizes && header.size !== undefined && !sizes.has(header.size)) return skip(stream);
    const first = await peek(stream);
    const gzip = first !== null && first[0] === 0x1f && first[1] === 0x8b;
    // a blob's name is its digest: not wanted, unless it is a compressed layer whose diffID is only
    // known once it is decompressed
    if (named !== undefined && !gzip && (found.has(named) || !wanted.has(named))) return skip(stream);
    const file = path.join(tmpDir, `export-${part++}.part`);
    const hash = new Sha256();
    try {
      await pipeline([stream, ...(gzip ? [createGunzip()] : []), hash, createWriteStream(file)]);
      const diffId = hash.digest();
      const want = wanted.get(diffId);
      if (want && !found.has(diffId)) {
        await rename(file, want.file);
        found.add(diffId);
      } else if (named !== undefined && !gzip && wanted.has(named)) {
        throw new DeltaApplyError('source', `the engine's export of ${what} has layer ${named} with other bytes (sha256 ${diffId})`);
      }
    } finally {
      await rm(file, { force: true });
    }
  };

  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header: { name: string; size?: number; type?: string | null }, stream: Readable, next: (err?: unknown) => void) => {
      onEntry(header, stream).then(() => next(), (err: unknown) => {
        stream.resume();
        next(err);
      });
    });
    extract.once('finish', resolve);
    extract.once('error', reject);
  });
  try {
    await Promise.all([pipeline(exported, extract), done]);
  } catch (err) {
    if (err instanceof DeltaApplyError) throw err;
    const disk = diskError(err, `the layers of ${what}`);
    if (disk) throw disk;
    throw new DeltaApplyError('source', `cannot read the engine's export of ${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  for (const diffId of wanted.keys()) {
    if (!found.has(diffId)) throw new DeltaApplyError('source', `the engine's export of ${what} lacks layer ${diffId}`);
  }
}
