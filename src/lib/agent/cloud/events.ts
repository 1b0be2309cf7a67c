/**
 * The agent's end of the device event channel: one WebSocket to `GET /device/v3/:uuid/events`
 * (the `ws` package; TLS as the agent's fetch does it, so NODE_EXTRA_CA_CERTS applies to both),
 * held for as long as the agent runs and reopened with exponential backoff and jitter when it
 * drops. `update` asks the poll loop to fetch the target now; `action` runs a device action and
 * answers it. Polling stays as it is: the channel only makes things happen sooner.
 *
 * Bounded: no queue (an update is a flag; an action is answered or dropped with its socket), a
 * small set of recent action ids (a server may send an action twice while a socket moves), and a
 * largest message size.
 */
import WebSocket, { type RawData } from 'ws';
import type { DeviceActionResult, DeviceToServer, ServerToDevice } from '../../api/events.js';
import { endpointPath } from '../../api/endpoints.js';
import { parseJsonObject } from '../../text/json.js';
import { MAX_TUNNEL_MESSAGE_BYTES, serveDeviceMux, type StreamHandler } from '../../tunnel/mux.js';

/** First wait after a failed or dropped connection; it doubles per failure in a row up to {@link MAX_RECONNECT_MS}. */
export const FIRST_RECONNECT_MS = 1000;
export const MAX_RECONNECT_MS = 60_000;
/** A connection that stayed up this long resets the backoff (one that opens and drops at once does not). */
const STABLE_MS = 30_000;
/** The server pings every 20 s: nothing heard for this long means the connection is dead. */
export const SILENCE_MS = 65_000;
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Largest JSON message taken from the server (binary ones are tunnel bytes, bounded by the multiplexer). */
const MAX_MESSAGE_BYTES = 64 * 1024;
const RECENT_ACTIONS = 64;

/**
 * The wait before reconnect attempt `failures` (1 for the first): `min(cap, first · 2^(n-1))`,
 * of which a random half is jitter, so a fleet that lost its server does not come back in the
 * same second. `random` is in [0, 1).
 * @example reconnectDelayMs(1, 0) // 500
 */
export function reconnectDelayMs(failures: number, random: number): number {
  const base = Math.min(MAX_RECONNECT_MS, FIRST_RECONNECT_MS * 2 ** Math.min(Math.max(failures - 1, 0), 20));
  return Math.round(base / 2 + (base / 2) * Math.min(Math.max(random, 0), 1));
}

/** `https://cloud:48080` → `wss://cloud:48080/device/v3/<uuid>/events`. */
export function eventsUrl(apiEndpoint: string, uuid: string): string {
  return `${apiEndpoint.replace(/\/+$/, '').replace(/^http/i, 'ws')}${endpointPath('deviceEvents', { uuid })}`;
}

/** A server message as one of the shapes the agent knows, or undefined (ignored). */
export function parseServerMessage(text: string): ServerToDevice | undefined {
  const m = parseJsonObject(text);
  if (!m) return undefined;
  if (m.type === 'update') return { type: 'update' };
  if (m.type === 'hello') return typeof m.time === 'number' && Number.isFinite(m.time) ? { type: 'hello', time: m.time } : undefined;
  if (m.type !== 'action' || typeof m.id !== 'string' || typeof m.action !== 'string') return undefined;
  if (!['restart', 'reboot', 'shutdown', 'purge', 'identify'].includes(m.action)) return undefined;
  const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  return {
    type: 'action', id: m.id, action: m.action as Extract<ServerToDevice, { type: 'action' }>['action'],
    ...(typeof m.service === 'string' ? { service: m.service } : {}), ...(typeof m.force === 'boolean' ? { force: m.force } : {}),
    ...(finite(m.sentAt) ? { sentAt: m.sentAt } : {}), ...(finite(m.validMs) ? { validMs: m.validMs } : {}),
  };
}

/**
 * How late an action arrived (ms) by the server's clock, or undefined when it cannot be told (no
 * hello on this connection, or an action without `sentAt`). `skewMs` is the server's clock minus
 * the device's, taken from the connection's hello, so a device whose clock is wrong still judges
 * right; only a clock that jumps during a connection makes it err, and then by the jump.
 */
export function actionLateness(action: { sentAt?: number }, skewMs: number | undefined, now: number): number | undefined {
  if (action.sentAt === undefined || skewMs === undefined) return undefined;
  return now + skewMs - action.sentAt;
}

