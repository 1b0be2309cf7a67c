/**
 * The agent's side of tunnel sessions (api/tunnel.ts): each stream the server opens over
 * the event socket is a TCP connection to a port on this device (its host, or a service
 * container's address) or a process (a shell or a command in a service's container, or on the
 * host when the device allows it). The stream is answered 200 once the connection is made or the
 * process started, or refused with a status and one line; its end, or its reset, ends what it
 * opened (the TCP connection is closed, the process and its children are killed).
 *
 * Flow control is the streams' own: output is piped into the multiplexed stream and input out of it,
 * so a slow reader on either end stops the reads on the other, and the agent holds at most a
 * window's worth of a session's bytes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Transform, Writable, type TransformCallback } from 'node:stream';
import { EXEC_FRAME, MAX_EXEC_FRAME_BYTES, type ExecControl, type ExecFrame, type TunnelOpen } from '../../api/tunnel.js';
import { refuse, type MuxStream } from '../../tunnel/mux.js';
import { encodeControl, FrameDecoder, parseControl } from '../../tunnel/frames.js';
import { EngineError, type ContainerSummary, type EngineClient, type ExecHandle } from '../../docker/engine-lite.js';
import type { Agent } from '../agent.js';
import { LABEL } from '../engine-state.js';

export interface TunnelContext {
  docker: EngineClient;
  /** Whose containers are the device's services (`agent.ctx.uuid` labels them). */
  agent: Pick<Agent, 'ctx'>;
  /** Whether a shell or command on the device host is allowed (the agent's --host-shell; default: development mode). */
  hostShell: boolean;
  /** Host address TCP sessions without a service connect to (default 127.0.0.1). */
  hostAddress?: string;
  log: (message: string, isError?: boolean) => void;
}

/** How long a TCP connect on the device may take (ms) before the session is refused. */
const CONNECT_TIMEOUT_MS = 5000;
/** After SIGHUP and SIGTERM, how long a session's processes have before SIGKILL (ms). */
const KILL_GRACE_MS = 2000;
/** How long the engine may take to record an exec's exit status after its output ended (ms). */
const EXIT_STATUS_WAIT_MS = 10_000;
/** The login shell when no command is given: bash where the image has it, else sh. */
const LOGIN_SHELL = 'command -v bash >/dev/null 2>&1 && exec bash -l || exec sh -l';

type ExecOpen = Extract<TunnelOpen, { kind: 'exec' }>;
type TcpOpen = Extract<TunnelOpen, { kind: 'tcp' }>;

/** A refusal: the status and one line for the user (api/tunnel.ts TunnelOpen's answers). */
class Refusal extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The handler for serveDeviceMux: dispatches by kind. */
export function tunnelHandler(ctx: TunnelContext): (open: TunnelOpen, stream: MuxStream) => void {
  return (open, stream) => {
    const run = open.kind === 'tcp' ? openTcp(ctx, open, stream) : open.service === undefined ? openHostExec(ctx, open, stream) : openContainerExec(ctx, open, open.service, stream);
    void run.catch((err: Error) => {
      if (stream.headersSent) {
        ctx.log(`tunnel: a session failed: ${err.message}`, true);
        stream.close(0x2 /* INTERNAL_ERROR */);
        return;
      }
      refuse(stream, err instanceof Refusal ? err.status : 502, err.message);
    });
  };
}

/**
 * The running container of `service` among this device's (its agent's label), or a 404 refusal
 * naming the services there are.
 */
