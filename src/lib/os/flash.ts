/**
 * Writes one image to one or more drives from a single read of the source: 4 MiB writes at
 * explicit offsets, a few in flight, straight to a block device (O_DIRECT, see direct-io.ts) and
 * flushed from its cache at the end. A regular file, or a device that takes no direct I/O, is
 * written through the page cache, flushed as writing goes on and once more at the end (like
 * `dd conv=fsync`, but without the long wait at the end). A raw
 * image file is read straight into the block buffers; a compressed one is decompressed as a
 * stream. On the way, each block's XXH64 is kept for the read-back check, and the whole image's
 * checksum is computed for the result (XXH64, or SHA-256 on a worker thread). A regular file made new skips its
 * zero blocks (it reads back zeros anyway); a bmap limits reading (of a raw image) and writing to
 * its ranges.
 */
import { createHash, type Hash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { SkiffError } from '../errors/errors.js';
import type { Bmap, BmapRange } from './bmap.js';
import { DirectIo, fitsDirect, type DirectTarget } from './direct-io.js';
import type { Target } from './drives.js';
import { ImageHasher } from './image-hash.js';
import { sourceError, type ImageSource } from './source.js';

const run = promisify(execFile);

/** Size of each write and read. Large enough to keep a card busy; 4 MiB is also an erase block multiple. */
export const BLOCK_SIZE = 4 << 20;
/** Blocks being written at once. */
const IN_FLIGHT = 4;
/** Blocks read ahead from a raw image file. */
const READ_AHEAD = 2;
/**
 * Written bytes after which a flush starts in the background, and the most that may wait in the
 * page cache unflushed before writing waits for the flush: the device works while the image is
 * still being read, the final flush is short, and progress shows what reached the device.
 */
const FLUSH_EVERY = 128 << 20;
const MAX_UNFLUSHED = 4 * FLUSH_EVERY;
/** Blocks read back at once while verifying. */
const VERIFY_IN_FLIGHT = 4;
const PROGRESS_INTERVAL_MS = 200;
/** Errors that mean the drive went away (card pulled, reader unplugged). */
const GONE = new Set(['EIO', 'ENODEV', 'ENXIO', 'ENOMEDIUM', 'ESHUTDOWN']);

export type FlashPhase = 'writing' | 'flushing' | 'verifying';

export interface FlashProgress {
  phase: FlashPhase;
  /** Image bytes done in this phase (for writing: read from the source, whether written or skipped). */
  bytes: number;
  /** Image bytes this phase will handle, when known. */
  total?: number;
  /** For a compressed source: bytes of the file or download read so far, and its size. */
  sourceBytes?: number;
  sourceTotal?: number;
  compressed: boolean;
}

export interface DriveResult {
  drive: string;
  /** Bytes written to it (skipped zero blocks and unmapped blocks not counted). */
  bytesWritten: number;
  /** Written around the page cache (O_DIRECT), as block devices are where they allow it. */
  direct: boolean;
  verified: boolean;
}

export interface FlashResult {
  image: string;
  format: string;
  /** The image's size in bytes. */
  size: number;
  /** Bytes written per drive (each drive gets the same). */
  bytesWritten: number;
  seconds: number;
  writeSeconds: number;
  verifySeconds?: number;
  /** Image bytes per second while writing (including the final flush). */
  throughput: number;
  /**
   * Checksum of the whole image: XXH64 (what `xxhsum -H64` prints) unless SHA-256 was asked for.
   * Absent when a bmap limited reading to the mapped ranges of a raw image (the rest was never read).
   */
  checksum?: { algorithm: ImageChecksum; value: string };
  bmap?: { file: string; mappedBytes: number };
  drives: DriveResult[];
}

/**
 * XXH64 costs next to nothing (12 GB/s); SHA-256 (2 GB/s, on a worker thread) is for comparing
 * with a published digest, and slows writing down where the CPU is also busy copying the blocks.
 */
export type ImageChecksum = 'xxh64' | 'sha256';

export interface FlashOptions {
  source: ImageSource;
  targets: Target[];
  verify: boolean;
  /** The result's checksum of the whole image (default xxh64). */
  checksum?: ImageChecksum;
  bmap?: { file: string; map: Bmap };
  signal?: AbortSignal;
  /**
   * Called as work goes on (at most every 200 ms), and once at the start of each phase: the
   * `verifying` call with 0 bytes comes after the drives are written, flushed and closed, before
   * the first byte is read back.
   */
  onProgress?: (p: FlashProgress) => void;
  /** Opens the image again, to find where a drive that failed verification differs from it. */
  reopen?: () => Promise<ImageSource>;
}

/** The smallest drive an image fits on, from its partition table (MBR entries, GPT backup header). */
export function partitionTableEnd(head: Buffer): number | undefined {
  if (head.length < 512 || head.readUInt16LE(510) !== 0xaa55) return undefined;
  let end = 0;
  let protective = false;
  for (let i = 0; i < 4; i++) {
    const e = 446 + i * 16;
    const type = head.readUInt8(e + 4);
    if (type === 0) continue;
    if (type === 0xee) protective = true;
    end = Math.max(end, (head.readUInt32LE(e + 8) + head.readUInt32LE(e + 12)) * 512);
  }
  if (protective) {
    for (const sector of [512, 4096]) {
      if (head.length >= sector * 2 && head.toString('latin1', sector, sector + 8) === 'EFI PART') {
        // The backup header sits in the drive's last sector; the image needs at least its last usable LBA.
        const lastUsable = Number(head.readBigUInt64LE(sector + 48));
        return (lastUsable + 1) * sector;
      }
    }
  }
  return end > 0 ? end : undefined;
}

class DriveWriter {
  written = 0;
  failure?: { offset: number; error: NodeJS.ErrnoException };
  /** Bytes written through the page cache since the last flush started. */
  private unflushed = 0;
  private flushing?: Promise<void>;
  /** For a direct handle: a second, buffered one, for writes direct I/O can't take (a short tail). */
  private buffered?: Promise<FileHandle>;
  private constructor(readonly target: Target, readonly handle: FileHandle, readonly skipZeros: boolean, readonly direct?: DirectTarget) {}

  static async open(target: Target, direct?: DirectTarget): Promise<DriveWriter> {
    // O_EXCL on a block device: the kernel refuses if anything (a mount, another writer) holds it.
    const flags = target.kind === 'block' ? constants.O_WRONLY | constants.O_EXCL : constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC;
    const opened = (f: number) => open(target.resolved, f, 0o644).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'EBUSY') throw new SkiffError('error', `${target.path} is busy: something still uses it`, { hint: 'close the programs using it, or unmount it, and try again' });
      if (err.code === 'EROFS' || err.code === 'EACCES' || err.code === 'EPERM') {
        throw new SkiffError('error', `cannot write ${target.path}: ${err.code === 'EROFS' ? 'it is read-only' : 'permission denied'}`, { hint: err.code === 'EROFS' ? undefined : 'run as root (sudo) to write a drive' });
      }
      if (err.code === 'EINVAL' && f & constants.O_DIRECT) return undefined;
      throw new SkiffError('error', `cannot open ${target.path}: ${err.code ?? err.message}`);
    });
    const handle = direct ? await opened(flags | constants.O_DIRECT) : undefined;
    if (handle) return new DriveWriter(target, handle, false, direct);
    return new DriveWriter(target, (await opened(flags)) as FileHandle, target.kind === 'file');
  }

  async write(buf: Buffer, length: number, position: number): Promise<void> {
    if (this.failure) return;
    try {
      let done = 0;
      while (done < length) {
        const at = position + done;
        const left = length - done;
        const direct = fitsDirect(this.direct, at, left);
        let handle = direct ? this.handle : await this.bufferedHandle();
        const wrote = await handle.write(buf, done, left, at).catch(async (err: NodeJS.ErrnoException) => {
          // A buffer the device would not take directly after all: through the page cache then.
          if (!direct || err.code !== 'EINVAL') throw err;
          handle = await this.bufferedHandle();
          return handle.write(buf, done, left, at);
        });
        if (wrote.bytesWritten === 0) throw Object.assign(new Error('no space left'), { code: 'ENOSPC' });
        done += wrote.bytesWritten;
        if (handle !== this.handle || !this.direct) this.unflushed += wrote.bytesWritten;
      }
      this.written += length;
    } catch (err) {
      this.failure ??= { offset: position, error: await this.explain(err as NodeJS.ErrnoException) };
    }
    await this.flushSoon();
  }

  /** The direct handle's buffered twin (the direct one itself when writing through the page cache). */
  private bufferedHandle(): Promise<FileHandle> {
    if (!this.direct) return Promise.resolve(this.handle);
    this.buffered ??= open(this.target.resolved, constants.O_WRONLY);
    return this.buffered;
  }

  /**
   * The handle to flush: the buffered one when there is one (on a block device either handle's
   * fsync writes out the page cache and flushes the device's cache).
   */
  private syncHandle(): Promise<FileHandle> {
    return this.buffered ?? Promise.resolve(this.handle);
  }

  /** Starts a flush in the background once enough is written; waits for it when too much waits. */
  private async flushSoon(): Promise<void> {
    if (this.flushing && this.unflushed >= MAX_UNFLUSHED) await this.flushing;
    if (this.flushing || this.failure || this.unflushed < FLUSH_EVERY) return;
    this.unflushed = 0;
    const at = this.written;
    this.flushing = this.syncHandle().then((h) => h.datasync())
      .catch(async (err: unknown) => {
        this.failure ??= { offset: at, error: await this.explain(err as NodeJS.ErrnoException) };
      })
      .finally(() => (this.flushing = undefined));
  }

  /**
   * A card pulled from a reader often leaves its device node with a size of 0, so writes fail as
   * if past the end (ENOSPC): a size that shrank since we started means the media went away.
   */
  private async explain(err: NodeJS.ErrnoException): Promise<NodeJS.ErrnoException> {
    if (this.target.kind !== 'block' || GONE.has(err.code ?? '')) return err;
    const now = Number(await readFile(`/sys/class/block/${path.basename(this.target.resolved)}/size`, 'utf8').catch(() => 'NaN')) * 512;
    if (Number.isNaN(now) || now >= (this.target.size ?? 0)) return err;
    return Object.assign(new Error(`media removed (size now ${now} bytes)`), { code: 'ENOMEDIUM', cause: err });
  }

  /** Sets a regular file's final length; flushes to the device and drops its cached blocks. */
  async finish(size: number): Promise<void> {
    await this.flushing;
    if (this.failure) return;
    try {
      if (this.target.kind === 'file') await this.handle.truncate(size);
      await (await this.syncHandle()).sync();
    } catch (err) {
      this.failure ??= { offset: size, error: await this.explain(err as NodeJS.ErrnoException) };
    }
  }

  async close(beforeVerify = false): Promise<void> {
    await this.handle.close().catch(() => {});
    await this.buffered?.then((h) => h.close()).catch(() => {});
    // So the read-back comes from the device, not from the page cache (needs root; harmless if it fails).
    if (beforeVerify && this.target.kind === 'block') await run('blockdev', ['--flushbufs', this.target.resolved]).catch(() => {});
  }
}

