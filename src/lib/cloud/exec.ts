/**
 * `skiff device ssh <uuid>`: a shell or one command on a cloud device, through the server
 * (`GET /devices/:uuid/exec`, one WebSocket whose binary messages are exec frames in Docker's
 * attach format, api/tunnel.ts). The remote exit status becomes ours.
 */
import type { WebSocket } from 'ws';
import { EOF_MESSAGE, EXEC_FRAME, TUNNEL_CLOSE, type ExecControl, type ExecFrame, type ExecQuery } from '../api/tunnel.js';
import { SkiffError } from '../errors/errors.js';
import { encodeControl, encodeFrames, FrameDecoder, parseControl } from '../tunnel/frames.js';
import type { CloudClient } from './client.js';

/** Above this many bytes queued on the WebSocket, stop reading stdin until it drains. */
const SEND_HIGH_WATER = 1024 * 1024;

type Signal = Extract<ExecControl, { type: 'signal' }>['signal'];
const SIGNAL_NUMBERS: Record<Signal, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };

export interface CloudExecOptions {
  client: CloudClient;
  /** The device's uuid (a 7+ prefix is fine: the server resolves it). */
  uuid: string;
  /** A service's container; absent: the device host (the device may refuse, 403). */
  service?: string;
  /** One command (`sh -c`); absent: a login shell. */
  command?: string;
  /** A pseudo-terminal: raw mode here, tty=1 there, the size followed. */
  tty: boolean;
  /** TERM for the remote side (tty only). */
  term?: string;
  stdin: NodeJS.ReadableStream & { setRawMode?: (raw: boolean) => void; isTTY?: boolean };
  stdout: NodeJS.WritableStream & { columns?: number; rows?: number; on(e: 'resize', cb: () => void): unknown; off?(e: 'resize', cb: () => void): unknown };
  stderr: NodeJS.WritableStream;
  /**
   * Subscribes to the signals that end the session (SIGINT, SIGTERM, SIGHUP); returns the
   * unsubscribe. The session sends the signal to the remote process, then closes.
   */
  onSignal?: (handler: (signal: Signal) => void) => () => void;
}

/**
 * Runs the session; resolves with the remote exit status (128+n when it was killed by signal n,
 * as a shell says it).
 *
 * @throws SkiffError notFound (device or service), conflict (device offline), deviceRefused (host
 *   shell not allowed), serverUnreachable (the device's or our connection to the server dropped)
 */
export async function cloudExec(o: CloudExecOptions): Promise<number> {
  const query: ExecQuery = { tty: o.tty ? '1' : '0' };
  if (o.service) query.service = o.service;
  if (o.command) query.command = o.command;
  if (o.tty) {
    const size = sizeOf(o.stdout);
    if (size) Object.assign(query, { cols: String(size.cols), rows: String(size.rows) });
    if (o.term && /^[a-zA-Z0-9._+-]{1,64}$/.test(o.term)) query.term = o.term;
  }
  const ws = await o.client.websocket('deviceExec', { params: { uuid: o.uuid }, query: { ...query } });
  const name = `device ${o.uuid.slice(0, 7)}`;
  const cleanups: Array<() => void> = [];
  try {
    if (o.tty) {
      o.stdin.setRawMode?.(true);
      cleanups.push(() => o.stdin.setRawMode?.(false));
      const resize = (): void => {
        const size = sizeOf(o.stdout);
        if (size && ws.readyState === ws.OPEN) ws.send(encodeControl({ type: 'resize', ...size }));
      };
      o.stdout.on('resize', resize);
      cleanups.push(() => o.stdout.off?.('resize', resize));
    }
    let killedBy: Signal | undefined;
    const output = { discard: false };
    const input = { ended: false };
    // In raw mode Ctrl-C is a byte for the remote side; a SIGTERM or SIGHUP still reaches us.
    if (o.onSignal) {
      cleanups.push(o.onSignal((signal) => {
        if (ws.readyState !== ws.OPEN) return;
        // A second signal does not wait for the server's goodbye.
        if (killedBy) {
          ws.terminate();
          return;
        }
        killedBy = signal;
        // The signal first, so the remote process ends as it would here; then our close. Both
        // queue behind stdin the remote side may not be reading: closeSoon does not wait for
        // that, and the server's end of the session ends the process anyway.
        // Not after our EOF, which half-closed the stream (the server takes no frame after it):
        // the server's end of the session ends the process then.
        if (!input.ended) ws.send(encodeControl({ type: 'signal', signal }));
        // Output a stalled stdout had not taken is dropped: paused for it, the socket would not
        // read the server's close either, and the session would end 2 s later as a broken one.
        output.discard = true;
        ws.resume();
        closeSoon(ws);
      }));
    }
    cleanups.push(forwardStdin(o.stdin, ws, input));
    const relaying = relayOutput(ws, o.stdout, o.stderr, output);
    ws.resume(); // websocket() hands it over paused, so no early output is lost
    // Cut short by our own signal, a half-read frame is no protocol error.
    const ended = await relaying.catch((err: unknown) => {
      if (killedBy) return { code: TUNNEL_CLOSE.done } as Ended;
      throw err;
    });
    if (ended.exit !== undefined) return ended.exit;
    if (killedBy) return 128 + SIGNAL_NUMBERS[killedBy];
    if (ended.error) throw new SkiffError('error', `${name}: ${ended.error}`);
    throw closeError(name, ended.code);
  } finally {
    for (const c of cleanups.reverse()) c();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.terminate();
  }
}

/**
 * Ends a session normally (close 1000), without waiting out ws's 30 s close handshake: a server
 * that does not finish it (its side of the socket paused) kept a finished `ssh` or a stopped
 * tunnel alive for 30 s. No-op on a closed socket.
 */
