/**
 * `skiff device tunnel`: local TCP ports forwarded to a device. A cloud device (its uuid) is
 * reached through the server: each accepted local connection is one WebSocket session on
 * `GET /devices/:uuid/tunnel` (api/tunnel.ts), so many run at once and one that fails leaves the
 * others and the listeners up. A LAN device (an address) is reached directly, address:remotePort.
 */
import net from 'node:net';
import type { WebSocket } from 'ws';
import { EOF_MESSAGE, TUNNEL_CLOSE } from '../api/tunnel.js';
import { SkiffError } from '../errors/errors.js';
import type { CloudClient } from './client.js';
import { closeError, closeSoon } from './exec.js';
import { localLabel, remoteLabel, type PortSpec } from './port-spec.js';

/** Above this many bytes queued on a session's WebSocket, stop reading its local socket until it drains. */
const SEND_HIGH_WATER = 1024 * 1024;

/** Where the tunnel goes: a cloud device through the server, or a LAN device's address. */
export type TunnelTarget = { kind: 'cloud'; client: CloudClient; uuid: string } | { kind: 'lan'; host: string };

/**
 * What happens, in order, for the command to show (and, under --json, print as NDJSON).
 * `local` is where skiff listens (`127.0.0.1:8080`), `remote` what it reaches (`80`, `web:80`),
 * `client` the local peer (`127.0.0.1:53422`).
 */
export type TunnelEvent =
  | { event: 'listening'; local: string; device: string; remote: string }
  | { event: 'connection'; local: string; remote: string; client: string }
  | { event: 'closed'; local: string; remote: string; client: string; bytesIn: number; bytesOut: number }
  /** The device (or the server) refused this connection; the tunnel stays up. */
  | { event: 'refused'; local: string; remote: string; client: string; message: string }
  /** A session that was running ended abnormally (the device's connection dropped…); the tunnel stays up. */
  | { event: 'dropped'; local: string; remote: string; client: string; message: string };

export interface TunnelOptions {
  target: TunnelTarget;
  ports: PortSpec[];
  /** Aborting it (Ctrl-C) closes the listeners and every session; {@link runTunnel} then resolves. */
  signal: AbortSignal;
  onEvent: (event: TunnelEvent) => void;
}

/** Totals once the tunnel stopped. */
export interface TunnelSummary {
  device: string;
  ports: Array<{ local: string; remote: string }>;
  connections: number;
  refused: number;
  dropped: number;
}

/**
 * Checks the device once (a cloud device must exist and be online), listens on every port, and
 * forwards until `signal` aborts.
 *
 * @throws SkiffError notFound (no such device), conflict (device offline, or a local port in use),
 *   error (no permission to listen), serverUnreachable; all before the first connection
 */
export async function runTunnel(o: TunnelOptions): Promise<TunnelSummary> {
  const device = o.target.kind === 'cloud' ? o.target.uuid.slice(0, 7) : o.target.host;
  if (o.target.kind === 'cloud') {
    const found = await o.target.client.device(o.target.uuid);
    if (found.status !== 'online') throw new SkiffError('conflict', `device ${device} is not connected to the server (offline?)`, { hint: "'skiff device info' shows when it was last seen" });
  }
  const summary: TunnelSummary = { device, ports: o.ports.map((p) => ({ local: localLabel(p), remote: remoteLabel(p) })), connections: 0, refused: 0, dropped: 0 };
  const servers: net.Server[] = [];
  const live = new Set<() => void>();
  try {
    for (const spec of o.ports) servers.push(await listen(spec));
    for (const [i, spec] of o.ports.entries()) {
      servers[i]?.on('connection', (socket) => {
        summary.connections++;
        const stop = forward(o.target, spec, socket, (event) => {
          if (event.event === 'refused') summary.refused++;
          if (event.event === 'dropped') summary.dropped++;
          o.onEvent(event);
        });
        live.add(stop);
        socket.once('close', () => live.delete(stop));
      });
      o.onEvent({ event: 'listening', local: localLabel(spec), device, remote: remoteLabel(spec) });
    }
    if (!o.signal.aborted) await new Promise<void>((resolve) => o.signal.addEventListener('abort', () => resolve(), { once: true }));
  } finally {
    for (const server of servers) server.close();
    for (const stop of live) stop();
  }
  return summary;
}

/** A listening server for one spec; a port in use or not ours to take is one line naming it. */
function listen(spec: PortSpec): Promise<net.Server> {
  // allowHalfOpen: the local client's FIN is forwarded as the EOF message; the device may still answer.
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = localLabel(spec);
      if (err.code === 'EADDRINUSE') reject(new SkiffError('conflict', `${where} is already in use`, { hint: `pick another local port: -p <port>:${remoteLabel(spec)}` }));
      else if (err.code === 'EACCES') reject(new SkiffError('error', `no permission to listen on ${where}`, { hint: 'ports below 1024 need root: pick a higher local port' }));
      else if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') reject(new SkiffError('usage', `${spec.localAddress} is not an address of this machine`));
      else reject(new SkiffError('error', `cannot listen on ${where}: ${err.message}`));
    });
    server.listen({ host: spec.localAddress, port: spec.localPort }, () => resolve(server));
  });
}