function failureError(w: DriveWriter, total: number | undefined): SkiffError {
  const { offset, error } = w.failure ?? { offset: 0, error: new Error('unknown failure') as NodeJS.ErrnoException };
  const code = error.code ?? error.message;
  if (code === 'ENOSPC' || code === 'EFBIG') {
    return new SkiffError('error', `${w.target.path} is too small: writing stopped at ${offset} bytes${total ? ` of ${total}` : ''}; the drive is incomplete`, { hint: 'use a larger drive' });
  }
  const gone = GONE.has(code);
  return new SkiffError('error', `writing ${w.target.path} failed at offset ${offset} (${code}${gone ? ': the drive was removed or failed' : ''}); the drive is incomplete`, {
    hint: gone ? 'put the card back and flash it again' : 'flash it again',
  });
}

interface Block {
  buf: Buffer;
  length: number;
  /** Where the block's bytes go in the image. */
  offset: number;
}

/** Blocks of the image, in order of offset; a block's buffer is reused once released. */
interface BlockSource {
  next(): Promise<Block | undefined>;
  release(buf: Buffer): void;
  close(): void;
}

/** Block buffers, shared with the hashing thread and aligned for direct I/O; allocated as needed, then reused. */
class BufferPool {
  private readonly free: Buffer[] = [];
  constructor(private readonly direct: DirectIo) {}
  take(): Buffer {
    return this.free.pop() ?? this.direct.allocate(BLOCK_SIZE);
  }
  give(b: Buffer): void {
    this.free.push(b);
  }
}

