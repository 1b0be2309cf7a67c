/**
 * Writes one image to one or more drives from a single read of the source: 4 MiB writes at
 * explicit offsets, a few in flight, a SHA-256 of the image computed on the way, a flush to the
 * device before success, then (by default) a read-back that must hash the same. A regular file
 * made new skips its zero blocks (it reads back zeros anyway); a bmap limits writing to its ranges.
 */
import { createHash, type Hash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { SkiffError } from '../cli/errors.js';
import type { Bmap, BmapRange } from './bmap.js';
import type { Target } from './drives.js';
import { sourceError, type ImageSource } from './source.js';

const run = promisify(execFile);

/** Size of each write and read. Large enough to keep a card busy; 4 MiB is also an erase block multiple. */
export const BLOCK_SIZE = 4 << 20;
/** Blocks being written at once. */
const IN_FLIGHT = 4;
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
  checksum: { algorithm: 'sha256'; value: string };
  bmap?: { file: string; mappedBytes: number };
  drives: DriveResult[];
}

export interface FlashOptions {
  source: ImageSource;
  targets: Target[];
  verify: boolean;
  bmap?: { file: string; map: Bmap };
  signal?: AbortSignal;
  onProgress?: (p: FlashProgress) => void;
  /** Runs between writing and verifying (tests use it to change the target). */
  beforeVerify?: (targets: Target[]) => Promise<void>;
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
  private constructor(readonly target: Target, readonly handle: FileHandle, readonly skipZeros: boolean) {}

  static async open(target: Target): Promise<DriveWriter> {
    // O_EXCL on a block device: the kernel refuses if anything (a mount, another writer) holds it.
    const flags = target.kind === 'block' ? constants.O_WRONLY | constants.O_EXCL : constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC;
    const handle = await open(target.resolved, flags, 0o644).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'EBUSY') throw new SkiffError('error', `${target.path} is busy: something still uses it`, { hint: 'close the programs using it, or unmount it, and try again' });
      if (err.code === 'EROFS' || err.code === 'EACCES' || err.code === 'EPERM') {
        throw new SkiffError('error', `cannot write ${target.path}: ${err.code === 'EROFS' ? 'it is read-only' : 'permission denied'}`, { hint: err.code === 'EROFS' ? undefined : 'run as root (sudo) to write a drive' });
      }
      throw new SkiffError('error', `cannot open ${target.path}: ${err.code ?? err.message}`);
    });
    return new DriveWriter(target, handle, target.kind === 'file');
  }

  async write(buf: Buffer, length: number, position: number): Promise<void> {
    if (this.failure) return;
    try {
      let done = 0;
      while (done < length) {
        const { bytesWritten } = await this.handle.write(buf, done, length - done, position + done);
        if (bytesWritten === 0) throw Object.assign(new Error('no space left'), { code: 'ENOSPC' });
        done += bytesWritten;
      }
      this.written += length;
    } catch (err) {
      this.failure ??= { offset: position, error: await this.explain(err as NodeJS.ErrnoException) };
    }
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
    if (this.failure) return;
    try {
      if (this.target.kind === 'file') await this.handle.truncate(size);
      await this.handle.sync();
    } catch (err) {
      this.failure ??= { offset: size, error: await this.explain(err as NodeJS.ErrnoException) };
    }
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => {});
    // So the read-back comes from the device, not from the page cache (needs root; harmless if it fails).
    if (this.target.kind === 'block') await run('blockdev', ['--flushbufs', this.target.resolved]).catch(() => {});
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

/** Blocks of the image, in order; a block's buffer is reused once released. */
class BlockReader {
  private readonly pool: Buffer[] = [];
  private pending?: Buffer;
  private pendingOffset = 0;
  constructor(private readonly chunks: AsyncIterator<Buffer>) {}

  release(b: Buffer): void {
    this.pool.push(b);
  }

