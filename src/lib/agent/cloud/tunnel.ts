/**
 * The agent's side of tunnel sessions (api/tunnel.ts): each HTTP/2 stream the server opens over
 * the event socket is a TCP connection to a port on this device (its host, or a service
 * container's address) or a process (a shell or a command in a service's container, or on the
 * host when the device allows it). The stream is answered 200 once the connection is made or the
 * process started, or refused with a status and one line; its end, or its reset, ends what it
 * opened (the TCP connection is closed, the process and its children are killed).
 */
import net from 'node:net';
import type { ServerHttp2Stream } from 'node:http2';
import type { TunnelOpen } from '../../api/tunnel.js';
import { refuse } from '../../tunnel/mux.js';
import type { EngineClient } from '../../docker/engine-lite.js';
import type { Agent } from '../agent.js';

export interface TunnelContext {
  docker: EngineClient;
  agent: Agent;
  /** Whether a shell or command on the device host is allowed (the agent's --host-shell; default: development mode). */
  hostShell: boolean;
  /** Host address TCP sessions without a service connect to (default 127.0.0.1). */
  hostAddress?: string;
  log: (message: string, isError?: boolean) => void;
}

/** How long a TCP connect on the device may take (ms) before the session is refused. */
const CONNECT_TIMEOUT_MS = 5000;

/** The handler for serveDeviceMux: dispatches by kind. */
export function tunnelHandler(ctx: TunnelContext): (open: TunnelOpen, stream: ServerHttp2Stream) => void {
  return (open, stream) => {
    const run = open.kind === 'tcp' ? openTcp(ctx, open, stream) : openExec(ctx, open, stream);
    void run.catch((err: Error) => {
      refuse(stream, 502, err.message);
      stream.destroy();
    });
  };
}

/** The address a TCP session connects to: the host, or the service's container address. */
async function tcpTarget(ctx: TunnelContext, open: Extract<TunnelOpen, { kind: 'tcp' }>): Promise<{ host: string; port: number } | { status: number; message: string }> {
  if (open.service === undefined) return { host: ctx.hostAddress ?? '127.0.0.1', port: open.port };
  return { status: 501, message: 'tunnels to a service container are not built yet' };
}

async function openTcp(ctx: TunnelContext, open: Extract<TunnelOpen, { kind: 'tcp' }>, stream: ServerHttp2Stream): Promise<void> {
  const target = await tcpTarget(ctx, open);
  if ('status' in target) {
    refuse(stream, target.status, target.message);
    return;
  }
  const socket = net.connect({ host: target.host, port: target.port, noDelay: true });
  socket.setTimeout(CONNECT_TIMEOUT_MS);
  const where = open.service === undefined ? `port ${target.port}` : `port ${target.port} of service ${open.service}`;
  socket.once('timeout', () => socket.destroy(new Error(`no answer from ${where} within ${CONNECT_TIMEOUT_MS / 1000} s`)));
  socket.once('error', (err: NodeJS.ErrnoException) => {
    if (!stream.headersSent) {
      refuse(stream, 502, err.code === 'ECONNREFUSED' ? `nothing listens on ${where} of the device` : `cannot connect to ${where} of the device: ${err.message}`);
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
    socket.once('close', () => {
      if (!stream.closed) stream.close();
    });
  });
  stream.once('close', () => {
    if (socket.connecting) socket.destroy();
  });
}

async function openExec(_ctx: TunnelContext, _open: Extract<TunnelOpen, { kind: 'exec' }>, stream: ServerHttp2Stream): Promise<void> {
  refuse(stream, 501, 'exec sessions are not built yet');
}