/**
 * A decompressed stream cut into full blocks (its chunks copied in). Chunks are pulled with read()
 * while the stream has them buffered, not through an async iterator: a pipe from a decompressor
 * gives 64 KiB chunks, and a promise for each of them cost more than the copying.
 */
class StreamBlocks implements BlockSource {
  private pending?: Buffer;
  private pendingOffset = 0;
  private offset = 0;
  private ended = false;
  private error?: unknown;
  private wake?: () => void;
  constructor(private readonly stream: Readable, private readonly pool: BufferPool) {
    const poke = () => {
      const wake = this.wake;
      this.wake = undefined;
      wake?.();
    };
    stream.on('readable', poke);
    stream.once('end', () => {
      this.ended = true;
      poke();
    });
    stream.once('error', (err) => {
      this.error ??= err;
      poke();
    });
    stream.once('close', () => {
      if (!this.ended) this.error ??= new Error('the stream closed before its end');
      poke();
    });
  }

  release(b: Buffer): void {
    this.pool.give(b);
  }

  close(): void {
    this.stream.destroy();
  }

  /** The next block (shorter only at the end), or undefined at the end. */
  async next(): Promise<Block | undefined> {
    const buf = this.pool.take();
    let length = 0;
    try {
      while (length < BLOCK_SIZE) {
        if (!this.pending) {
          const chunk = this.stream.read() as Buffer | null;
          if (chunk === null) {
            if (this.error) throw this.error;
            if (this.ended) break;
            await new Promise<void>((resolve) => (this.wake = resolve));
            continue;
          }
          this.pending = chunk;
          this.pendingOffset = 0;
        }
        const n = this.pending.copy(buf, length, this.pendingOffset);
        length += n;
        this.pendingOffset += n;
        if (this.pendingOffset >= this.pending.length) this.pending = undefined;
      }
    } catch (err) {
      this.release(buf);
      throw err;
    }
    if (length === 0) {
      this.release(buf);
      return undefined;
    }
    const offset = this.offset;
    this.offset += length;
    return { buf, length, offset };
  }
}

