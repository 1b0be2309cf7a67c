/**
 * Tunnel routes (issue 11; api/tunnel.ts): the CLI's sessions to a device (`/devices/:uuid/tunnel`,
 * `/devices/:uuid/exec`, WebSockets relayed to the device's multiplexer, on this replica or the one
 * holding the device's socket), and the session log (`/devices/:uuid/sessions`).
 *
 * Everything a session needs is settled before the upgrade (preHandler): the caller, their device,
 * the query, where the device is, the device's own yes (its multiplexed stream answered 200, or the
 * holding replica's upgrade) and the session's row. So every refusal is an HTTP answer with an
 * ApiError body, and a socket that opens is a session that runs.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import WebSocket, { type RawData } from 'ws';
import { ENDPOINTS } from '../../../api/endpoints.js';
import * as R from '../../../api/resources.js';
import { DeviceSession, DeviceSessionsQuery, EOF_MESSAGE, ExecQuery, TUNNEL_CLOSE, TunnelQuery, type TunnelOpen } from '../../../api/tunnel.js';
import { SkiffError } from '../../../errors/errors.js';
import { MAX_STREAMS_PER_DEVICE, MAX_TUNNEL_MESSAGE_BYTES, RESET_CODE, TunnelRefused, type MuxStream } from '../../../tunnel/mux.js';
import { ExecExitWatcher } from '../../../tunnel/exec-exit.js';
import type { DeviceChannels } from '../../events/channel.js';
import { badInput, conflict, type ServiceContext } from '../../services/context.js';
import { deviceOf } from '../../services/devices.js';
import { answerLocates, locateDevice } from '../../services/tunnel-locate.js';
import { closeAbandonedSessions, listSessions, openSessionReplicas, liveReplicas, startSession, type SessionRecorder } from '../../services/tunnel-sessions.js';
import type { RouteKit, SkiffApp } from '../app.js';

const UuidParams = Type.Object({ uuid: Type.String({ minLength: 1, maxLength: 64 }) });

/** The header a replica adds when it relays a session to the replica holding the device: never relayed again. */
export const RELAYED_HEADER = 'x-skiff-relayed';

/**
 * The client's address as the relaying replica saw it. Anyone can send it, so the log keeps the
 * sender's own address too: `<claimed> via <relaying replica>`.
 */
export const CLIENT_ADDRESS_HEADER = 'x-skiff-client-address';

/** The session's client address for its log row (see {@link CLIENT_ADDRESS_HEADER}). */
export function clientAddressOf(ip: string, relayed: boolean, claimed: string | string[] | undefined): string {
  if (!relayed || typeof claimed !== 'string' || !/^[0-9a-fA-F:.]{2,45}$/.test(claimed)) return ip;
  return `${claimed} via ${ip}`;
}

/** Unsent bytes on a socket above which its source is paused (and resumed once below a quarter of it). */
export const SESSION_HIGH_WATER_BYTES = 512 * 1024;
/** The CLI's socket is pinged this often (ms); no pong before the next ping ends the session. */
export const SESSION_PING_MS = 30_000;
/** How long the holding replica has to answer a relayed upgrade (ms): it waits on the device's own answer. */
const RELAY_OPEN_TIMEOUT_MS = 20_000;
/** How often open rows of dead replicas are closed on PostgreSQL (ms). */
const ABANDONED_SWEEP_MS = 10 * 60_000;

/** Which route: `/tunnel` or `/exec`. */
export type Kind = 'tunnel' | 'exec';

/** What the preHandler settled for the upgrade to use. */
type Prepared =
  | { via: 'here'; stream: MuxStream; recorder: SessionRecorder; release: () => void; exit: ExecExitWatcher | undefined }
  | { via: 'relay'; upstream: WebSocket };

const short = (uuid: string): string => uuid.slice(0, 7);

/**
 * The device's open request, the session's kind and its log target (`port 80`, `web port 8080`,
 * `web`, `web: <command>`, `host`, `host: <command>`) from a query its route's schema validated.
 */
