/**
 * A streaming VCDIFF decoder (RFC 3284) for the patches `xdelta3 -e -S none -A` writes: the delta
 * bytes come in as a stream, the target bytes go out window by window, and the source is read by
 * position on demand — memory stays at one delta window and one target window (xdelta3's `-W`:
 * 8 MiB by default, 16 MiB at most) plus a small source block cache, whatever the layer's size.
 *
 * Supported: the default code table, the near/same address cache, VCD_SOURCE windows, and
 * xdelta3's Adler-32 extension (Win_Indicator bit 0x04: the target window's checksum, verified when
 * present; the server encodes with `-n`, leaving integrity to the file's sha256 and the layer's diffID).
 * Refused as corrupt (xdelta3 writes none of them with our flags): secondary compressors, custom
 * code tables, VCD_TARGET windows, compressed sections.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { DeltaApplyError } from './errors.js';
import { CachedSource, type RandomAccessSource } from './source-file.js';

/** Largest target window (and delta window) accepted; a bigger one is taken for corruption (xdelta3 writes ≤ 16 MiB). */
export const MAX_WINDOW_BYTES = 64 * 1024 * 1024;

const MAGIC = [0xd6, 0xc3, 0xc4, 0x00];
const VCD_DECOMPRESS = 0x01;
const VCD_CODETABLE = 0x02;
const VCD_APPHEADER = 0x04; // xdelta3's application header (absent with -A)
const VCD_SOURCE = 0x01;
const VCD_TARGET = 0x02;
const VCD_ADLER32 = 0x04;

const NOOP = 0;
const ADD = 1;
const RUN = 2;
const COPY = 3;
const S_NEAR = 4;
const S_SAME = 3;

interface Half { type: number; size: number; mode: number }
type CodeEntry = [Half, Half];

/** RFC 3284 section 5.6's default instruction code table (256 entries of up to two instructions). */
function defaultCodeTable(): CodeEntry[] {
  const none: Half = { type: NOOP, size: 0, mode: 0 };
  const table: CodeEntry[] = [[{ type: RUN, size: 0, mode: 0 }, none]];
  for (let size = 0; size <= 17; size++) table.push([{ type: ADD, size, mode: 0 }, none]);
  for (let mode = 0; mode < 9; mode++) {
    table.push([{ type: COPY, size: 0, mode }, none]);
    for (let size = 4; size <= 18; size++) table.push([{ type: COPY, size, mode }, none]);
  }
  for (let mode = 0; mode < 6; mode++) {
    for (let add = 1; add <= 4; add++) {
      for (let copy = 4; copy <= 6; copy++) table.push([{ type: ADD, size: add, mode: 0 }, { type: COPY, size: copy, mode }]);
    }
  }
  for (let mode = 6; mode < 9; mode++) {
    for (let add = 1; add <= 4; add++) table.push([{ type: ADD, size: add, mode: 0 }, { type: COPY, size: 4, mode }]);
  }
  for (let mode = 0; mode < 9; mode++) table.push([{ type: COPY, size: 4, mode }, { type: ADD, size: 1, mode: 0 }]);
  return table;
}

const CODE_TABLE = defaultCodeTable();

function corrupt(message: string): DeltaApplyError {
  return new DeltaApplyError('corrupt', `corrupt delta: ${message}`);
}

/** A read past the end of the bytes at hand: more input is needed, or (inside a whole window) corruption. */
class OutOfBytes extends Error {}