/**
 * A raw image file read at offsets straight into the block buffers, a few blocks ahead: no stream,
 * no copy. With ranges (a bmap's), only those bytes are read.
 */
class FileBlocks implements BlockSource {
  private readonly pieces: Array<{ offset: number; length: number }> = [];
  private readonly ahead: Array<Promise<Block | undefined>> = [];
  private index = 0;
  private constructor(private readonly handle: FileHandle, private readonly pool: BufferPool, ranges: Array<{ start: number; end: number }>) {
    for (const r of ranges) {
      for (let at = r.start; at < r.end; at += BLOCK_SIZE) this.pieces.push({ offset: at, length: Math.min(BLOCK_SIZE, r.end - at) });
    }
  }

  static async open(file: string, pool: BufferPool, ranges?: Array<{ start: number; end: number }>): Promise<FileBlocks> {
    const handle = await open(file, 'r');
    const size = (await handle.stat()).size;
    return new FileBlocks(handle, pool, ranges ?? [{ start: 0, end: size }]);
  }

  release(b: Buffer): void {
    this.pool.give(b);
  }

  close(): void {
    // Reads still under way finish into buffers nobody takes; the handle closes after them.
    void Promise.allSettled(this.ahead).then(() => this.handle.close()).catch(() => {});
  }

