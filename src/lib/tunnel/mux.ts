/**
 * HTTP/2 as the stream multiplexer over a device's event WebSocket (see api/tunnel.ts): the server
 * holds a {@link DeviceMuxClient} per connected device, the agent a {@link serveDeviceMux}. Both are
 * made lazily: the server's on the first session to the device, the agent's on the first bytes the
 * server sends (an HTTP/2 server speaks first with its SETTINGS, which must not reach a server that
 * has no HTTP/2 client yet). A protocol fault ends the whole WebSocket, so both ends start afresh.
 *
 * Windows: each stream may have {@link STREAM_WINDOW_BYTES} unread in flight, the connection
 * {@link CONNECTION_WINDOW_BYTES}, far more than all streams' windows that fit in it at once, so
 * a stalled stream holds back only its own bytes and memory per stream is bounded.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { WebSocket } from 'ws';
import { TUNNEL_ERROR_HEADER, TUNNEL_OPEN_HEADER, TUNNEL_OPEN_PATH, type TunnelOpen } from '../api/tunnel.js';
import { SkiffError } from '../errors/errors.js';
import { WebSocketBinaryDuplex } from './ws-duplex.js';

/** Unread bytes a stream may have in flight (HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE). */
export const STREAM_WINDOW_BYTES = 256 * 1024;
/** Unread bytes the whole connection may have in flight. */
export const CONNECTION_WINDOW_BYTES = 64 * 1024 * 1024;
/** Sessions at once per device (SETTINGS_MAX_CONCURRENT_STREAMS). */
export const MAX_STREAMS_PER_DEVICE = 256;
/** How long the device has to answer an open (ms): connect, or start the process. */
export const OPEN_TIMEOUT_MS = 10_000;

const SETTINGS: http2.Settings = { initialWindowSize: STREAM_WINDOW_BYTES, maxConcurrentStreams: MAX_STREAMS_PER_DEVICE, enablePush: false, maxFrameSize: 64 * 1024 };

/** The device refused an open: `status` as in TunnelOpen's answers (404, 403, 502, …), `message` one line. */
export class TunnelRefused extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = 'TunnelRefused';
  }
}

/** base64url(JSON) of an open request, for {@link TUNNEL_OPEN_HEADER}. */
export function encodeOpen(open: TunnelOpen): string {
  return Buffer.from(JSON.stringify(open)).toString('base64url');
}

