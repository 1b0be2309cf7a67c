/**
 * The server relays an exec session's frames without reading them (api/tunnel.ts), but its log
 * says how the session ended (`exit 0`): this watcher follows the device's byte stream frame by
 * frame, skipping payloads without copying them, and keeps only the control frames' JSON.
 */
import { EXEC_FRAME, MAX_EXEC_FRAME_BYTES } from '../api/tunnel.js';
import { parseControl } from './frames.js';

const HEADER_BYTES = 8;
/** Control messages are a few dozen bytes; a larger one is not kept (it cannot be an exit). */
const MAX_CONTROL_BYTES = 4096;

export class ExecExitWatcher {
  /** The process's status from the device's `exit` control frame, once seen. */
  exit: number | undefined;
  /** The device's `error` control message, once seen. */
  error: string | undefined;
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private headerBytes = 0;
  /** Payload bytes of the current frame still to come (-1: reading a header). */
  private remaining = -1;
  private control: Buffer[] | undefined;
  private controlBytes = 0;
  /** A stream that is not frames (a bad header): watching stops; the relay goes on regardless. */
  private lost = false;

  /** Bytes from the device, in order, chunked anyhow. */
  feed(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.lost) {
      if (this.remaining < 0) {
        const take = Math.min(HEADER_BYTES - this.headerBytes, chunk.length - at);
        chunk.copy(this.header, this.headerBytes, at, at + take);
        this.headerBytes += take;
        at += take;
        if (this.headerBytes < HEADER_BYTES) return;
        this.startFrame();
        continue;
      }
      const take = Math.min(this.remaining, chunk.length - at);
      if (this.control && this.controlBytes + take <= MAX_CONTROL_BYTES) this.control.push(chunk.subarray(at, at + take));
      this.controlBytes += take;
      this.remaining -= take;
      at += take;
      if (this.remaining === 0) this.endFrame();
    }
  }

  private startFrame(): void {
    const type = this.header[0] ?? 0;
    const length = this.header.readUInt32BE(4);
    this.headerBytes = 0;
    if (type > EXEC_FRAME.control || length > MAX_EXEC_FRAME_BYTES) {
      this.lost = true;
      return;
    }
    this.remaining = length;
    this.control = type === EXEC_FRAME.control ? [] : undefined;
    this.controlBytes = 0;
    if (length === 0) this.endFrame();
  }

  private endFrame(): void {
    if (this.control && this.controlBytes <= MAX_CONTROL_BYTES) {
      const message = parseControl(Buffer.concat(this.control));
      if (message?.type === 'exit') this.exit = message.code;
      else if (message?.type === 'error') this.error = message.message;
    }
    this.control = undefined;
    this.remaining = -1;
  }
}