  next(): Promise<Block | undefined> {
    while (this.ahead.length <= READ_AHEAD && this.index < this.pieces.length) {
      const piece = this.pieces[this.index++];
      if (piece) this.ahead.push(this.read(piece.offset, piece.length));
    }
    return this.ahead.shift() ?? Promise.resolve(undefined);
  }

  private async read(offset: number, length: number): Promise<Block> {
    const buf = this.pool.take();
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw new Error(`the file ended at ${offset + done} bytes`);
      done += bytesRead;
    }
    return { buf, length, offset };
  }
}

/** Where a block was written, and its XXH64: what the read-back must match. */
interface Piece {
  start: number;
  end: number;
  hash: bigint;
}

/** Per-range digests of the bytes at bmap ranges, as they stream by. */
class RangeHasher {
  readonly digests: string[] = [];
  private index = 0;
  private hash?: Hash;
  constructor(private readonly ranges: BmapRange[]) {}

  /** Feeds a block at `offset`; calls `write(slice, position)` for each mapped piece. */
  feed(buf: Buffer, length: number, offset: number, write: (from: number, to: number) => void): void {
    const end = offset + length;
    for (let r = this.ranges[this.index]; r; r = this.ranges[this.index]) {
      if (r.start >= end) return;
      const from = Math.max(r.start, offset);
      const to = Math.min(r.end, end);
      if (to > from) {
        this.hash ??= createHash('sha256');
        this.hash.update(buf.subarray(from - offset, to - offset));
        write(from - offset, to - offset);
      }
      if (r.end > end) return;
      this.digests.push(this.hash?.digest('hex') ?? createHash('sha256').digest('hex'));
      this.hash = undefined;
      this.index++;
    }
  }
}

/** Writes the image to every target; throws a SkiffError naming the drive and what is left of it. */
export async function flashImage(options: FlashOptions): Promise<FlashResult> {
  const direct = await DirectIo.open(options.targets);
  try {
    return await flashWith(options, direct);
  } finally {
    direct.close();
  }
}