export interface EventChannelOptions {
  apiEndpoint: string;
  uuid: string;
  deviceApiKey: string;
  /** Fetch the target now (called once per `update`; the caller coalesces). */
  onUpdate: () => void;
  runAction: (action: Extract<ServerToDevice, { type: 'action' }>) => Promise<DeviceActionResult>;
  /** Tunnel sessions the server opens over the socket (tunnel/mux.ts); none: every one is refused. */
  onTunnel?: StreamHandler;
  log: (message: string, isError?: boolean) => void;
  /** [0, 1); `Math.random` by default. */
  random?: () => number;
}

export interface EventChannel {
  /** Whether the socket is open now. */
  readonly connected: boolean;
  stop(): Promise<void>;
}

/** Opens the channel and keeps it open until stop(). Never throws: failures are logged once per streak and retried. */
export function startEventChannel(o: EventChannelOptions): EventChannel {
  const random = o.random ?? Math.random;
  const url = eventsUrl(o.apiEndpoint, o.uuid);
  let stopped = false;
  let socket: WebSocket | undefined;
  let open = false;
  let failures = 0;
  let retry: NodeJS.Timeout | undefined;
  let lastProblem: string | undefined;
  let everConnected = false;
  const recent: string[] = [];

  const connect = (): void => {
    if (stopped) return;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${o.deviceApiKey}` }, handshakeTimeout: HANDSHAKE_TIMEOUT_MS, maxPayload: MAX_TUNNEL_MESSAGE_BYTES });
    socket = ws;
    // This connection's tunnel sessions; they end with it.
    const mux = serveDeviceMux(ws, o.onTunnel ?? ((_open, stream) => stream.respond({ ':status': 503 }, { endStream: true })));
    let openedAt = 0;
    let heard = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - heard > SILENCE_MS) ws.terminate();
    }, 5000);
    watchdog.unref();
    let problem: string | undefined;
    // The server's clock minus ours, from this connection's hello (actionLateness).
    let skewMs: number | undefined;
    ws.on('open', () => {
      open = true;
      openedAt = heard = Date.now();
      if (!everConnected || lastProblem !== undefined) o.log('Cloud: event channel connected (updates arrive at once)');
      everConnected = true;
      lastProblem = undefined;
      // What changed while the socket was down is fetched now, not at the next poll.
      o.onUpdate();
    });
    ws.on('ping', () => {
      heard = Date.now();
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      heard = Date.now();
      const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
      if (isBinary) {
        mux.receive(bytes);
        return;
      }
      if (bytes.length > MAX_MESSAGE_BYTES) return;
      const message = parseServerMessage(bytes.toString('utf8'));
      if (!message) return;
      if (message.type === 'update') {
        o.onUpdate();
        return;
      }
      if (message.type === 'hello') {
        skewMs = message.time - Date.now();
        return;
      }
      if (recent.includes(message.id)) return;
      recent.push(message.id);
      if (recent.length > RECENT_ACTIONS) recent.shift();
      const late = actionLateness(message, skewMs, Date.now());
      const expired = late !== undefined && message.validMs !== undefined && late > message.validMs;
      if (expired) o.log(`Cloud: ignored a ${message.action} action that arrived ${Math.round(late / 1000)} s after it was sent (nobody waits for it any more)`, true);
      const acting = expired
        ? Promise.resolve({ ok: false, message: `the ${message.action} action arrived ${Math.round(late / 1000)} s late and was not done` })
        : o.runAction(message);
      void acting.then((result) => {
        if (ws.readyState !== ws.OPEN) return; // the server stopped waiting with this socket
        ws.send(JSON.stringify({ type: 'action-result', id: message.id, ok: result.ok, message: result.message } satisfies DeviceToServer));
      });
    });
    ws.on('error', (err) => {
      problem = err.message;
    });
    ws.on('close', (code, reason) => {
      clearInterval(watchdog);
      mux.socketClosed();
      open = false;
      if (socket === ws) socket = undefined;
      if (stopped) return;
      if (openedAt > 0 && Date.now() - openedAt >= STABLE_MS) failures = 0;
      failures++;
      const why = problem ?? (openedAt > 0 ? `closed by the server (${code}${reason.length > 0 ? ` ${reason.toString()}` : ''})` : `closed (${code})`);
      if (why !== lastProblem) o.log(`Cloud: event channel ${openedAt > 0 ? 'lost' : 'not connected'}: ${why}; retrying (polling goes on meanwhile)`, openedAt === 0);
      lastProblem = why;
      retry = setTimeout(connect, reconnectDelayMs(failures, random()));
    });
  };
  connect();
  return {
    get connected() {
      return open;
    },
    async stop() {
      stopped = true;
      clearTimeout(retry);
      const ws = socket;
      if (!ws) return;
      const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      if (ws.readyState === ws.CONNECTING || ws.readyState === ws.OPEN) ws.terminate();
      if (ws.readyState !== ws.CLOSED) await closed;
    },
  };
}
