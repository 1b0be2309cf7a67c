/**
 * The stream multiplexer over a device's event WebSocket (see api/tunnel.ts): the server holds a
 * {@link DeviceMuxClient} per connected device, the agent a {@link serveDeviceMux}. Each binary
 * WebSocket message is one frame `[type u8][stream id u32 BE][payload]`, so the WebSocket's own
 * message boundaries frame it:
 *
 * | type | name     | payload                                   | direction                  |
 * |------|----------|-------------------------------------------|----------------------------|
 * | 0    | OPEN     | JSON {@link TunnelOpen}                   | server → device            |
 * | 1    | RESPONSE | status u16 BE, then a one-line message    | device → server, once      |
 * | 2    | DATA     | bytes (at most {@link MAX_DATA_BYTES})     | both, within credit        |
 * | 3    | CREDIT   | u32 BE: more bytes the peer may send      | both                       |
 * | 4    | END      | —: no more DATA from the sender (FIN)     | both, once                 |
 * | 5    | RESET    | u32 BE code ({@link RESET_CODE})          | both: the stream is over   |
 *
 * Flow control is per stream and credit-based, as HTTP/2's and yamux's windows are: each side may
 * have {@link STREAM_WINDOW_BYTES} unread by the other, and the reader returns credit as its
 * consumer takes bytes, so a stalled stream holds back only itself and its memory is bounded.
 *
 * Why not HTTP/2 (Node's, over the WebSocket as a JS duplex), which came first: under load on
 * Node 20 a stream reset while the session had a write pending made nghttp2 emit empty DATA frames
 * for ever (an event loop spinning at 100% while memory grew by GB/s), and resets accounted wrongly
 * made the session refuse new streams (ENHANCE_YOUR_CALM). bpmux (the library of this kind) has no
 * reset that reaches the peer at once, which ending a killed session needs.
 */
import { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { TunnelOpen } from '../api/tunnel.js';
import { SkiffError } from '../errors/errors.js';

/** Unread bytes a stream may have in flight each way. */
export const STREAM_WINDOW_BYTES = 256 * 1024;
/** Largest DATA payload (bytes). */
export const MAX_DATA_BYTES = 64 * 1024;
/** Sessions at once per device. */
export const MAX_STREAMS_PER_DEVICE = 256;
/** Largest WebSocket message the device socket and session sockets accept (bytes); frames are far smaller. */
export const MAX_TUNNEL_MESSAGE_BYTES = 4 * 1024 * 1024;
/** How long the device has to answer an open (ms): connect, or start the process. */
export const OPEN_TIMEOUT_MS = 10_000;

/** RESET codes (HTTP/2's numbers, so logs read the same). */
export const RESET_CODE = { noError: 0, protocol: 1, internal: 2, refused: 7, cancel: 8 } as const;

const T = { open: 0, response: 1, data: 2, credit: 3, end: 4, reset: 5 } as const;
const HEADER = 5;

function frame(type: number, id: number, payload?: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER + (payload?.length ?? 0));
  out[0] = type;
  out.writeUInt32BE(id, 1);
  payload?.copy(out, HEADER);
  return out;
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** The device refused an open: `status` as in TunnelOpen's answers (404, 403, 502, …), `message` one line. */
export class TunnelRefused extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = 'TunnelRefused';
  }
}

/** An OPEN frame's JSON as the one {@link TunnelOpen} it may be, or undefined (the agent answers 400). */
export function parseOpen(text: string): TunnelOpen | undefined {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof m !== 'object' || m === null) return undefined;
  const o = m as Record<string, unknown>;
  const name = (v: unknown): v is string => typeof v === 'string' && /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/.test(v);
  const int = (v: unknown, min: number, max: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
  if (o.service !== undefined && !name(o.service)) return undefined;
  const service = o.service === undefined ? {} : { service: o.service };
  if (o.kind === 'tcp') return int(o.port, 1, 65535) ? { kind: 'tcp', port: o.port, ...service } : undefined;
  if (o.kind !== 'exec' || typeof o.tty !== 'boolean') return undefined;
  if (o.command !== undefined && (typeof o.command !== 'string' || o.command.length === 0 || o.command.length > 8192)) return undefined;
  if ((o.cols !== undefined && !int(o.cols, 1, 9999)) || (o.rows !== undefined && !int(o.rows, 1, 9999))) return undefined;
  if (o.term !== undefined && (typeof o.term !== 'string' || !/^[a-zA-Z0-9._+-]{1,64}$/.test(o.term))) return undefined;
  return {
    kind: 'exec', tty: o.tty, ...service,
    ...(o.command !== undefined ? { command: o.command as string } : {}),
    ...(o.cols !== undefined ? { cols: o.cols as number } : {}), ...(o.rows !== undefined ? { rows: o.rows as number } : {}),
    ...(o.term !== undefined ? { term: o.term as string } : {}),
  };
}