  /** The next block (shorter only at the end), or undefined at the end. */
  async next(): Promise<{ buf: Buffer; length: number } | undefined> {
    const buf = this.pool.pop() ?? Buffer.allocUnsafeSlow(BLOCK_SIZE);
    let length = 0;
    while (length < BLOCK_SIZE) {
      if (!this.pending) {
        const r = await this.chunks.next();
        if (r.done) break;
        this.pending = r.value;
        this.pendingOffset = 0;
      }
      const n = this.pending.copy(buf, length, this.pendingOffset);
      length += n;
      this.pendingOffset += n;
      if (this.pendingOffset >= this.pending.length) this.pending = undefined;
    }
    if (length === 0) {
      this.release(buf);
      return undefined;
    }
    return { buf, length };
  }
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

  const stream = await source.open(signal);
  const reader = new BlockReader(stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>);
  const readBlock = () => reader.next().catch((err: unknown) => {
    if (signal?.aborted) throw interrupted(writers, total);
    throw sourceError(source, err);
  });
  let writers: DriveWriter[] = [];
  let total = bmap?.imageSize ?? source.size;

  // The first block comes before anything is opened for writing: the size checks need it.
  const first = await readBlock();
  const needed = total ?? (first ? partitionTableEnd(first.buf.subarray(0, first.length)) : undefined);
  for (const t of targets) {
    if (t.kind === 'block' && t.size !== undefined && needed !== undefined && t.size < needed) {
      stream.destroy();
      throw new SkiffError('error', `${t.path} is too small: ${t.size} bytes, the image needs ${needed}${total === undefined ? ' (from its partition table)' : ''}`, { hint: 'use a larger drive' });
    }
  }
  const bmapFile = options.bmap?.file ?? 'the bmap';
  if (bmap && source.size !== undefined && source.size !== bmap.imageSize) {
    stream.destroy();
    throw new SkiffError('usage', `${bmapFile} is for an image of ${bmap.imageSize} bytes, but the image has ${source.size}`, { hint: 'use the bmap made for this image, or remove it' });
  }

  try {
    writers = await Promise.all(targets.map((t) => DriveWriter.open(t)));
  } catch (err) {
    stream.destroy();
    throw err;
  }
  const zero = Buffer.alloc(BLOCK_SIZE);
  const imageHash = createHash('sha256');
  const ranges = bmap ? new RangeHasher(bmap.ranges) : undefined;
  const inFlight: Array<Promise<void>> = [];
  let offset = 0;