export function describeSession(kind: Kind, query: TunnelQuery | ExecQuery): { open: TunnelOpen; kind: DeviceSession['kind']; target: string } {
  if (kind === 'tunnel') {
    const q = query as TunnelQuery;
    const port = Number(q.port);
    return { open: { kind: 'tcp', port, ...(q.service !== undefined ? { service: q.service } : {}) }, kind: 'tunnel', target: q.service === undefined ? `port ${port}` : `${q.service} port ${port}` };
  }
  const q = query as ExecQuery;
  const open: TunnelOpen = {
    kind: 'exec', tty: q.tty === '1',
    ...(q.service !== undefined ? { service: q.service } : {}), ...(q.command !== undefined ? { command: q.command } : {}),
    ...(q.cols !== undefined ? { cols: Number(q.cols) } : {}), ...(q.rows !== undefined ? { rows: Number(q.rows) } : {}),
    ...(q.term !== undefined ? { term: q.term } : {}),
  };
  const where = q.service ?? 'host';
  return { open, kind: q.service === undefined ? 'ssh-host' : 'ssh', target: q.command === undefined ? where : `${where}: ${q.command}` };
}

function apiError(reply: FastifyReply, status: number, message: string): FastifyReply {
  const reasons: Record<number, string> = { 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 429: 'Too Many Requests', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };
  return reply.code(status).send({ statusCode: status, error: reasons[status] ?? 'Error', message });
}

/** A close code the ws library lets us send (1005 and 1006 are only ever observed). */
function sendableCode(code: number): boolean {
  return code === 1000 || code === 1001 || (code >= 1002 && code <= 1003) || (code >= 1007 && code <= 1014 && code !== 1010) || (code >= 3000 && code <= 4999);
}

/** Closes `ws` with a reason cut to the 123 bytes a close frame carries. */
function closeWith(ws: WebSocket, code: number, reason: string): void {
  if (ws.readyState === WebSocket.CLOSED || ws.readyState === WebSocket.CLOSING) return;
  ws.close(code, Buffer.from(reason).subarray(0, 123).toString('utf8').replace(/\uFFFD$/, ''));
}

/**
 * Pings `ws` every {@link SESSION_PING_MS}; a socket that missed a pong is terminated. Returns the
 * stop. A socket we paused for back-pressure cannot read its pong: while paused it counts as alive
 * (a device that stops reading for a minute must not end a healthy session).
 */
function heartbeat(ws: WebSocket): () => void {
  let alive = true;
  ws.on('pong', () => (alive = true));
  const timer = setInterval(() => {
    if (ws.isPaused) {
      alive = true;
      return;
    }
    if (!alive) {
      ws.terminate();
      return;
    }
    alive = false;
    ws.ping();
  }, SESSION_PING_MS);
  timer.unref();
  return () => clearInterval(timer);
}

