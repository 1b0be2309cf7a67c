/**
 * The exec stream's frames (api/tunnel.ts, Docker's attach header): encode one, and cut a byte
 * stream back into frames whatever its chunking.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { EXEC_FRAME, MAX_EXEC_FRAME_BYTES, type ExecControl, type ExecFrame, type ExecFrameType } from '../api/tunnel.js';
import { SkiffError } from '../errors/errors.js';

const HEADER_BYTES = 8;

/** One frame: 8-byte header + payload (a new Buffer; payload bytes are copied once). */
export function encodeFrame(type: ExecFrameType, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  out.writeUInt32BE(0, 0);
  out[0] = type;
  out.writeUInt32BE(payload.length, 4);
  payload.copy(out, HEADER_BYTES);
  return out;
}

/** A control frame (JSON). */
export function encodeControl(message: ExecControl): Buffer {
  return encodeFrame(EXEC_FRAME.control, Buffer.from(JSON.stringify(message)));
}

/**
 * Frames of `data` split in parts of at most `max` bytes (a large stdout chunk becomes several
 * frames, so the reader never holds more than one frame's bytes).
 */
export function encodeFrames(type: ExecFrameType, data: Buffer, max = 64 * 1024): Buffer[] {
  if (data.length <= max) return [encodeFrame(type, data)];
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += max) out.push(encodeFrame(type, data.subarray(at, at + max)));
  return out;
}

/** A control frame's message, or undefined when it is not one we know (ignored, for later versions). */
export function parseControl(payload: Buffer): ExecControl | undefined {
  let m: unknown;
  try {
    m = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof m !== 'object' || m === null) return undefined;
  const o = m as Record<string, unknown>;
  const int = (v: unknown, min: number, max: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
  if (o.type === 'resize' && int(o.cols, 1, 9999) && int(o.rows, 1, 9999)) return { type: 'resize', cols: o.cols, rows: o.rows };
  if (o.type === 'signal' && typeof o.signal === 'string' && ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGKILL', 'SIGQUIT'].includes(o.signal)) return { type: 'signal', signal: o.signal as Extract<ExecControl, { type: 'signal' }>['signal'] };
  if (o.type === 'exit' && int(o.code, 0, 255)) return { type: 'exit', code: o.code };
  if (o.type === 'error' && typeof o.message === 'string') return { type: 'error', message: o.message.slice(0, 1000) };
  return undefined;
}

/**
 * Bytes in, {@link ExecFrame} objects out (object mode on the readable side). Holds at most one
 * partial frame; a header announcing more than {@link MAX_EXEC_FRAME_BYTES}, or an unknown type,
 * is an error (SkiffError 'error').
 */
export class FrameDecoder extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor() {
    super({ readableObjectMode: true, writableObjectMode: false, readableHighWaterMark: 16 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    try {
      this.drainFrames();
    } catch (err) {
      done(err as Error);
      return;
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.pendingBytes > 0) done(new SkiffError('error', `the exec stream ended inside a frame (${this.pendingBytes} bytes left over)`));
    else done();
  }

  private drainFrames(): void {
    while (this.pendingBytes >= HEADER_BYTES) {
      // A frame's pieces are joined once, when all of them are here: joining on every arrival
      // copied a large frame over and over (quadratic in the pieces it arrives in).
      const first = this.pending[0];
      const head = first && first.length >= HEADER_BYTES ? first : Buffer.concat(this.pending, this.pendingBytes);
      if (head !== first) this.pending = [head];
      const type = head[0] ?? 0;
      const length = head.readUInt32BE(4);
      if (type > EXEC_FRAME.control) throw new SkiffError('error', `unknown exec frame type ${type}`);
      if (length > MAX_EXEC_FRAME_BYTES) throw new SkiffError('error', `an exec frame of ${length} bytes is over the ${MAX_EXEC_FRAME_BYTES}-byte limit`);
      if (this.pendingBytes < HEADER_BYTES + length) return;
      const buf = this.pending.length === 1 ? head : Buffer.concat(this.pending, this.pendingBytes);
      this.push({ type: type as ExecFrameType, payload: buf.subarray(HEADER_BYTES, HEADER_BYTES + length) } satisfies ExecFrame);
      const rest = buf.subarray(HEADER_BYTES + length);
      this.pending = rest.length > 0 ? [rest] : [];
      this.pendingBytes = rest.length;
    }
  }
}