/** A cursor over one section of a delta window; reading past its end is corruption. */
class Section {
  pos: number;
  constructor(private readonly buf: Buffer, private readonly start: number, readonly end: number, private readonly name: string) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos === this.end;
  }

  byte(): number {
    if (this.pos >= this.end) throw new OutOfBytes(`the ${this.name} section ends too early`);
    return this.buf.readUInt8(this.pos++);
  }

  /** RFC 3284 integer: base 128, most significant digit first, high bit set on all but the last. */
  integer(): number {
    let value = 0;
    for (let i = 0; i < 8; i++) {
      const b = this.byte();
      value = value * 128 + (b & 0x7f);
      if ((b & 0x80) === 0) {
        if (value > Number.MAX_SAFE_INTEGER) break;
        return value;
      }
    }
    throw corrupt(`an integer in the ${this.name} section is too large`);
  }

  bytes(n: number): Buffer {
    if (n > this.end - this.pos) throw new OutOfBytes(`the ${this.name} section ends too early`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  get offset(): number {
    return this.pos - this.start;
  }
}

/** Incoming delta bytes not yet parsed, kept as chunks so a large window is joined once. */
class ChunkQueue {
  private chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The first `n` bytes (n ≤ length), joined. */
  peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first && first.length >= n) return first.subarray(0, n);
    const parts: Buffer[] = [];
    let got = 0;
    for (const c of this.chunks) {
      if (got >= n) break;
      const part = c.subarray(0, Math.min(c.length, n - got));
      parts.push(part);
      got += part.length;
    }
    return Buffer.concat(parts, n);
  }

  consume(n: number): void {
    this.length -= n;
    for (let c = this.chunks[0]; n > 0 && c; c = this.chunks[0]) {
      if (c.length <= n) {
        this.chunks.shift();
        n -= c.length;
      } else {
        this.chunks[0] = c.subarray(n);
        n = 0;
      }
    }
  }
}