/** The state of the connection a stream rides, as callers ask it (`stream.session.destroyed`). */
export interface MuxSessionState {
  readonly destroyed: boolean;
  readonly closed: boolean;
}

/**
 * One session's byte stream both ways (a Duplex: `end()` is the half-close). `close(code)` resets
 * it (the peer's stream closes at once with that `rstCode`); a stream reset by the peer closes
 * with the peer's code in `rstCode`; a stream whose two halves ended closes with `rstCode` 0.
 */
export class MuxStream extends Duplex {
  /** The reset code once reset (either side); 0 after a clean end. */
  rstCode: number | undefined;
  /** The device side: whether the open was answered. */
  headersSent = false;
  private sendCredit = STREAM_WINDOW_BYTES;
  private received = 0;
  private granted = STREAM_WINDOW_BYTES;
  private pending: { data: Buffer; done: (err?: Error | null) => void } | undefined;
  private localEnded = false;
  private remoteEnded = false;
  private finished = false;

  constructor(private readonly mux: MuxCore, readonly id: number) {
    super({ allowHalfOpen: true, readableHighWaterMark: MAX_DATA_BYTES, writableHighWaterMark: MAX_DATA_BYTES });
  }

  /** The connection's state (closed once the device's socket closed). */
  get session(): MuxSessionState {
    return this.mux.state;
  }

  /**
   * Device side: answers the open. 200 accepts it; any other status refuses it with `message`
   * (the stream is then over). Compatible in shape with HTTP/2's `respond` for the callers.
   */
  respond(headers: { ':status': number; [name: string]: string | number }, _options?: { endStream?: boolean }): void {
    if (this.headersSent || this.finished) return;
    this.headersSent = true;
    const status = headers[':status'];
    const raw = headers['skiff-error'];
    let message = '';
    if (typeof raw === 'string') {
      try {
        message = decodeURIComponent(raw);
      } catch {
        message = raw;
      }
    }
    const payload = Buffer.concat([Buffer.from([status >> 8, status & 0xff]), Buffer.from(message.slice(0, 500))]);
    this.mux.send(frame(T.response, this.id, payload));
    if (status !== 200) this.over(RESET_CODE.noError, false);
  }

  /** Resets the stream: the peer's side closes at once (its process is killed, its connection closed). */
  close(code: number = RESET_CODE.noError): void {
    if (this.finished) return;
    this.over(code, true);
  }

  /** @internal a frame for this stream */
  onFrame(type: number, payload: Buffer): void {
    if (this.finished) return;
    if (type === T.data) {
      this.received += payload.length;
      if (this.received > this.granted) {
        this.over(RESET_CODE.protocol, true);
        return;
      }
      this.push(payload);
      this.grant();
    } else if (type === T.credit && payload.length >= 4) {
      this.sendCredit += payload.readUInt32BE(0);
      this.flush();
    } else if (type === T.end) {
      this.remoteEnded = true;
      this.push(null);
      this.maybeDone();
    } else if (type === T.reset) {
      this.over(payload.length >= 4 ? payload.readUInt32BE(0) : RESET_CODE.internal, false);
    }
  }

  /** @internal the connection is gone */
  onLost(): void {
    if (this.finished) return;
    this.over(RESET_CODE.cancel, false);
  }