  try {
    for (let block = first; block; block = await readBlock()) {
      if (signal?.aborted) throw interrupted(writers, total);
      const { buf, length } = block;
      const at = offset;
      imageHash.update(buf.subarray(0, length));
      const live = writers.filter((w) => !w.failure);
      if (live.length === 0) break;
      const writes: Array<Promise<void>> = [];
      if (ranges) {
        ranges.feed(buf, length, at, (from, to) => {
          for (const w of live) writes.push(w.write(buf.subarray(from, to), to - from, at + from));
        });
      } else {
        const isZero = live.some((w) => w.skipZeros) && buf.subarray(0, length).equals(zero.subarray(0, length));
        for (const w of live) if (!(isZero && w.skipZeros)) writes.push(w.write(buf, length, at));
      }
      offset += length;
      const done = Promise.all(writes).then(() => reader.release(buf));
      inFlight.push(done);
      if (inFlight.length >= IN_FLIGHT) await inFlight.shift();
      progress({ phase: 'writing', bytes: offset, ...(total !== undefined ? { total } : {}), sourceBytes: source.bytesRead(), ...(source.compressedSize !== undefined ? { sourceTotal: source.compressedSize } : {}) });
    }
    await Promise.all(inFlight);
    if (signal?.aborted) throw interrupted(writers, total);
    if (total !== undefined && offset < total && writers.some((w) => !w.failure)) {
      throw sourceError(source, new Error(`the image ended after ${offset} of ${total} bytes`));
    }
    total = offset;
    progress({ phase: 'flushing', bytes: offset, total }, true);
    await Promise.all(writers.map((w) => w.finish(bmap?.imageSize ?? offset)));
  } catch (err) {
    await Promise.allSettled(inFlight);
    stream.destroy();
    await Promise.all(writers.map((w) => w.close()));
    if (err instanceof SkiffError && err.code !== 'interrupted' && !targets.every((t) => t.created)) {
      throw new SkiffError(err.code, `${err.message.replace(/\.$/, '')}; ${targets.map((t) => t.path).join(', ')} ${targets.length === 1 ? 'is' : 'are'} incomplete`, { ...(err.hint ? { hint: err.hint } : {}), cause: err });
    }
    throw err;
  }
  await Promise.all(writers.map((w) => w.close()));
  const writeSeconds = (performance.now() - started) / 1000;
  const checksum = imageHash.digest('hex');

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
    await options.beforeVerify?.(ok.map((w) => w.target));
    const expect = bmap && ranges ? { ranges: bmap.ranges, digests: ranges.digests } : { ranges: [{ start: 0, end: total }], digests: [checksum] };
    const verifyTotal = expect.ranges.reduce((n, r) => n + r.end - r.start, 0);
    progress({ phase: 'verifying', bytes: 0, total: verifyTotal }, true);
    const done = new Map<DriveWriter, number>();
    const results = await Promise.all(ok.map(async (w) => {
      const bad = await verifyTarget(w.target, expect, signal, (n) => {
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
      const exact = await firstDifference(options.reopen, w.target, bad).catch(() => undefined);
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
    checksum: { algorithm: 'sha256', value: checksum },
    ...(options.bmap ? { bmap: { file: options.bmap.file, mappedBytes: options.bmap.map.mappedBytes } } : {}),
    drives: writers.map((w) => ({ drive: w.target.path, bytesWritten: w.written, verified: verified.has(w) })),
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
 * Reads the target back over the given ranges and hashes each; returns the first range whose
 * digest differs, or undefined when all match.
 */
async function verifyTarget(target: Target, expect: { ranges: Array<{ start: number; end: number }>; digests: string[] }, signal: AbortSignal | undefined, onBytes: (n: number) => void): Promise<{ start: number; end: number } | undefined> {
  const handle = await open(target.resolved, 'r');
  const buf = Buffer.allocUnsafeSlow(BLOCK_SIZE);
  let done = 0;
  try {
    for (const [i, r] of expect.ranges.entries()) {
      const hash = createHash('sha256');
      for (let pos = r.start; pos < r.end;) {
        if (signal?.aborted) return undefined;
        const want = Math.min(BLOCK_SIZE, r.end - pos);
        const { bytesRead } = await handle.read(buf, 0, want, pos);
        if (bytesRead === 0) return r;
        hash.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
        done += bytesRead;
        onBytes(done);
      }
      if (hash.digest('hex') !== expect.digests[i]) return r;
    }
    return undefined;
  } finally {
    await handle.close();
  }
}

/** The first byte offset in `range` where the target differs from the image (reads the image again). */
async function firstDifference(reopen: FlashOptions['reopen'], target: Target, range: { start: number; end: number }): Promise<number | undefined> {
  if (!reopen) return undefined;
  const source = await reopen();
  const stream = await source.open();
  const handle = await open(target.resolved, 'r');
  try {
    let pos = 0;
    const theirs = Buffer.allocUnsafeSlow(BLOCK_SIZE);
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const end = pos + chunk.length;
      if (end > range.start) {
        const from = Math.max(range.start, pos);
        const to = Math.min(range.end, end);
        const { bytesRead } = await handle.read(theirs, 0, to - from, from);
        const ours = chunk.subarray(from - pos, to - pos);
        for (let i = 0; i < to - from; i++) if (i >= bytesRead || ours[i] !== theirs[i]) return from + i;
      }
      pos = end;
      if (pos >= range.end) break;
    }
    return undefined;
  } finally {
    stream.destroy();
    await handle.close();
  }
}