/** Adler-32 (RFC 1950) of `data`, as xdelta3 checks each target window. */
export function adler32(data: Buffer): number {
  let a = 1;
  let b = 0;
  let i = 0;
  while (i < data.length) {
    // zlib's bound: 5552 bytes can be summed before b would need the modulo to stay exact
    const end = Math.min(data.length, i + 5552);
    for (; i < end; i++) {
      a += data[i] ?? 0;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** Returned by a parse step that needs more input bytes. */
const NEED_MORE = Symbol('need more');

/**
 * Decodes a VCDIFF stream against `source`: write the delta bytes, read the target bytes.
 * Errors (all {@link DeltaApplyError} 'corrupt'): bad magic, unsupported features, a window
 * over {@link MAX_WINDOW_BYTES}, an instruction outside its window, a checksum mismatch, a stream
 * that ends inside a window or without a header.
 * The source is not closed by the decoder.
 */
export class VcdiffDecoder extends Transform {
  private readonly input = new ChunkQueue();
  private readonly source: CachedSource;
  private headerDone = false;
  private windows = 0;
  /** Bytes of target written so far (for messages). */
  targetBytes = 0;

  /** The target window's buffer, reused from window to window when the output goes to a sink. */
  private window: Buffer | undefined;

  /**
   * @param sink where each target window goes instead of the readable side: awaited, and its
   *   buffer reused once it resolves (no garbage per window; write it, do not keep it)
   */
  constructor(source: RandomAccessSource, private readonly options: { maxWindow?: number; sink?: (window: Buffer) => Promise<void> } = {}) {
    super({ readableHighWaterMark: 1 });
    this.source = new CachedSource(source);
  }

  private get maxWindow(): number {
    return this.options.maxWindow ?? MAX_WINDOW_BYTES;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.input.push(chunk);
    this.drain().then(() => callback(), (err: unknown) => callback(err as Error));
  }

  override _flush(callback: TransformCallback): void {
    this.drain().then(() => {
      if (!this.headerDone) callback(corrupt('the stream ends before its VCDIFF header'));
      // xdelta3 writes a window even for an empty target: none at all is a cut stream
      else if (this.windows === 0 && this.input.length === 0) callback(corrupt('the stream ends before its first window (truncated)'));
      else if (this.input.length > 0) callback(corrupt(`the stream ends inside window ${this.windows + 1} (truncated)`));
      else callback();
    }, (err: unknown) => callback(err as Error));
  }

  /** Parses and decodes every complete part of the input. */
  private async drain(): Promise<void> {
    if (!this.headerDone) {
      if (!this.parseHeader()) return;
    }
    for (;;) {
      const window = this.parseWindowStart();
      if (window === NEED_MORE) return;
      const { indicator, srcLen, srcPos, encLen, headerLen } = window;
      if (this.input.length < headerLen + encLen) return;
      this.input.consume(headerLen);
      const encoding = this.input.peek(encLen);
      this.input.consume(encLen);
      let target: Buffer;
      try {
        target = await this.decodeWindow(indicator, srcLen, srcPos, encoding);
      } catch (err) {
        if (err instanceof OutOfBytes) throw corrupt(err.message);
        throw err;
      }
      this.windows++;
      this.targetBytes += target.length;
      if (target.length === 0) continue;
      if (this.options.sink) await this.options.sink(target);
      else this.push(target);
    }
  }

  /** @returns false when more input is needed */
  private parseHeader(): boolean {
    const have = this.input.peek(Math.min(this.input.length, 5));
    for (let i = 0; i < have.length && i < 4; i++) {
      if (have[i] !== MAGIC[i]) throw corrupt('not a VCDIFF stream (bad magic bytes)');
    }
    if (have.length < 5) return false;
    const indicator = have.readUInt8(4);
    if (indicator & VCD_DECOMPRESS) throw corrupt('it uses a secondary compressor (encode with xdelta3 -S none)');
    if (indicator & VCD_CODETABLE) throw corrupt('it uses a custom code table, which is not supported');
    if (indicator & ~(VCD_DECOMPRESS | VCD_CODETABLE | VCD_APPHEADER)) throw corrupt('unknown header indicator bits');
    if (indicator & VCD_APPHEADER) {
      // xdelta3's application header (file names): skipped
      const buf = this.input.peek(Math.min(this.input.length, 5 + 10));
      const s = new Section(buf, 5, buf.length, 'header');
      let len: number;
      try {
        len = s.integer();
      } catch (err) {
        if (!(err instanceof OutOfBytes)) throw err;
        if (buf.length < 15) return false;
        throw corrupt('bad application header length');
      }
      if (len > 65536) throw corrupt('application header too large');
      if (this.input.length < s.pos + len) return false;
      this.input.consume(s.pos + len);
    } else {
      this.input.consume(5);
    }
    this.headerDone = true;
    return true;
  }

  private parseWindowStart(): typeof NEED_MORE | { indicator: number; srcLen: number; srcPos: number; encLen: number; headerLen: number } {
    if (this.input.length === 0) return NEED_MORE;
    // indicator + three integers of at most 8 bytes each
    const buf = this.input.peek(Math.min(this.input.length, 25));
    const s = new Section(buf, 0, buf.length, 'window header');
    try {
      const indicator = s.byte();
      if (indicator & ~(VCD_SOURCE | VCD_TARGET | VCD_ADLER32)) throw corrupt(`window ${this.windows + 1} has unknown indicator bits`);
      if (indicator & VCD_TARGET) throw corrupt('it uses VCD_TARGET windows, which are not supported');
      let srcLen = 0;
      let srcPos = 0;
      if (indicator & VCD_SOURCE) {
        srcLen = s.integer();
        srcPos = s.integer();
        if (srcPos + srcLen > this.source.size) throw corrupt(`window ${this.windows + 1} copies from source bytes ${srcPos}–${srcPos + srcLen}, past the source's ${this.source.size} bytes`);
      }
      const encLen = s.integer();
      if (encLen > this.maxWindow + 1024) throw corrupt(`window ${this.windows + 1}'s delta encoding (${encLen} bytes) is larger than the ${this.maxWindow}-byte limit`);
      return { indicator, srcLen, srcPos, encLen, headerLen: s.offset };
    } catch (err) {
      if (!(err instanceof OutOfBytes)) throw err;
      // an integer cut by the end of the input so far: wait for more
      if (buf.length < 25) return NEED_MORE;
      throw corrupt(`window ${this.windows + 1}'s header is malformed`);
    }
  }

  private async decodeWindow(indicator: number, srcLen: number, srcPos: number, encoding: Buffer): Promise<Buffer> {
    const n = this.windows + 1;
    const head = new Section(encoding, 0, encoding.length, `window ${n} header`);
    const targetLen = head.integer();
    if (targetLen > this.maxWindow) throw corrupt(`window ${n}'s target (${targetLen} bytes) is larger than the ${this.maxWindow}-byte limit`);
    const deltaIndicator = head.byte();
    if (deltaIndicator !== 0) throw corrupt(`window ${n} has compressed sections (no secondary compressor is declared)`);
    const dataLen = head.integer();
    const instLen = head.integer();
    const addrLen = head.integer();
    let checksum: number | undefined;
    if (indicator & VCD_ADLER32) checksum = head.bytes(4).readUInt32BE(0);
    const dataStart = head.pos;
    if (dataStart + dataLen + instLen + addrLen !== encoding.length) throw corrupt(`window ${n}'s section lengths do not add up to its delta encoding length`);
    const data = new Section(encoding, dataStart, dataStart + dataLen, `window ${n} data`);
    const inst = new Section(encoding, dataStart + dataLen, dataStart + dataLen + instLen, `window ${n} instructions`);
    const addr = new Section(encoding, dataStart + dataLen + instLen, encoding.length, `window ${n} addresses`);

    let target: Buffer;
    if (this.options.sink) {
      if (!this.window || this.window.length < targetLen) this.window = Buffer.allocUnsafe(targetLen);
      target = this.window.subarray(0, targetLen);
    } else target = Buffer.allocUnsafe(targetLen);
    let pos = 0;
    const near = new Array<number>(S_NEAR).fill(0);
    let nextNear = 0;
    const same = new Array<number>(S_SAME * 256).fill(0);

    const room = (size: number): void => {
      if (size > targetLen - pos) throw corrupt(`window ${n}'s instructions write past its ${targetLen}-byte target`);
    };

    while (!inst.done) {
      const entry = CODE_TABLE[inst.byte()];
      if (!entry) throw corrupt('bad instruction code'); // not reached: the table has all 256 codes
      for (const half of entry) {
        if (half.type === NOOP) continue;
        const size = half.size === 0 ? inst.integer() : half.size;
        room(size);
        if (half.type === ADD) {
          data.bytes(size).copy(target, pos);
          pos += size;
        } else if (half.type === RUN) {
          target.fill(data.byte(), pos, pos + size);
          pos += size;
        } else {
          const here = srcLen + pos;
          let address: number;
          if (half.mode === 0) address = addr.integer();
          else if (half.mode === 1) address = here - addr.integer();
          else if (half.mode < 2 + S_NEAR) address = (near[half.mode - 2] ?? 0) + addr.integer();
          else address = same[(half.mode - 2 - S_NEAR) * 256 + addr.byte()] ?? 0;
          if (address < 0 || address >= here) throw corrupt(`window ${n} copies from address ${address}, outside the ${here} bytes before it`);
          near[nextNear] = address;
          nextNear = (nextNear + 1) % S_NEAR;
          same[address % (S_SAME * 256)] = address;
          let from = address;
          let left = size;
          if (from < srcLen) {
            const fromSource = Math.min(left, srcLen - from);
            await this.source.copyInto(srcPos + from, fromSource, target, pos);
            pos += fromSource;
            from += fromSource;
            left -= fromSource;
          }
          if (left > 0) {
            const t = from - srcLen;
            if (t + left <= pos) {
              target.copy(target, pos, t, t + left);
              pos += left;
            } else {
              // overlapping the bytes it writes: byte by byte, so a short pattern repeats
              for (let i = 0; i < left; i++) target[pos + i] = target[t + i] ?? 0;
              pos += left;
            }
          }
        }
      }
    }
    if (pos !== targetLen) throw corrupt(`window ${n}'s instructions make ${pos} bytes, its header says ${targetLen}`);
    if (!data.done || !addr.done) throw corrupt(`window ${n} has data or addresses its instructions do not use`);
    if (checksum !== undefined && adler32(target) !== checksum) throw corrupt(`window ${n}'s Adler-32 checksum does not match the bytes it makes`);
    return target;
  }
}