function rawBytes(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/**
 * Sends `data` on `to`; pauses `from` while `to` has more than {@link SESSION_HIGH_WATER_BYTES}
 * unsent, resuming it once the socket drained below a quarter of that.
 */
function sendPaced(to: WebSocket, data: Buffer | string, binary: boolean, pause: () => void, resume: () => void, state: { paused: boolean }): void {
  to.send(data, { binary }, () => {
    if (state.paused && to.bufferedAmount < SESSION_HIGH_WATER_BYTES / 4) {
      state.paused = false;
      resume();
    }
  });
  if (!state.paused && to.bufferedAmount > SESSION_HIGH_WATER_BYTES) {
    state.paused = true;
    pause();
  }
}

/**
 * Relays the CLI's socket and the device's multiplexed stream until either ends: binary messages ⇄
 * bytes, `{"type":"eof"}` ⇄ the stream's end, with back-pressure both ways (a CLI that stops
 * reading stops the device's stream, whose window then stops the device).
 */
function relayToStream(ws: WebSocket, p: Extract<Prepared, { via: 'here' }>, channels: DeviceChannels): void {
  const { stream, recorder } = p;
  const session = stream.session;
  let outcome: string | undefined;
  const stopPing = heartbeat(ws);
  const finish = (code: number, reason: string, why: string): void => {
    outcome ??= why;
    // A socket paused for back-pressure would never read the client's close answer.
    ws.resume();
    closeWith(ws, code, reason);
    if (!stream.closed) stream.close(RESET_CODE.cancel);
  };

  // CLI → device.
  let inputEnded = false;
  /** An exec session whose output ended: the process is gone, input racing its end is dropped. */
  let processEnded = false;
  ws.on('message', (data: RawData, isBinary: boolean) => {
    if (processEnded) return;
    if (!isBinary) {
      const text = rawBytes(data).toString('utf8');
      if (text !== EOF_MESSAGE || inputEnded) {
        finish(TUNNEL_CLOSE.protocol, 'the only text message a session takes is {"type":"eof"}, once', 'protocol error');
        return;
      }
      inputEnded = true;
      stream.end();
      return;
    }
    if (inputEnded) {
      finish(TUNNEL_CLOSE.protocol, 'bytes after {"type":"eof"}', 'protocol error');
      return;
    }
    const bytes = rawBytes(data);
    recorder.addIn(bytes.length);
    // Messages already read keep coming for a moment after the pause: one drain listener at a time.
    if (!stream.write(bytes) && !ws.isPaused) {
      ws.pause();
      stream.once('drain', () => ws.resume());
    }
  });

  // Device → CLI.
  const pacing = { paused: false };
  stream.on('data', (chunk: Buffer) => {
    recorder.addOut(chunk.length);
    p.exit?.feed(chunk);
    sendPaced(ws, chunk, true, () => stream.pause(), () => stream.resume(), pacing);
  });
  stream.on('end', () => {
    if (ws.readyState === WebSocket.OPEN) ws.send(EOF_MESSAGE);
    // A TCP session stays half-open; an exec session's output ends when its process did, so the
    // session is done: ending our side too closes the stream, and the socket with 1000.
    if (p.exit && !inputEnded) {
      processEnded = true;
      inputEnded = true;
      stream.end();
    }
  });
  stream.on('error', () => undefined);
  stream.once('close', () => {
    p.release();
    if (channels.stopping) finish(TUNNEL_CLOSE.serverStopping, 'the server is stopping', 'server stopped');
    else if (session?.destroyed || session?.closed) finish(TUNNEL_CLOSE.deviceLost, "the device's connection to the server dropped", 'device connection lost');
    else if (stream.rstCode !== undefined && stream.rstCode !== RESET_CODE.noError) finish(TUNNEL_CLOSE.deviceReset, 'the device reset the session', 'device reset');
    else finish(TUNNEL_CLOSE.done, 'done', p.exit?.exit !== undefined ? `exit ${p.exit.exit}` : p.exit?.error !== undefined ? `error: ${p.exit.error}` : 'closed');
  });

  ws.once('close', (code: number) => {
    stopPing();
    outcome ??= code === 1001 ? 'server stopped' : 'client left';
    // The agent closes the TCP connection or kills the process on the reset.
    if (!stream.closed) stream.close(RESET_CODE.cancel);
    void recorder.end(outcome);
  });
  ws.on('error', () => ws.terminate());
}

/** Pipes two sockets both ways, preserving binary/text and close codes (a relay to another replica). */
function relayToReplica(ws: WebSocket, upstream: WebSocket): void {
  const stopPing = heartbeat(ws);
  const down = { paused: false };
  const up = { paused: false };
  upstream.on('message', (data: RawData, isBinary: boolean) => sendPaced(ws, rawBytes(data), isBinary, () => upstream.pause(), () => upstream.resume(), down));
  ws.on('message', (data: RawData, isBinary: boolean) => sendPaced(upstream, rawBytes(data), isBinary, () => ws.pause(), () => ws.resume(), up));
  upstream.resume();
  upstream.once('close', (code: number, reason: Buffer) => {
    ws.resume();
    // An abrupt end (1006): the holding replica, and with it the device's socket, is gone.
    if (sendableCode(code)) closeWith(ws, code, reason.toString('utf8'));
    else closeWith(ws, TUNNEL_CLOSE.deviceLost, "the device's connection to the server dropped");
  });
  ws.once('close', (code: number, reason: Buffer) => {
    stopPing();
    upstream.resume();
    if (sendableCode(code)) closeWith(upstream, code, reason.toString('utf8'));
    else upstream.terminate();
  });
  upstream.on('error', () => upstream.terminate());
  ws.on('error', () => ws.terminate());
}

/**
 * Opens the session on the replica at `replicaUrl` with the caller's own credentials: resolves
 * with the open socket, or the replica's refusal (status and ApiError message).
 */
function openUpstream(replicaUrl: string, request: FastifyRequest): Promise<WebSocket | { status: number; message: string }> {
  const url = new URL(request.url, replicaUrl.replace(/^http/, 'ws'));
  return new Promise((resolve) => {
    const upstream = new WebSocket(url, {
      headers: { authorization: request.headers.authorization ?? '', [RELAYED_HEADER]: '1', [CLIENT_ADDRESS_HEADER]: request.ip },
      perMessageDeflate: false, maxPayload: MAX_TUNNEL_MESSAGE_BYTES, handshakeTimeout: RELAY_OPEN_TIMEOUT_MS,
    });
    let refused = false;
    // Paused until the relay's listeners are on (relayToReplica): what the holding replica sends
    // at once (a command's quick output) would otherwise be read before anyone listens.
    upstream.once('open', () => {
      upstream.pause();
      resolve(upstream);
    });
    upstream.once('unexpected-response', (_req, res) => {
      // The refusal's body is read first; the socket is ended after (its error then is ours).
      refused = true;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body = (body + d).slice(0, 4096)));
      res.on('end', () => {
        let message = `the replica holding the device answered ${res.statusCode ?? 0}`;
        try {
          const parsed = JSON.parse(body) as { message?: unknown };
          if (typeof parsed.message === 'string') message = parsed.message;
        } catch {
          // keep the generic line
        }
        resolve({ status: res.statusCode ?? 502, message });
      });
      res.on('error', () => resolve({ status: 502, message: `the replica holding the device answered ${res.statusCode ?? 0}` }));
      res.on('close', () => upstream.terminate());
    });
    upstream.on('error', (err) => !refused && resolve({ status: 502, message: `cannot reach the replica holding the device (${replicaUrl}): ${err.message}` }));
  });
}