export function closeSoon(ws: WebSocket): void {
  if (ws.readyState === ws.CLOSED) return;
  ws.close(TUNNEL_CLOSE.done);
  setTimeout(() => ws.terminate(), 2000).unref();
}

/** A session that ended without an exit status, as the one line a person reads. */
export function closeError(name: string, code: number): SkiffError {
  switch (code) {
    case TUNNEL_CLOSE.deviceLost:
      return new SkiffError('serverUnreachable', `${name}'s connection to the server dropped`, { hint: 'try again once it is back online' });
    case TUNNEL_CLOSE.deviceReset:
      return new SkiffError('deviceUnreachable', `${name} reset the session (its agent stopped?)`);
    case TUNNEL_CLOSE.serverStopping:
      return new SkiffError('serverUnreachable', 'the server is stopping', { hint: 'try again in a moment' });
    case TUNNEL_CLOSE.protocol:
      return new SkiffError('error', 'the server ended the session: it broke the protocol (a bug)');
    case 1006:
      return new SkiffError('serverUnreachable', 'the connection to the server dropped');
    default:
      return new SkiffError('error', `${name}: the session ended without an exit status (close code ${code})`);
  }
}

/** The terminal's size, when it has one. */
function sizeOf(out: { columns?: number; rows?: number }): { cols: number; rows: number } | undefined {
  const cols = out.columns ?? 0;
  const rows = out.rows ?? 0;
  return cols >= 1 && rows >= 1 && cols <= 9999 && rows <= 9999 ? { cols, rows } : undefined;
}

/**
 * stdin → stdin frames, never faster than the socket takes them (a 1 GiB pipe is read as it is
 * sent); its end → the EOF text message (the remote stdin closes). Returns the unsubscribe.
 */
function forwardStdin(stdin: CloudExecOptions['stdin'], ws: WebSocket, input: { ended: boolean }): () => void {
  const onData = (chunk: Buffer | string): void => {
    if (ws.readyState !== ws.OPEN) return;
    const frames = encodeFrames(EXEC_FRAME.stdin, typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    frames.forEach((frame, i) => ws.send(frame, i === frames.length - 1 ? afterSend : undefined));
    if (ws.bufferedAmount > SEND_HIGH_WATER) stdin.pause();
  };
  const afterSend = (): void => {
    if (ws.bufferedAmount <= SEND_HIGH_WATER && stdin.isPaused()) stdin.resume();
  };
  const onEnd = (): void => {
    input.ended = true;
    if (ws.readyState === ws.OPEN) ws.send(EOF_MESSAGE);
  };
  stdin.on('data', onData);
  stdin.once('end', onEnd);
  stdin.resume();
  return () => {
    stdin.off('data', onData);
    stdin.off('end', onEnd);
    stdin.pause();
  };
}

interface Ended {
  exit?: number;
  error?: string;
  code: number;
}

/**
 * WebSocket messages → frames → our stdout and stderr. A stdout that does not keep up pauses the
 * socket (nothing piles up here); `output.discard` drops what comes after it is set. Resolves when
 * the socket closed.
 */
/**
 * Until `to` drains (or errs), or the session is closed. Its listeners go either way: once the
 * session is closed, the frames still held would each add a pair that never fires (Node then
 * warns of a leak on the user's stderr, as a CI run of `device ssh -c` with fast output showed).
 */
function drainedOrClosed(to: NodeJS.WritableStream, closed: Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      to.off('drain', done);
      to.off('error', done);
      resolve();
    };
    to.once('drain', done);
    to.once('error', done);
    void closed.then(done);
  });
}

async function relayOutput(ws: WebSocket, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream, output: { discard: boolean }): Promise<Ended> {
  const decoder = new FrameDecoder();
  const ended: Ended = { code: 1005 };
  let broken: Error | undefined;
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary) {
      // The only text message is the EOF: the remote side has no more output.
      if (data.toString() === EOF_MESSAGE) decoder.end();
      return;
    }
    if (decoder.writableEnded || output.discard) return;
    // Messages already read keep coming for a moment after the pause: one drain listener at a
    // time (else a fast writer piles them up and Node warns of a leak on the user's stderr).
    if (!decoder.write(data) && !ws.isPaused) {
      ws.pause();
      decoder.once('drain', () => ws.resume());
    }
  });
  const closed = new Promise<void>((resolve) => {
    ws.once('close', (code: number) => {
      ended.code = code;
      if (!decoder.writableEnded) decoder.end();
      resolve();
    });
  });
  ws.on('error', () => undefined);
  decoder.on('error', (err: Error) => {
    broken = err;
    ws.close(TUNNEL_CLOSE.protocol);
  });
  try {
    for await (const frame of decoder as AsyncIterable<ExecFrame>) {
      if (frame.type === EXEC_FRAME.stdout || frame.type === EXEC_FRAME.stderr) {
        // Frames the decoder held when we were told to drop output (each would wait on stdout).
        if (output.discard) continue;
        const to = frame.type === EXEC_FRAME.stdout ? stdout : stderr;
        if (!to.write(frame.payload)) await drainedOrClosed(to, closed);
      } else if (frame.type === EXEC_FRAME.control) {
        const control = parseControl(frame.payload);
        if (control?.type === 'exit') ended.exit = control.code;
        else if (control?.type === 'error') ended.error = control.message;
      }
    }
  } catch (err) {
    broken ??= err as Error;
  }
  // The remote side said all it has: the session is over whether or not the server closes first.
  if (ended.exit !== undefined) closeSoon(ws);
  await closed;
  if (broken && ended.exit === undefined) throw broken instanceof SkiffError ? broken : new SkiffError('error', broken.message);
  return ended;
}