  override _read(): void {
    this.grant();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.finished) {
      done();
      return;
    }
    this.pending = { data: chunk, done };
    this.flush();
  }

  override _final(done: (err?: Error | null) => void): void {
    if (!this.finished) {
      this.localEnded = true;
      this.mux.send(frame(T.end, this.id));
      this.maybeDone();
    }
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    // A stream destroyed by its user (a pipe's error, destroy()) resets its peer's too.
    if (!this.finished) this.over(err ? RESET_CODE.internal : RESET_CODE.cancel, true, false);
    done(err);
  }

  /** Returns credit for what our reader took: only once a quarter window is due, to keep CREDIT frames few. */
  private grant(): void {
    if (this.finished || this.remoteEnded) return;
    const consumed = this.received - this.readableLength;
    const due = consumed + STREAM_WINDOW_BYTES - this.granted;
    if (due < STREAM_WINDOW_BYTES / 4) return;
    this.granted += due;
    this.mux.send(frame(T.credit, this.id, u32(due)));
  }

  private flush(): void {
    const p = this.pending;
    if (!p || this.finished) return;
    while (this.sendCredit > 0 && p.data.length > 0) {
      const n = Math.min(this.sendCredit, MAX_DATA_BYTES, p.data.length);
      this.mux.send(frame(T.data, this.id, p.data.subarray(0, n)));
      this.sendCredit -= n;
      p.data = p.data.subarray(n);
    }
    if (p.data.length === 0) {
      this.pending = undefined;
      p.done();
    }
  }

  private maybeDone(): void {
    if (this.localEnded && this.remoteEnded) {
      this.finished = true;
      this.rstCode = RESET_CODE.noError;
      this.mux.forget(this.id);
      // Both halves ended: the Duplex closes by itself once its reader took the end.
    }
  }

  /** Ends the stream now: `tell` sends RESET to the peer; `destroy` false when called from _destroy. */
  private over(code: number, tell: boolean, destroy = true): void {
    if (this.finished) return;
    this.finished = true;
    this.rstCode = code;
    if (tell) this.mux.send(frame(T.reset, this.id, u32(code)));
    this.mux.forget(this.id);
    const pending = this.pending;
    this.pending = undefined;
    pending?.done();
    if (destroy) this.destroy();
  }
}

/** What streams need from their connection. */
class MuxCore {
  private readonly streams = new Map<number, MuxStream>();
  private lost = false;
  readonly state: MuxSessionState;

  constructor(private readonly ws: WebSocket) {
    const isLost = (): boolean => this.lost;
    this.state = {
      get destroyed() {
        return isLost();
      },
      get closed() {
        return isLost();
      },
    };
  }

  get size(): number {
    return this.streams.size;
  }

  get isLost(): boolean {
    return this.lost;
  }

  add(stream: MuxStream): void {
    this.streams.set(stream.id, stream);
  }

  get(id: number): MuxStream | undefined {
    return this.streams.get(id);
  }

  forget(id: number): void {
    this.streams.delete(id);
  }

  send(data: Buffer): void {
    if (this.lost || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(data, { binary: true });
  }

  /** Every stream ends: the socket is gone. */
  loseAll(): void {
    this.lost = true;
    for (const s of [...this.streams.values()]) s.onLost();
    this.streams.clear();
  }
}

/** A frame's type, stream id and payload, or undefined when it is too short to be one. */
function parseFrame(data: Buffer): { type: number; id: number; payload: Buffer } | undefined {
  if (data.length < HEADER) return undefined;
  return { type: data[0] ?? 255, id: data.readUInt32BE(1), payload: data.subarray(HEADER) };
}

/**
 * The server's end of a device's multiplexer. `receive` takes the socket's binary messages,
 * `socketClosed` its close; `open` starts a session on the device.
 */
export class DeviceMuxClient {
  private readonly core: MuxCore;
  private nextId = 1;
  private readonly waiting = new Map<number, (status: number, message: string) => void>();

  constructor(ws: WebSocket) {
    this.core = new MuxCore(ws);
  }

  /** Sessions open now. */
  get streams(): number {
    return this.core.size;
  }