async function serviceContainer(ctx: TunnelContext, service: string): Promise<ContainerSummary> {
  const all = await ctx.docker.listContainers({ all: true, filters: { label: [`${LABEL.agent}=${ctx.agent.ctx.uuid}`] } }).catch((err: Error) => {
    throw new Refusal(502, `cannot list the device's services: ${err.message}`);
  });
  const named = all.filter((c) => c.Labels[LABEL.serviceName] === service);
  const running = named.find((c) => c.State === 'running');
  if (running) return running;
  if (named[0]) throw new Refusal(404, `service '${service}' is not running (${named[0].State})`);
  const names = [...new Set(all.map((c) => c.Labels[LABEL.serviceName]).filter((n): n is string => Boolean(n)))].sort();
  throw new Refusal(404, names.length === 0 ? `the device runs no service '${service}' (it runs no services)` : `the device runs no service '${service}'; services: ${names.join(', ')}`);
}

/** The address a TCP session connects to: the host, or the service's container address. */
async function tcpTarget(ctx: TunnelContext, open: TcpOpen): Promise<{ host: string; port: number }> {
  if (open.service === undefined) return { host: ctx.hostAddress ?? '127.0.0.1', port: open.port };
  const container = await serviceContainer(ctx, open.service);
  const detail = await ctx.docker.getContainer(container.Id).inspect();
  // A host-network service listens on the host's own addresses.
  if (detail.HostConfig?.NetworkMode === 'host') return { host: '127.0.0.1', port: open.port };
  const addresses = Object.values(detail.NetworkSettings?.Networks ?? {}).map((n) => n.IPAddress).filter((a): a is string => Boolean(a));
  const host = addresses[0] ?? detail.NetworkSettings?.IPAddress;
  if (!host) throw new Refusal(502, `service '${open.service}' has no address on a network (network mode ${detail.HostConfig?.NetworkMode ?? 'none'})`);
  return { host, port: open.port };
}

async function openTcp(ctx: TunnelContext, open: TcpOpen, stream: MuxStream): Promise<void> {
  const target = await tcpTarget(ctx, open);
  if (stream.destroyed) return;
  const socket = net.connect({ host: target.host, port: target.port, noDelay: true });
  socket.setTimeout(CONNECT_TIMEOUT_MS);
  const where = open.service === undefined ? `port ${target.port} of the device` : `port ${target.port} of service '${open.service}'`;
  socket.once('timeout', () => socket.destroy(new Error(`no answer from ${where} within ${CONNECT_TIMEOUT_MS / 1000} s`)));
  socket.once('error', (err: NodeJS.ErrnoException) => {
    if (!stream.headersSent) {
      refuse(stream, 502, err.code === 'ECONNREFUSED' ? `nothing listens on ${where}` : `cannot connect to ${where}: ${err.message}`);
      return;
    }
    stream.close(0x2 /* INTERNAL_ERROR: the TCP connection broke */);
  });
  socket.once('connect', () => {
    socket.setTimeout(0);
    if (stream.destroyed) {
      socket.destroy();
      return;
    }
    stream.respond({ ':status': 200 });
    // Half-closes pass through both ways; a reset of the stream closes the socket at once.
    // (allowHalfOpen: the device end's FIN must not end our side too.)
    socket.allowHalfOpen = true;
    stream.pipe(socket);
    socket.pipe(stream);
    stream.once('close', () => socket.destroy());
    // A clean close needs nothing more: the pipe ends the stream once its queued bytes are sent.
    // (Closing the stream here reset it with bytes still queued, and they were lost.)
    socket.once('close', (hadError) => {
      if (hadError && !stream.closed) stream.close(0x2 /* INTERNAL_ERROR */);
    });
  });
  stream.once('close', () => {
    if (socket.connecting) socket.destroy();
  });
}

/** What a session's input side does with the CLI's frames. */
interface ProcessInput {
  /** Writes stdin bytes; calls `done` once they may be followed by more (the process took them). */
  stdin(data: Buffer, done: () => void): void;
  /** The CLI's stdin ended. */
  end(): void;
  /** A control message; the frames after it wait until its promise settles (a resize lands before the keys typed after it). */
  control(message: ExecControl): Promise<void> | void;
}

/**
 * Reads the CLI's frames from `stream` into `input`, one at a time: the next frame is read only
 * once the process took the last one, so a fast sender waits for a slow reader.
 */
