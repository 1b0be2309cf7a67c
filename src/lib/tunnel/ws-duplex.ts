/**
 * A byte stream over the binary messages of a `ws` WebSocket whose text messages are someone
 * else's (the device event channel's JSON). The socket's owner feeds binary messages in with
 * {@link WebSocketBinaryDuplex.receive}; writes go out as binary messages, several queued writes
 * as one message. Back-pressure both ways: reads pause the socket when our reader lags, and a
 * write completes only once the socket took it while more than `highWaterBytes` wait unsent.
 */
import { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/** Default of {@link WebSocketDuplexOptions.highWaterBytes}. */
export const DUPLEX_HIGH_WATER_BYTES = 1024 * 1024;

/** Largest WebSocket message either end of a multiplexed or session socket accepts (bytes). */
export const MAX_TUNNEL_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Largest message the duplex sends when it joins queued writes (well under {@link MAX_TUNNEL_MESSAGE_BYTES}). */
const MAX_BATCH_BYTES = 1024 * 1024;

export interface WebSocketDuplexOptions {
  /** Unsent bytes on the socket above which writes wait for the socket (default {@link DUPLEX_HIGH_WATER_BYTES}). */
  highWaterBytes?: number;
}

export class WebSocketBinaryDuplex extends Duplex {
  private readonly highWaterBytes: number;
  private paused = false;

  constructor(private readonly ws: WebSocket, options: WebSocketDuplexOptions = {}) {
    super({ allowHalfOpen: false, readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024 });
    this.highWaterBytes = options.highWaterBytes ?? DUPLEX_HIGH_WATER_BYTES;
  }

  /** A binary message from the socket. */
  receive(data: Buffer): void {
    if (this.destroyed) return;
    if (!this.push(data) && !this.paused) {
      this.paused = true;
      this.ws.pause();
    }
  }

  /** The socket closed: the stream ends (readers see EOF; writers an error). */
  socketClosed(): void {
    if (this.destroyed) return;
    this.resumeSocket();
    this.push(null);
    this.destroy();
  }

  override _read(): void {
    this.resumeSocket();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.send(chunk, done);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, done: (err?: Error | null) => void): void {
    // Queued writes go as few messages as possible, but none over MAX_BATCH_BYTES: with many busy
    // streams the queue outgrew the peer's maxPayload, and the peer dropped the whole socket.
    const batches: Buffer[] = [];
    let batch: Buffer[] = [];
    let size = 0;
    for (const { chunk } of chunks) {
      if (size > 0 && size + chunk.length > MAX_BATCH_BYTES) {
        batches.push(Buffer.concat(batch));
        batch = [];
        size = 0;
      }
      batch.push(chunk);
      size += chunk.length;
    }
    batches.push(batch.length === 1 && batch[0] ? batch[0] : Buffer.concat(batch));
    const last = batches.pop() as Buffer;
    for (const b of batches) {
      if (this.ws.readyState !== this.ws.OPEN) break;
      this.ws.send(b, { binary: true });
    }
    this.send(last, done);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.resumeSocket();
    done(err);
  }

  private resumeSocket(): void {
    if (!this.paused) return;
    this.paused = false;
    this.ws.resume();
  }

  private send(data: Buffer, done: (err?: Error | null) => void): void {
    if (this.ws.readyState !== this.ws.OPEN) {
      done(new Error('the WebSocket is closed'));
      return;
    }
    let called = false;
    const finish = (err?: Error | null): void => {
      if (called) return;
      called = true;
      done(err);
    };
    this.ws.send(data, { binary: true }, (err) => finish(err ?? null));
    // Pipelined: the next write goes at once while the socket's queue is short.
    if (this.ws.bufferedAmount < this.highWaterBytes) finish();
  }
}