/** The open request in a header value, or undefined when it is not a valid one. */
export function decodeOpen(value: string | string[] | undefined): TunnelOpen | undefined {
  if (typeof value !== 'string' || value.length > 16 * 1024) return undefined;
  let m: unknown;
  try {
    m = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
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

/**
 * The server's end of a device's multiplexer. `receive` takes the socket's binary messages,
 * `socketClosed` its close; `open` starts a session on the device.
 */
export class DeviceMuxClient {
  private duplex: WebSocketBinaryDuplex | undefined;
  private session: ClientHttp2Session | undefined;
  private closed = false;

  constructor(private readonly ws: WebSocket, private readonly log: (line: string) => void = () => undefined) {}

  /** Sessions open now. */
  get streams(): number {
    return this.activeStreams;
  }
  private activeStreams = 0;

  receive(data: Buffer): void {
    this.duplex?.receive(data);
  }

  /** The device's socket closed: every session on it ends (their streams error). */
  socketClosed(): void {
    this.closed = true;
    this.duplex?.socketClosed();
    this.session?.destroy();
  }

  /**
   * Opens a session on the device: resolves with the HTTP/2 stream once the device accepted it
   * (its bytes are the session's bytes both ways; `end()` is the half-close).
   * @throws TunnelRefused the device said no (status and its message), or did not answer in {@link OPEN_TIMEOUT_MS} (504)
   * @throws SkiffError conflict when the device's socket is closed
   */
  async open(request: TunnelOpen, timeoutMs = OPEN_TIMEOUT_MS): Promise<ClientHttp2Stream> {
    const session = this.ensureSession();
    const stream = session.request({ ':method': 'POST', ':path': TUNNEL_OPEN_PATH, [TUNNEL_OPEN_HEADER]: encodeOpen(request) }, { endStream: false });
    this.activeStreams++;
    stream.once('close', () => this.activeStreams--);
    return await new Promise<ClientHttp2Stream>((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(new TunnelRefused(504, `the device did not answer within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      stream.once('response', (headers) => {
        clearTimeout(timer);
        const status = Number(headers[':status']);
        if (status === 200) {
          resolve(stream);
          return;
        }
        const raw = headers[TUNNEL_ERROR_HEADER];
        let message = `the device refused the session (${status})`;
        if (typeof raw === 'string') {
          try {
            message = decodeURIComponent(raw);
          } catch {
            // keep the generic line
          }
        }
        stream.close();
        reject(new TunnelRefused(status, message));
      });
      stream.once('error', (err) => {
        clearTimeout(timer);
        reject(this.closed ? new SkiffError('conflict', "the device's connection to the server closed") : new TunnelRefused(502, `the device's stream failed: ${err.message}`));
      });
      stream.once('close', () => {
        clearTimeout(timer);
        reject(new SkiffError('conflict', "the device's connection to the server closed"));
      });
    });
  }

  private ensureSession(): ClientHttp2Session {
    if (this.closed) throw new SkiffError('conflict', "the device's connection to the server closed");
    if (this.session && !this.session.destroyed && !this.session.closed) return this.session;
    const duplex = new WebSocketBinaryDuplex(this.ws);
    this.duplex = duplex;
    const session = http2.connect('http://device.invalid', { createConnection: () => duplex, settings: SETTINGS, maxSessionMemory: 64 });
    session.on('connect', () => session.setLocalWindowSize(CONNECTION_WINDOW_BYTES));
    session.on('error', (err) => {
      this.log(`tunnel: a device's multiplexer failed: ${err.message}`);
      // The agent's session is in an unknown state: a new socket gives both ends a fresh one.
      this.ws.terminate();
    });
    this.session = session;
    return session;
  }
}

/** What the agent does with one session: `open` is the validated request; answer with `stream.respond`. */
export type StreamHandler = (open: TunnelOpen, stream: ServerHttp2Stream) => void;

/** The agent's end: feed it the socket's binary messages; sessions go to `onStream`. */
export interface DeviceMuxServer {
  receive(data: Buffer): void;
  /** The socket closed: every session ends (their streams are destroyed). */
  socketClosed(): void;
  /** Sessions open now. */
  readonly streams: number;
}

/** Answers an open with an error status and its one-line message (no body). */
export function refuse(stream: ServerHttp2Stream, status: number, message: string): void {
  if (stream.destroyed || stream.headersSent) return;
  stream.respond({ ':status': status, [TUNNEL_ERROR_HEADER]: encodeURIComponent(message.slice(0, 500)) }, { endStream: true });
}

/** The agent's multiplexer on its event socket `ws` (created on the first binary message). */
export function serveDeviceMux(ws: WebSocket, onStream: StreamHandler, log: (line: string) => void = () => undefined): DeviceMuxServer {
  let duplex: WebSocketBinaryDuplex | undefined;
  let session: ServerHttp2Session | undefined;
  let streams = 0;
  const server = http2.createServer({ settings: SETTINGS, maxSessionMemory: 64 });
  server.on('session', (s: ServerHttp2Session) => {
    session = s;
    s.on('connect', () => s.setLocalWindowSize(CONNECTION_WINDOW_BYTES));
    s.on('error', (err) => {
      log(`tunnel: the multiplexer failed: ${err.message}`);
      ws.terminate();
    });
  });
  server.on('stream', (stream: ServerHttp2Stream, headers) => {
    streams++;
    stream.once('close', () => streams--);
    stream.on('error', () => undefined);
    if (headers[':path'] !== TUNNEL_OPEN_PATH || headers[':method'] !== 'POST') {
      refuse(stream, 404, `unknown path ${String(headers[':path'])}`);
      return;
    }
    const open = decodeOpen(headers[TUNNEL_OPEN_HEADER]);
    if (!open) {
      refuse(stream, 400, 'the session request is not one this agent understands');
      return;
    }
    onStream(open, stream);
  });
  return {
    receive(data: Buffer) {
      if (!duplex) {
        duplex = new WebSocketBinaryDuplex(ws);
        server.emit('connection', duplex);
      }
      duplex.receive(data);
    },
    socketClosed() {
      duplex?.socketClosed();
      session?.destroy();
      duplex = undefined;
      session = undefined;
    },
    get streams() {
      return streams;
    },
  };
}