function readInput(stream: MuxStream, input: ProcessInput, onProtocolError: (err: Error) => void): void {
  const decoder = new FrameDecoder();
  const sink = new Writable({
    objectMode: true,
    highWaterMark: 1,
    write(frame: ExecFrame, _enc, done) {
      if (frame.type === EXEC_FRAME.stdin) {
        input.stdin(frame.payload, () => done());
        return;
      }
      const message = frame.type === EXEC_FRAME.control ? parseControl(frame.payload) : undefined;
      if (!message) {
        done();
        return;
      }
      void Promise.resolve(input.control(message)).catch(() => undefined).then(() => done());
    },
    final(done) {
      input.end();
      done();
    },
  });
  decoder.once('error', onProtocolError);
  stream.pipe(decoder).pipe(sink);
}

/** Writes to `target` and calls `done` once it has room for more (or it is gone). */
function writeWithRoom(target: NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean }, data: Buffer, done: () => void): void {
  if (target.destroyed || target.writableEnded) {
    done();
    return;
  }
  if (target.write(data)) {
    done();
    return;
  }
  const go = (): void => {
    target.removeListener('drain', go);
    target.removeListener('close', go);
    done();
  };
  target.once('drain', go);
  target.once('close', go);
}

/** An exec frame's 8-byte header (api/tunnel.ts); the payload follows as its own buffer, uncopied. */
function frameHeader(type: number, length: number): Buffer {
  const header = Buffer.alloc(8);
  header[0] = type;
  header.writeUInt32BE(length, 4);
  return header;
}

/**
 * Process output → exec frames of one type (a TTY's merged output, or a host process's pipe).
 * `whole`: each frame is one chunk, header and payload together — needed where two framers feed
 * one stream (a host process's stdout and stderr): a pipe paused between a header and its payload
 * let the other framer's frame in between, and the CLI read output bytes as a header. A single
 * source keeps the payload uncopied.
 */
function framesOf(type: typeof EXEC_FRAME.stdout | typeof EXEC_FRAME.stderr, whole = false): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      for (let at = 0; at < chunk.length; at += MAX_EXEC_FRAME_BYTES) {
        const part = chunk.subarray(at, at + MAX_EXEC_FRAME_BYTES);
        if (whole) {
          this.push(Buffer.concat([frameHeader(type, part.length), part]));
          continue;
        }
        this.push(frameHeader(type, part.length));
        this.push(part);
      }
      done();
    },
  });
}

/**
 * The engine's multiplexed exec output (no TTY) → our exec frames. The header format is the
 * same, so the bytes pass through as they come, without waiting for or copying a whole frame;
 * only the headers are new: a frame over our size limit is cut in parts, and the engine's own
 * error stream (type 3) becomes stderr. Empty frames are dropped.
 */
export function engineFrames(): Transform {
  let header: Buffer = Buffer.alloc(0);
  let type: number = EXEC_FRAME.stdout;
  /** Bytes of the engine's current frame not yet passed on, and of our current part of it. */
  let frameLeft = 0;
  let partLeft = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      let at = 0;
      while (at < chunk.length) {
        if (partLeft === 0 && frameLeft > 0) {
          partLeft = Math.min(frameLeft, MAX_EXEC_FRAME_BYTES);
          this.push(frameHeader(type, partLeft));
        }
        if (partLeft > 0) {
          const n = Math.min(partLeft, chunk.length - at);
          this.push(chunk.subarray(at, at + n));
          at += n;
          partLeft -= n;
          frameLeft -= n;
          continue;
        }
        const take = Math.min(8 - header.length, chunk.length - at);
        header = header.length === 0 && take === 8 ? chunk.subarray(at, at + 8) : Buffer.concat([header, chunk.subarray(at, at + take)]);
        at += take;
        if (header.length < 8) break;
        type = header[0] === EXEC_FRAME.stderr || header[0] === 3 ? EXEC_FRAME.stderr : EXEC_FRAME.stdout;
        frameLeft = header.readUInt32BE(4);
        header = Buffer.alloc(0);
      }
      done();
    },
  });
}

