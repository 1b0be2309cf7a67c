/**
 * The source of a VCDIFF patch read by random access: the `bases` layer tars of a delta layer,
 * concatenated in order (api/deltas.ts), without ever holding more than a few blocks in memory.
 */
import { open, type FileHandle } from 'node:fs/promises';

/** Bytes the decoder reads by position; `size` is the whole source's length in bytes. */
export interface RandomAccessSource {
  readonly size: number;
  /** `length` bytes from `position`; rejects when the range is outside `[0, size)`. */
  read(position: number, length: number): Promise<Buffer>;
  /** The same into `target` at `offset` (no allocation). */
  readInto(position: number, length: number, target: Buffer, offset: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Opens `paths` as one source, their bytes one after the other (`xdelta3 -s` of their concatenation).
 * @throws the open's error (ENOENT …); files opened so far are closed
 */
export async function openConcatenatedFiles(paths: readonly string[]): Promise<RandomAccessSource> {
  const files: Array<{ handle: FileHandle; start: number; size: number }> = [];
  let size = 0;
  try {
    for (const p of paths) {
      const file = { handle: await open(p, 'r'), start: size, size: 0 };
      files.push(file);
      file.size = (await file.handle.stat()).size;
      size += file.size;
    }
  } catch (err) {
    await Promise.allSettled(files.map((f) => f.handle.close()));
    throw err;
  }
  const readInto = async (position: number, length: number, out: Buffer, offset: number): Promise<void> => {
    if (position < 0 || length < 0 || position + length > size) throw new RangeError(`source read of ${length} bytes at ${position} past its end (${size} bytes)`);
    let done = 0;
    for (const f of files) {
      if (done === length) break;
      const at = position + done;
      if (at >= f.start + f.size || f.size === 0) continue;
      const n = Math.min(length - done, f.start + f.size - at);
      let got = 0;
      while (got < n) {
        const { bytesRead } = await f.handle.read(out, offset + done + got, n - got, at - f.start + got);
        if (bytesRead === 0) throw new Error('a source file got shorter while it was read');
        got += bytesRead;
      }
      done += n;
    }
  };
  return {
    size,
    async read(position, length) {
      const out = Buffer.allocUnsafe(length);
      await readInto(position, length, out, 0);
      return out;
    },
    readInto,
    async close() {
      await Promise.allSettled(files.map((f) => f.handle.close()));
    },
  };
}

/**
 * A block cache in front of a source: a COPY reads a few bytes to a few MiB, usually near the last
 * one, so whole blocks are read once and kept (least recently used dropped) — at most
 * `blockSize * blocks` bytes held.
 */
export class CachedSource {
  /** Block index → its bytes (`data` is a whole block's buffer, reused once evicted; `length` of it hold bytes). */
  private readonly blocks = new Map<number, { data: Buffer; length: number }>();

  constructor(readonly source: RandomAccessSource, private readonly blockSize = 256 * 1024, private readonly maxBlocks = 32) {}

  get size(): number {
    return this.source.size;
  }

  /** Copies `length` bytes from `position` into `target` at `offset`. */
  async copyInto(position: number, length: number, target: Buffer, offset: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const at = position + done;
      const index = Math.floor(at / this.blockSize);
      let block = this.blocks.get(index);
      if (block) {
        // refresh its place in the LRU order (a Map iterates in insertion order)
        this.blocks.delete(index);
        this.blocks.set(index, block);
      } else {
        const start = index * this.blockSize;
        // the least recently used block's buffer is reused: no garbage per block read
        let data: Buffer | undefined;
        if (this.blocks.size >= this.maxBlocks) {
          const oldest = this.blocks.keys().next().value as number;
          data = this.blocks.get(oldest)?.data;
          this.blocks.delete(oldest);
        }
        data ??= Buffer.allocUnsafe(this.blockSize);
        block = { data, length: Math.min(this.blockSize, this.source.size - start) };
        await this.source.readInto(start, block.length, data, 0);
        this.blocks.set(index, block);
      }
      const inBlock = at - index * this.blockSize;
      const n = Math.min(length - done, block.length - inBlock);
      if (n <= 0) throw new RangeError(`source read at ${at} past its end (${this.source.size} bytes)`);
      block.data.copy(target, offset + done, inBlock, inBlock + n);
      done += n;
    }
  }
}