async function flashWith(options: FlashOptions, direct: DirectIo): Promise<FlashResult> {
  const { source, targets, signal } = options;
  const bmap = options.bmap?.map;
  const started = performance.now();
  const compressed = source.format !== 'raw';
  let lastProgress = 0;
  const progress = (p: Omit<FlashProgress, 'compressed'>, force = false) => {
    const now = performance.now();
    if (!options.onProgress || (!force && now - lastProgress < PROGRESS_INTERVAL_MS)) return;
    lastProgress = now;
    options.onProgress({ ...p, compressed });
  };

  const bmapFile = options.bmap?.file ?? 'the bmap';
  if (bmap && source.size !== undefined && source.size !== bmap.imageSize) {
    throw new SkiffError('usage', `${bmapFile} is for an image of ${bmap.imageSize} bytes, but the image has ${source.size}`, { hint: 'use the bmap made for this image, or remove it' });
  }
  // A raw image file is read at offsets, and with a bmap only its ranges (the bmap's image size,
  // checked against the file's above, then stands for the size the drive needs).
  const mappedOnly = Boolean(bmap && source.file);
  const pool = new BufferPool(direct);
  const { h64Raw, create64 } = await (await import('xxhash-wasm')).default();
  // A stream may count its bytes from a 'data' listener, so it flows once opened: listen at once.
  const reader: BlockSource = await (source.file
    ? FileBlocks.open(source.file, pool, mappedOnly && bmap ? bmap.ranges : undefined)
    : source.open(signal).then((stream) => new StreamBlocks(stream, pool))
  ).catch((err: unknown) => {
    throw sourceError(source, err);
  });
  let writers: DriveWriter[] = [];
  let total = bmap?.imageSize ?? source.size;
  const readBlock = () => reader.next().catch((err: unknown) => {
    if (signal?.aborted) throw interrupted(writers, total);
    throw sourceError(source, err);
  });

  // The first block comes before anything is opened for writing: the size checks need it.
  const first = await readBlock().catch((err: unknown) => {
    reader.close();
    throw err;
  });
  const needed = total ?? (first && first.offset === 0 ? partitionTableEnd(first.buf.subarray(0, first.length)) : undefined);
  for (const t of targets) {
    if (t.kind === 'block' && t.size !== undefined && needed !== undefined && t.size < needed) {
      reader.close();
      throw new SkiffError('error', `${t.path} is too small: ${t.size} bytes, the image needs ${needed}${total === undefined ? ' (from its partition table)' : ''}`, { hint: 'use a larger drive' });
    }
  }

  try {
    writers = await Promise.all(targets.map((t) => DriveWriter.open(t, direct.for(t))));
  } catch (err) {
    reader.close();
    throw err;
  }
  // The whole image's checksum, unless only the mapped ranges are read.
  const algorithm = options.checksum ?? 'xxh64';
  const imageHash = mappedOnly || algorithm !== 'sha256' ? undefined : new ImageHasher();
  const imageXxh = mappedOnly || algorithm !== 'xxh64' ? undefined : create64();
  const zero = Buffer.alloc(BLOCK_SIZE);
  const ranges = bmap ? new RangeHasher(bmap.ranges) : undefined;
  const pieces: Piece[] = [];
  const inFlight: Array<Promise<unknown>> = [];
  const progressTotal = mappedOnly && bmap ? bmap.mappedBytes : total;
  let end = 0;
  let read = 0;

  try {
    for (let block = first; block; block = await readBlock()) {
      if (signal?.aborted) throw interrupted(writers, total);
      const { buf, length, offset: at } = block;
      const hashed = imageHash?.update(buf, length);
      imageXxh?.update(buf.subarray(0, length));
      const live = writers.filter((w) => !w.failure);
      if (live.length === 0) {
        reader.release(buf);
        break;
      }
      const writes: Array<Promise<unknown>> = hashed ? [hashed] : [];
      if (ranges) {
        ranges.feed(buf, length, at, (from, to) => {
          if (options.verify) pieces.push({ start: at + from, end: at + to, hash: h64Raw(buf.subarray(from, to)) });
          for (const w of live) writes.push(w.write(buf.subarray(from, to), to - from, at + from));
        });
      } else {
        if (options.verify) pieces.push({ start: at, end: at + length, hash: h64Raw(buf.subarray(0, length)) });
        const isZero = live.some((w) => w.skipZeros) && buf.subarray(0, length).equals(zero.subarray(0, length));
        for (const w of live) if (!(isZero && w.skipZeros)) writes.push(w.write(buf, length, at));
      }
      end = at + length;
      read += length;
      inFlight.push(Promise.all(writes).then(() => reader.release(buf)));
      if (inFlight.length >= IN_FLIGHT) await inFlight.shift();
      progress({ phase: 'writing', bytes: mappedOnly ? read : end, ...(progressTotal !== undefined ? { total: progressTotal } : {}), sourceBytes: source.bytesRead(), ...(source.compressedSize !== undefined ? { sourceTotal: source.compressedSize } : {}) });
    }
    await Promise.all(inFlight);
    if (signal?.aborted) throw interrupted(writers, total);
    if (!mappedOnly && total !== undefined && end < total && writers.some((w) => !w.failure)) {
      throw sourceError(source, new Error(`the image ended after ${end} of ${total} bytes`));
    }
    if (!mappedOnly) total = end;
    total ??= end;
    progress({ phase: 'flushing', bytes: total, total }, true);
    await Promise.all(writers.map((w) => w.finish(bmap?.imageSize ?? end)));
  } catch (err) {
    await Promise.allSettled(inFlight);
    reader.close();
    imageHash?.close();
    await Promise.all(writers.map((w) => w.close()));
    if (err instanceof SkiffError && err.code !== 'interrupted' && !targets.every((t) => t.created)) {
      throw new SkiffError(err.code, `${err.message.replace(/\.$/, '')}; ${targets.map((t) => t.path).join(', ')} ${targets.length === 1 ? 'is' : 'are'} incomplete`, { ...(err.hint ? { hint: err.hint } : {}), cause: err });
    }
    throw err;
  }
  reader.close();
  const [sha256] = await Promise.all([imageHash?.digest().finally(() => imageHash.close()), ...writers.map((w) => w.close(options.verify))]);
  const checksum = sha256 ?? imageXxh?.digest().toString(16).padStart(16, '0');
  const writeSeconds = (performance.now() - started) / 1000;

  if (bmap && ranges) {
    const bad = bmap.ranges.find((r, i) => r.checksum && bmap.checksumType === 'sha256' && r.checksum !== ranges.digests[i]);
    if (bad) {
      throw new SkiffError('error', `the image does not match its bmap: bytes ${bad.start}-${bad.end - 1} differ from the bmap's checksum; the drives are incomplete`, { hint: `use the bmap made for this image, or remove ${bmapFile}` });
    }
  }
  const failed = writers.filter((w) => w.failure);
  const ok = writers.filter((w) => !w.failure);

  let verifySeconds: number | undefined;
  const verified = new Set<DriveWriter>();
  if (options.verify && ok.length > 0) {
    const verifyStart = performance.now();
    const verifyTotal = pieces.reduce((n, p) => n + p.end - p.start, 0);
    progress({ phase: 'verifying', bytes: 0, total: verifyTotal }, true);
    const done = new Map<DriveWriter, number>();
    const results = await Promise.all(ok.map(async (w) => {
      const bad = await verifyTarget(w.target, direct.for(w.target), pool, pieces, h64Raw, signal, (n) => {
        done.set(w, n);
        progress({ phase: 'verifying', bytes: Math.min(...ok.map((x) => done.get(x) ?? 0)), total: verifyTotal });
      });
      return { w, bad };
    }));
    if (signal?.aborted) throw interrupted(writers, total);
    verifySeconds = (performance.now() - verifyStart) / 1000;
    for (const { w, bad } of results) {
      if (bad === undefined) {
        verified.add(w);
        continue;
      }
      const exact = await firstDifference(source, options.reopen, w.target, bad).catch(() => undefined);
      const where = exact !== undefined ? `at offset ${exact}` : `in bytes ${bad.start}-${bad.end - 1}`;
      failed.push(w);
      w.failure = { offset: exact ?? bad.start, error: Object.assign(new Error('verification failed'), { code: 'EVERIFY' }) };
      if (ok.length === 1 && failed.length === 1) {
        throw new SkiffError('error', `verification of ${w.target.path} failed: it differs from the image ${where}`, { hint: 'the card may be failing or counterfeit; try another one' });
      }
    }
  }
  if (failed.length > 0) {
    if (writers.length === 1 && failed[0]) throw failureError(failed[0], total);
    const lines = failed.map((w) => (w.failure?.error.code === 'EVERIFY' ? `${w.target.path}: verification failed at offset ${w.failure.offset}` : failureError(w, total).toLine()));
    throw new SkiffError('error', `${failed.length} of ${writers.length} drives failed (${failed.map((w) => w.target.path).join(', ')}); ${failed.length === 1 ? 'it is' : 'they are'} incomplete`, {
      details: lines,
      hint: ok.length > failed.length ? `${writers.length - failed.length} other drive(s) were written` : 'flash them again',
    });
  }

  const seconds = (performance.now() - started) / 1000;
  const bytesWritten = writers[0]?.written ?? 0;
  return {
    image: source.location,
    format: source.format,
    size: total,
    bytesWritten,
    seconds,
    writeSeconds,
    ...(verifySeconds !== undefined ? { verifySeconds } : {}),
    throughput: writeSeconds > 0 ? total / writeSeconds : 0,
    ...(checksum !== undefined ? { checksum: { algorithm, value: checksum } } : {}),
    ...(options.bmap ? { bmap: { file: options.bmap.file, mappedBytes: options.bmap.map.mappedBytes } } : {}),
    drives: writers.map((w) => ({ drive: w.target.path, bytesWritten: w.written, direct: w.direct !== undefined, verified: verified.has(w) })),
  };
}