/** One process of /proc: its parent, its process group, and its terminal's foreground group (0 without a terminal). */
interface ProcEntry {
  pid: number;
  ppid: number;
  pgrp: number;
  tpgid: number;
}

function readProc(pid: number): ProcEntry | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state ppid pgrp session tty_nr tpgid …
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { pid, ppid: Number(fields[1]), pgrp: Number(fields[2]), tpgid: Math.max(0, Number(fields[5])) };
  } catch {
    return undefined;
  }
}

/** `root` and all its descendants alive now (from /proc), parents first. */
function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const entry = readProc(Number(name));
    if (!entry) continue;
    const list = children.get(entry.ppid) ?? [];
    list.push(entry.pid);
    children.set(entry.ppid, list);
  }
  if (!readProc(root)) return [];
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/**
 * Ends `root` and every process below it: SIGHUP and SIGTERM (a shell's session ended, as a
 * closed terminal says it), then SIGKILL to whatever is left after {@link KILL_GRACE_MS}. Children
 * started meanwhile are found again before the SIGKILL.
 */
async function killProcessTree(root: number, graceMs = KILL_GRACE_MS): Promise<void> {
  const first = processTree(root);
  if (first.length === 0) return;
  signalAll(first, 'SIGHUP');
  signalAll(first, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    if (first.every((pid) => !readProc(pid))) return;
  }
  signalAll([...new Set([...processTree(root), ...first.filter((pid) => readProc(pid))])], 'SIGKILL');
}

/**
 * A signal from the CLI, where a terminal's Ctrl-C would send it: on a terminal, to its foreground
 * process group (the command the shell runs now, not the shell); else to the process's group when
 * it leads one (an exec'd process does), else to the process itself.
 */
function signalProcess(pid: number, signal: NodeJS.Signals): void {
  const entry = readProc(pid);
  if (!entry) return;
  try {
    process.kill(entry.tpgid > 0 ? -entry.tpgid : entry.pgrp === pid ? -pid : pid, signal);
  } catch {
    // gone meanwhile
  }
}

/**
 * Wires a started process to its session: output (already as exec frames) is piped into the
 * stream, its end followed by the exit control and the stream's end; the stream's close before
 * that kills the process.
 */
function runSession(stream: MuxStream, output: NodeJS.ReadableStream, exitCode: () => Promise<number | undefined>, kill: () => Promise<void>, log: TunnelContext['log']): void {
  let finished = false;
  let outputEnded = false;
  output.pipe(stream, { end: false });
  const finish = (): void => {
    if (outputEnded) return;
    outputEnded = true;
    void exitCode().then((code) => {
      finished = true;
      if (stream.destroyed || stream.writableEnded) return;
      stream.end(encodeControl(code === undefined ? { type: 'error', message: 'the engine did not report how the command ended' } : { type: 'exit', code }));
    }, (err: Error) => {
      log(`tunnel: reading an exit status failed: ${err.message}`, true);
      if (!stream.destroyed && !stream.writableEnded) stream.end(encodeControl({ type: 'error', message: `cannot read how the command ended: ${err.message}` }));
    });
  };
  output.once('end', finish);
  stream.once('close', () => {
    if (finished) return;
    finished = true;
    void kill().catch((err: Error) => log(`tunnel: ending a session's process failed: ${err.message}`, true));
  });
}