export async function registerTunnelRoutes(app: SkiffApp, ctx: ServiceContext, kit: RouteKit, channels: DeviceChannels): Promise<void> {
  // Sessions a killed server left open would show as running for ever.
  await closeAbandoned(ctx).catch((err: Error) => ctx.log(`sessions: cannot close the sessions a stopped server left open: ${err.message}`));
  let sweep: NodeJS.Timeout | undefined;
  if (ctx.dialect === 'postgres') {
    sweep = setInterval(() => void closeAbandoned(ctx).catch((err: Error) => ctx.log(`sessions: ${err.message}`)), ABANDONED_SWEEP_MS);
    sweep.unref();
  }
  const stopAnswering = answerLocates(ctx, channels);
  /** Sessions running here, whose rows a stopping server ends before its database closes. */
  const running = new Set<SessionRecorder>();
  app.addHook('onClose', async () => {
    clearInterval(sweep);
    stopAnswering();
    // The sockets' own close events may come after the database is gone; end() is once only.
    await Promise.all([...running].map((r) => r.end('server stopped')));
  });

  /** Sessions open here per device (bounded as the device's multiplexer bounds its streams). */
  const open = new Map<number, number>();
  const prepared = new WeakMap<FastifyRequest, Prepared>();

  const prepare = async (kind: Kind, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    if (!request.ws) throw badInput('headers', 'this route takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)');
    const user = await kit.userOf(request);
    const { uuid } = request.params as { uuid: string };
    const { device } = await deviceOf(ctx, user, uuid, 'write');
    const what = describeSession(kind, request.query as TunnelQuery | ExecQuery);
    const offline = (): SkiffError => conflict(`device ${short(device.uuid)} is not connected to the server (offline?)`);
    const relayed = request.headers[RELAYED_HEADER] === '1';
    const location = relayed ? (channels.has(device.id) ? { here: true as const } : undefined) : await locateDevice(ctx, channels, device.id);
    if (!location) throw offline();
    if (!location.here) {
      const upstream = await openUpstream(location.replicaUrl, request);
      if (!(upstream instanceof WebSocket)) return apiError(reply, upstream.status, upstream.message);
      prepared.set(request, { via: 'relay', upstream });
      watchUnclaimed(request, () => upstream.terminate());
      return undefined;
    }
    const count = open.get(device.id) ?? 0;
    if (count >= MAX_STREAMS_PER_DEVICE) return apiError(reply, 429, `device ${short(device.uuid)} has ${count} sessions open, the most it takes at once; end some and try again`);
    open.set(device.id, count + 1);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      const n = (open.get(device.id) ?? 1) - 1;
      if (n <= 0) open.delete(device.id);
      else open.set(device.id, n);
    };
    let stream: MuxStream;
    try {
      stream = await channels.openStream(device.id, what.open);
    } catch (err) {
      release();
      if (err instanceof TunnelRefused) return apiError(reply, err.status, err.message);
      if (err instanceof SkiffError && err.code === 'conflict') throw offline();
      throw err;
    }
    let recorder: SessionRecorder;
    try {
      recorder = await startSession(ctx, { deviceId: device.id, userId: user.userId, kind: what.kind, actor: user.email, target: what.target, clientAddress: clientAddressOf(request.ip, relayed, request.headers[CLIENT_ADDRESS_HEADER]) });
    } catch (err) {
      release();
      stream.close(RESET_CODE.cancel);
      throw err;
    }
    running.add(recorder);
    stream.once('close', () => running.delete(recorder));
    prepared.set(request, { via: 'here', stream, recorder, release, exit: kind === 'exec' ? new ExecExitWatcher() : undefined });
    watchUnclaimed(request, () => {
      release();
      stream.close(RESET_CODE.cancel);
      void recorder.end('client left');
    });
    return undefined;
  };

  /** The client may leave between the checks and the upgrade: what was opened for it is closed. */
  const watchUnclaimed = (request: FastifyRequest, cleanup: () => void): void => {
    const socket = request.raw.socket;
    const onClose = (): void => {
      if (prepared.has(request)) {
        prepared.delete(request);
        cleanup();
      }
    };
    if (socket.destroyed) onClose();
    else socket.once('close', onClose);
  };

  const wsHandler = (ws: WebSocket, request: FastifyRequest): void => {
    const p = prepared.get(request);
    prepared.delete(request);
    if (!p) {
      closeWith(ws, TUNNEL_CLOSE.protocol, 'the session was not prepared');
      return;
    }
    if (p.via === 'here') relayToStream(ws, p, channels);
    else relayToReplica(ws, p.upstream);
  };

  const httpAnswer = async (_request: FastifyRequest, reply: FastifyReply) =>
    reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: 'this route takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)', field: 'headers' });

  for (const [kind, endpoint, querystring, description] of [
    ['tunnel', ENDPOINTS.deviceTunnel, TunnelQuery, 'WebSocket upgrade: a TCP connection to a port of the device (binary messages are its bytes; api/tunnel.ts).'],
    ['exec', ENDPOINTS.deviceExec, ExecQuery, 'WebSocket upgrade: a shell or command on the device (binary messages are ExecFrames; api/tunnel.ts).'],
  ] as const) {
    app.route({
      method: 'GET',
      url: endpoint.path,
      schema: kit.schema({ security: kit.auth, params: UuidParams, querystring, description, response: { 101: kit.NoContent, 502: R.ApiError, 504: R.ApiError } }),
      preHandler: async (request, reply) => {
        const answered = await prepare(kind, request, reply);
        if (answered) return answered;
      },
      handler: httpAnswer,
      wsHandler,
    });
  }

  app.get(ENDPOINTS.deviceSessions.path, { schema: kit.schema({ security: kit.auth, params: UuidParams, querystring: DeviceSessionsQuery, response: { 200: Type.Array(DeviceSession) } }) }, async (req) => {
    const user = await kit.userOf(req);
    const limit = req.query.limit === undefined ? undefined : Number(req.query.limit);
    if (limit !== undefined && limit > 1000) throw badInput('limit', `querystring limit ${limit} is over 1000`);
    return listSessions(ctx, user, req.params.uuid, limit);
  });
}

/**
 * Ends the rows a stopped server left open. SQLite has one replica, so at start every open row is
 * abandoned. On PostgreSQL replicas share the table: a row is abandoned when the replica that
 * wrote it holds no event listener on the database any more (tunnel-sessions.ts liveReplicas).
 */
async function closeAbandoned(ctx: ServiceContext): Promise<void> {
  const closed = ctx.dialect === 'postgres'
    ? await (async () => {
      const live = new Set(await liveReplicas(ctx));
      live.add(ctx.options.replicaId);
      return closeAbandonedSessions(ctx, (await openSessionReplicas(ctx)).filter((r) => !live.has(r)));
    })()
    : await closeAbandonedSessions(ctx);
  if (closed > 0) ctx.log(`sessions: closed ${closed} session(s) a stopped server left open`);
}