  receive(data: Buffer): void {
    const f = parseFrame(data);
    if (!f) return;
    if (f.type === T.response) {
      const answer = this.waiting.get(f.id);
      if (!answer) return;
      this.waiting.delete(f.id);
      answer(f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 502, f.payload.subarray(2).toString('utf8'));
      return;
    }
    this.core.get(f.id)?.onFrame(f.type, f.payload);
  }

  /** The device's socket closed: every session on it ends. */
  socketClosed(): void {
    this.core.loseAll();
    for (const answer of [...this.waiting.values()]) answer(0, '');
    this.waiting.clear();
  }

  /**
   * Opens a session on the device: resolves with the stream once the device accepted it (its
   * bytes are the session's bytes both ways; `end()` is the half-close, `close(code)` a reset).
   * @throws TunnelRefused the device said no (status and its message), or did not answer in `timeoutMs` (504)
   * @throws SkiffError conflict when the device's socket is closed
   */
  async open(request: TunnelOpen, timeoutMs = OPEN_TIMEOUT_MS): Promise<MuxStream> {
    if (this.core.isLost) throw new SkiffError('conflict', "the device's connection to the server closed");
    const id = this.nextId;
    this.nextId = (this.nextId + 2) % 0x7fffffff;
    const stream = new MuxStream(this.core, id);
    this.core.add(stream);
    stream.on('error', () => undefined);
    const answered = new Promise<{ status: number; message: string }>((resolve) => this.waiting.set(id, (status, message) => resolve({ status, message })));
    this.core.send(frame(T.open, id, Buffer.from(JSON.stringify(request))));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const answer = await Promise.race([answered, timeout]);
    clearTimeout(timer);
    if (answer === 'timeout') {
      this.waiting.delete(id);
      stream.close(RESET_CODE.cancel);
      throw new TunnelRefused(504, `the device did not answer within ${Math.round(timeoutMs / 1000)} s`);
    }
    if (answer.status === 0) throw new SkiffError('conflict', "the device's connection to the server closed");
    if (answer.status !== 200) {
      this.core.forget(id);
      stream.destroy();
      throw new TunnelRefused(answer.status, answer.message || `the device refused the session (${answer.status})`);
    }
    stream.headersSent = true;
    return stream;
  }
}

/** What the agent does with one session: `open` is the validated request; answer with `stream.respond` or {@link refuse}. */
export type StreamHandler = (open: TunnelOpen, stream: MuxStream) => void;

/** The agent's end: feed it the socket's binary messages; sessions go to `onStream`. */
export interface DeviceMuxServer {
  receive(data: Buffer): void;
  /** The socket closed: every session ends. */
  socketClosed(): void;
  /** Sessions open now. */
  readonly streams: number;
}

/** Answers an open with an error status and its one-line message. */
export function refuse(stream: MuxStream, status: number, message: string): void {
  if (stream.destroyed || stream.headersSent) return;
  stream.respond({ ':status': status, 'skiff-error': encodeURIComponent(message.slice(0, 500)) }, { endStream: true });
}

/** The agent's multiplexer on its event socket `ws`. */
export function serveDeviceMux(ws: WebSocket, onStream: StreamHandler): DeviceMuxServer {
  const core = new MuxCore(ws);
  return {
    receive(data: Buffer) {
      const f = parseFrame(data);
      if (!f) return;
      if (f.type !== T.open) {
        core.get(f.id)?.onFrame(f.type, f.payload);
        return;
      }
      if (core.get(f.id)) return; // a duplicate open is ignored
      const stream = new MuxStream(core, f.id);
      stream.on('error', () => undefined);
      core.add(stream);
      if (core.size > MAX_STREAMS_PER_DEVICE) {
        refuse(stream, 503, `the device has ${MAX_STREAMS_PER_DEVICE} sessions open, the most it takes at once`);
        return;
      }
      const open = parseOpen(f.payload.toString('utf8'));
      if (!open) {
        refuse(stream, 400, 'the session request is not one this agent understands');
        return;
      }
      onStream(open, stream);
    },
    socketClosed() {
      core.loseAll();
    },
    get streams() {
      return core.size;
    },
  };
}