async function openContainerExec(ctx: TunnelContext, open: ExecOpen, service: string, stream: MuxStream): Promise<void> {
  const container = await serviceContainer(ctx, service);
  let exec: ExecHandle;
  try {
    exec = await ctx.docker.getContainer(container.Id).exec({
      Cmd: ['sh', '-c', open.command ?? LOGIN_SHELL],
      AttachStdin: true,
      AttachStdout: true,
      AttachStderr: true,
      Tty: open.tty,
      Env: open.tty ? [`TERM=${open.term ?? 'xterm'}`] : [],
    });
  } catch (err) {
    if (err instanceof EngineError && (err.statusCode === 409 || err.statusCode === 404)) throw new Refusal(404, `service '${service}' is not running`);
    throw new Refusal(502, `cannot start the command in service '${service}': ${(err as Error).message}`);
  }
  const socket = await exec.start({ tty: open.tty }).catch((err: Error) => {
    throw new Refusal(502, `cannot start the command in service '${service}': ${err.message}`);
  });
  const kill = async (): Promise<void> => {
    const info = await exec.inspect();
    // A process that ended keeps its Pid in the inspect answer: never signal a number reused since.
    if (info.Running && info.Pid > 0) await killProcessTree(info.Pid);
    socket.destroy();
  };
  if (stream.destroyed) {
    await kill();
    return;
  }
  socket.on('error', (err) => ctx.log(`tunnel: an exec connection failed: ${err.message}`, true));
  const resize = (cols: number, rows: number): Promise<void> => exec.resize({ h: rows, w: cols }).catch(() => undefined);
  if (open.tty && open.cols !== undefined && open.rows !== undefined) await resize(open.cols, open.rows);
  stream.respond({ ':status': 200 });

  const exitCode = async (): Promise<number | undefined> => {
    const deadline = Date.now() + EXIT_STATUS_WAIT_MS;
    for (;;) {
      const info = await exec.inspect();
      if (!info.Running && info.ExitCode !== null) return info.ExitCode;
      if (Date.now() > deadline) return undefined;
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const frames = open.tty ? framesOf(EXEC_FRAME.stdout) : engineFrames();
  socket.pipe(frames);
  // A connection that broke (rather than ended) ends the output all the same: the exit status says the rest.
  socket.once('close', () => {
    if (!frames.writableEnded) frames.end();
  });
  runSession(stream, frames, exitCode, kill, ctx.log);
  readInput(stream, {
    stdin: (data, done) => writeWithRoom(socket, data, done),
    // Without a TTY the engine passes a half-close on as the end of the process's stdin and keeps
    // its output coming. With one it would close the output at once (the process kept running),
    // so a terminal session's stdin never ends: the process ends it, or the session's close does.
    end: () => {
      if (!open.tty && !socket.destroyed) socket.end();
    },
    control: async (message) => {
      if (message.type === 'resize' && open.tty) await resize(message.cols, message.rows);
      if (message.type === 'signal') {
        const info = await exec.inspect();
        if (info.Running && info.Pid > 0) signalProcess(info.Pid, message.signal);
      }
    },
  }, (err) => {
    ctx.log(`tunnel: a session broke the frame protocol: ${err.message}`, true);
    stream.close(0x1 /* PROTOCOL_ERROR */);
  });
}

/** Whether an executable `name` is on PATH. */
function onPath(name: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin').split(':').some((dir) => {
    try {
      accessSync(path.join(dir || '.', name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** The terminal device of a process (its stdin), e.g. /dev/pts/3. */
function terminalOf(pid: number): string | undefined {
  try {
    const target = readlinkSync(`/proc/${pid}/fd/0`);
    return target.startsWith('/dev/pts/') ? target : undefined;
  } catch {
    return undefined;
  }
}

async function openHostExec(ctx: TunnelContext, open: ExecOpen, stream: MuxStream): Promise<void> {
  if (!ctx.hostShell) throw new Refusal(403, 'this device does not allow a host shell (start the agent with --host-shell)');
  const shell = open.command === undefined ? 'exec sh -l' : `exec sh -c ${shellQuote(open.command)}`;
  let child: ChildProcess;
  // A login's environment, not the agent's (which may name its credentials' places).
  const user = os.userInfo();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: user.homedir, USER: user.username, LOGNAME: user.username, SHELL: '/bin/sh',
    ...(process.env.LANG ? { LANG: process.env.LANG } : {}),
    ...(open.tty ? { TERM: open.term ?? 'xterm' } : {}),
  };
  if (open.tty) {
    // Node has no pseudo-terminal of its own: util-linux's script makes one and runs the shell on it.
    if (!onPath('script')) throw new Refusal(502, "this device has no 'script' (util-linux), which a host terminal needs; run a command without a terminal instead");
    const size = open.cols !== undefined && open.rows !== undefined ? `stty rows ${open.rows} cols ${open.cols} 2>/dev/null; ` : '';
    child = spawn('script', ['-qfec', `${size}${shell}`, '/dev/null'], { stdio: 'pipe', detached: true, env, cwd: user.homedir });
  } else {
    child = spawn('sh', ['-c', shell], { stdio: 'pipe', detached: true, env, cwd: user.homedir });
  }
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err) => reject(new Refusal(502, `cannot start the host shell: ${err.message}`)));
  });
  const pid = child.pid as number;
  let status: number | undefined;
  const exited = new Promise<number>((resolve) => child.once('exit', (code, signal) => {
    status = code ?? 128 + (signal ? os.constants.signals[signal] : 0);
    resolve(status);
  }));
  const kill = async (): Promise<void> => {
    if (status === undefined) await killProcessTree(pid);
  };
  if (stream.destroyed) {
    await kill();
    return;
  }
  stream.respond({ ':status': 200 });
  const stdout = child.stdout as NodeJS.ReadableStream;
  const stderr = child.stderr as NodeJS.ReadableStream;
  const stdin = child.stdin as NodeJS.WritableStream & { destroyed: boolean; writableEnded: boolean };
  (child.stdin as Writable).on('error', () => undefined); // EPIPE once the process ended
  // Both pipes into one stream: a merged reader that ends when both did.
  const merged = new Transform({ transform: (chunk: Buffer, _enc, done: TransformCallback) => done(null, chunk) });
  let openPipes = 2;
  const oneEnded = (): void => {
    if (--openPipes === 0) merged.end();
  };
  // Counted when each framer's last frame went into `merged`, not when its pipe's did.
  for (const [pipe, type] of [[stdout, EXEC_FRAME.stdout], [stderr, EXEC_FRAME.stderr]] as const) pipe.pipe(framesOf(type, true)).once('end', oneEnded).pipe(merged, { end: false });
  runSession(stream, merged, () => exited, kill, ctx.log);
  // The shell on script's terminal: script's child, found once it started.
  const terminalShell = (): number | undefined => processTree(pid).find((p) => p !== pid && terminalOf(p) !== undefined);
  readInput(stream, {
    stdin: (data, done) => writeWithRoom(stdin, data, done),
    // script passes its stdin's end on to the terminal as an end of input; a pipe just closes.
    end: () => {
      if (!stdin.destroyed) stdin.end();
    },
    control: async (message) => {
      if (message.type === 'resize' && open.tty) {
        const shellPid = terminalShell();
        const tty = shellPid === undefined ? undefined : terminalOf(shellPid);
        // Setting the size on the terminal also sends SIGWINCH to its foreground programs.
        if (tty) {
          await new Promise<void>((resolve) => {
            spawn('stty', ['-F', tty, 'rows', String(message.rows), 'cols', String(message.cols)], { stdio: 'ignore' }).once('error', () => resolve()).once('exit', () => resolve());
          });
        }
      }
      if (message.type === 'signal') signalProcess(open.tty ? terminalShell() ?? pid : pid, message.signal);
    },
  }, (err) => {
    ctx.log(`tunnel: a session broke the frame protocol: ${err.message}`, true);
    stream.close(0x1 /* PROTOCOL_ERROR */);
  });
}