function interrupted(writers: DriveWriter[], total: number | undefined): SkiffError {
  const names = writers.map((w) => w.target.path);
  const written = Math.max(0, ...writers.map((w) => w.written));
  return new SkiffError('interrupted', `interrupted: ${names.join(', ') || 'the drive'} ${names.length > 1 ? 'are' : 'is'} incomplete (${written}${total ? ` of ${total}` : ''} bytes written)`, {
    hint: 'flash it again before using it',
  });
}

/**
 * Reads the target back, a few blocks at a time, and compares each piece's XXH64 with the one
 * taken while writing; returns the first piece that differs, or undefined when all match.
 */
async function verifyTarget(target: Target, direct: DirectTarget | undefined, pool: BufferPool, pieces: Piece[], h64: (b: Uint8Array) => bigint, signal: AbortSignal | undefined, onBytes: (n: number) => void): Promise<Piece | undefined> {
  const handle = await open(target.resolved, 'r');
  // Read straight from the device where it allows, past whatever the page cache holds.
  const directHandle = direct ? await open(target.resolved, constants.O_RDONLY | constants.O_DIRECT).catch(() => undefined) : undefined;
  const readPiece = async (p: Piece): Promise<{ buf: Buffer; length: number }> => {
    const buf = pool.take();
    let length = 0;
    while (length < p.end - p.start) {
      const at = p.start + length;
      const left = p.end - p.start - length;
      const h = directHandle && fitsDirect(direct, at, left) ? directHandle : handle;
      const { bytesRead } = await h.read(buf, length, left, at).catch((err: NodeJS.ErrnoException) => {
        if (h === handle || err.code !== 'EINVAL') throw err;
        return handle.read(buf, length, left, at);
      });
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return { buf, length };
  };
  const ahead: Array<Promise<{ buf: Buffer; length: number }>> = [];
  let next = 0;
  let done = 0;
  try {
    for (const p of pieces) {
      while (ahead.length < VERIFY_IN_FLIGHT && next < pieces.length) {
        const q = pieces[next++];
        if (q) ahead.push(readPiece(q));
      }
      const got = await ahead.shift();
      if (!got || signal?.aborted) return undefined;
      const same = got.length === p.end - p.start && h64(got.buf.subarray(0, got.length)) === p.hash;
      pool.give(got.buf);
      if (!same) return p;
      done += got.length;
      onBytes(done);
    }
    return undefined;
  } finally {
    await Promise.allSettled(ahead);
    await handle.close();
    await directHandle?.close();
  }
}

/** The first byte offset in `range` where the target differs from the image (reads the image again). */
async function firstDifference(source: ImageSource, reopen: FlashOptions['reopen'], target: Target, range: { start: number; end: number }): Promise<number | undefined> {
  const handle = await open(target.resolved, 'r');
  const theirs = Buffer.allocUnsafeSlow(BLOCK_SIZE);
  const compare = async (ours: Buffer, at: number): Promise<number | undefined> => {
    const { bytesRead } = await handle.read(theirs, 0, ours.length, at);
    for (let i = 0; i < ours.length; i++) if (i >= bytesRead || ours[i] !== theirs[i]) return at + i;
    return undefined;
  };
  try {
    if (source.file) {
      // A raw image file: read the same bytes of it.
      const image = await open(source.file, 'r');
      try {
        const ours = Buffer.allocUnsafeSlow(range.end - range.start);
        await image.read(ours, 0, ours.length, range.start);
        return await compare(ours, range.start);
      } finally {
        await image.close();
      }
    }
    if (!reopen) return undefined;
    const stream = await (await reopen()).open();
    try {
      let pos = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        const end = pos + chunk.length;
        if (end > range.start) {
          const from = Math.max(range.start, pos);
          const to = Math.min(range.end, end);
          const at = await compare(chunk.subarray(from - pos, to - pos), from);
          if (at !== undefined) return at;
        }
        pos = end;
        if (pos >= range.end) break;
      }
      return undefined;
    } finally {
      stream.destroy();
    }
  } finally {
    await handle.close();
  }
}