/** One local connection to its remote end; returns a function that ends it at once. */
function forward(target: TunnelTarget, spec: PortSpec, socket: net.Socket, emit: (e: TunnelEvent) => void): () => void {
  const base = { local: localLabel(spec), remote: remoteLabel(spec), client: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}` };
  socket.on('error', () => undefined);
  if (target.kind === 'lan') return forwardLan(target.host, spec, socket, base, emit);
  let ws: WebSocket | undefined;
  let stopped = false;
  const counts = { bytesIn: 0, bytesOut: 0 };
  void target.client.websocket('deviceTunnel', { params: { uuid: target.uuid }, query: { port: String(spec.remotePort), ...(spec.service ? { service: spec.service } : {}) } }).then(
    (opened) => {
      if (stopped || socket.destroyed) {
        opened.close(TUNNEL_CLOSE.done);
        return;
      }
      ws = opened;
      emit({ event: 'connection', ...base });
      // A session we ended (Ctrl-C) did not drop, whatever code its close came with.
      relay(opened, socket, counts, (message) => {
        if (!stopped) emit({ event: 'dropped', ...base, message: `port ${base.remote}: ${message}` });
      }, () => emit({ event: 'closed', ...base, ...counts }));
      // websocket() hands it over paused: a service that speaks first loses nothing.
      opened.resume();
    },
    (err: unknown) => {
      // A reset, as a refused connection looks: not a FIN, which a client could take for a complete answer.
      socket.resetAndDestroy();
      const message = err instanceof Error ? err.message : String(err);
      emit({ event: 'refused', ...base, message: `port ${base.remote}: ${message}` });
    },
  );
  return () => {
    stopped = true;
    // A socket paused for a slow local reader would not read the server's close frame either: the
    // handshake would wait out closeSoon's 2 s and Ctrl-C with it.
    if (ws) {
      ws.resume();
      closeSoon(ws);
    }
    socket.destroy();
  };
}

/**
 * The bytes both ways between a local socket and its session, with back-pressure each way (a
 * local reader that stalls pauses the WebSocket; a WebSocket that does not drain pauses the
 * socket) and half-closes mapped (socket 'end' → EOF message; EOF message → socket.end()).
 */
function relay(ws: WebSocket, socket: net.Socket, counts: { bytesIn: number; bytesOut: number }, onDropped: (message: string) => void, onClosed: () => void): void {
  ws.on('error', () => undefined);
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary) {
      if (data.toString() === EOF_MESSAGE && !socket.writableEnded) socket.end();
      return;
    }
    counts.bytesOut += data.length;
    if (socket.writableEnded || socket.destroyed) return;
    if (!socket.write(data) && !ws.isPaused) {
      ws.pause();
      socket.once('drain', () => ws.resume());
    }
  });
  const afterSend = (): void => {
    if (ws.bufferedAmount <= SEND_HIGH_WATER && socket.isPaused() && !socket.destroyed) socket.resume();
  };
  socket.on('data', (chunk: Buffer) => {
    if (ws.readyState !== ws.OPEN) return;
    counts.bytesIn += chunk.length;
    ws.send(chunk, afterSend);
    if (ws.bufferedAmount > SEND_HIGH_WATER) socket.pause();
  });
  socket.on('end', () => {
    if (ws.readyState === ws.OPEN) ws.send(EOF_MESSAGE);
  });
  // The local side went away entirely (reset, or both halves closed): the session is over.
  socket.on('close', () => closeSoon(ws));
  ws.once('close', (code: number) => {
    if (code === TUNNEL_CLOSE.done || code === 1005) {
      // Anything still queued for the local peer goes out first, then our FIN; the socket is
      // gone once the peer's FIN comes too (what it still sends has nowhere to go: dropped).
      if (!socket.writableEnded) socket.end();
      socket.resume();
    } else {
      onDropped(closeError('the device', code).message);
      socket.resetAndDestroy();
    }
    onClosed();
  });
  socket.resume();
}

/** The LAN form: a direct TCP connection to the device's address. */
function forwardLan(host: string, spec: PortSpec, socket: net.Socket, base: { local: string; remote: string; client: string }, emit: (e: TunnelEvent) => void): () => void {
  const remote = net.connect({ host, port: spec.remotePort, allowHalfOpen: true });
  let connected = false;
  let bytesIn = 0;
  let bytesOut = 0;
  remote.once('connect', () => {
    connected = true;
    emit({ event: 'connection', ...base });
    socket.on('data', (c: Buffer) => (bytesIn += c.length));
    remote.on('data', (c: Buffer) => (bytesOut += c.length));
    // pipe: back-pressure both ways, and each side's end becomes the other's FIN.
    socket.pipe(remote);
    remote.pipe(socket);
    socket.resume();
  });
  remote.on('error', (err: NodeJS.ErrnoException) => {
    if (!connected) {
      const why = err.code === 'ECONNREFUSED' ? `nothing listens on port ${spec.remotePort} of ${host}` : `${host} cannot be reached (${err.code ?? err.message})`;
      emit({ event: 'refused', ...base, message: `port ${base.remote}: ${why}` });
    } else {
      emit({ event: 'dropped', ...base, message: `the connection to ${host} failed (${err.code ?? err.message})` });
    }
    socket.resetAndDestroy();
  });
  remote.once('close', () => {
    if (connected) emit({ event: 'closed', ...base, bytesIn, bytesOut });
    if (!socket.writableEnded) socket.end();
  });
  socket.once('close', () => remote.destroy());
  return () => {
    remote.destroy();
    socket.destroy();
  };
}
