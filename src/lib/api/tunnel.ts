/**
 * Secure tunnels (issue 11): a shell, TCP forwarding and a public URL for a device, through the
 * server, over the one WebSocket each agent already holds (`GET /device/v3/:uuid/events`).
 *
 * Three hops, one rule each:
 * - **CLI ↔ server**: one WebSocket per session (`GET /devices/:uuid/tunnel` or `/exec`, a user's
 *   bearer). Everything is checked *before* the upgrade, including that the device accepted the
 *   stream, so a refusal is an HTTP answer with an ApiError body (404 unknown device or service,
 *   409 offline, 403 host shell not allowed, 502 nothing listens). After the upgrade binary
 *   messages carry the stream's bytes; a text message `{"type":"eof"}` is a half-close (TCP's FIN,
 *   or the end of a command's stdin); the socket's close ends the session (close code
 *   {@link TUNNEL_CLOSE} says why).
 * - **server ↔ agent**: a small multiplexer (tunnel/mux.ts) over the agent's event WebSocket:
 *   the event channel's text messages stay JSON, its binary messages are the multiplexer's frames.
 *   The server opens each session as a stream with a {@link TunnelOpen}; per-stream credit is the
 *   flow control, so a stalled reader stalls only its own stream. END is the half-close, RESET
 *   ends a session at once (the agent then kills the process or closes the connection).
 * - **The bytes**: a TCP tunnel carries the raw TCP bytes. An exec session carries
 *   {@link ExecFrame}s (Docker's attach header), which the server relays without reading.
 */
import { Type, type Static } from '@sinclair/typebox';

/** `GET /devices/:uuid/tunnel` query: a TCP connection to `port` on the device host, or on a service container's address. */
export const TunnelQuery = Type.Object({
  port: Type.String({ pattern: '^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$', description: 'TCP port on the device, 1-65535' }),
  service: Type.Optional(Type.String({ pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$', description: "a service's container address instead of the device host" })),
}, { additionalProperties: false });
export type TunnelQuery = Static<typeof TunnelQuery>;

/** `GET /devices/:uuid/exec` query: a shell or one command in a service's container, or on the device host (no service). */
export const ExecQuery = Type.Object({
  service: Type.Optional(Type.String({ pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$' })),
  /** Run this with `sh -c`; absent: a login shell. */
  command: Type.Optional(Type.String({ minLength: 1, maxLength: 8192 })),
  /** '1': a pseudo-terminal (stdout and stderr merged, as a terminal shows them). */
  tty: Type.Optional(Type.Union([Type.Literal('1'), Type.Literal('0')])),
  cols: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,3}$' })),
  rows: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,3}$' })),
  /** TERM for the remote process (tty only). */
  term: Type.Optional(Type.String({ pattern: '^[a-zA-Z0-9._+-]{1,64}$' })),
}, { additionalProperties: false });
export type ExecQuery = Static<typeof ExecQuery>;

/**
 * What the server asks the agent to open (the OPEN frame's JSON). The agent answers 200 once the
 * connection is made or the process started, else an error status with a one-line message: 400
 * bad request, 403 host shell not allowed on this device, 404 no such service (or it is not
 * running), 502 connection refused / the process could not start, 503 the agent is stopping or
 * has too many sessions open.
 */
export type TunnelOpen =
  | { kind: 'tcp'; port: number; service?: string }
  | { kind: 'exec'; service?: string; command?: string; tty: boolean; cols?: number; rows?: number; term?: string };

/** WebSocket close codes of a CLI ↔ server session (4000-4999 are the application's). */
export const TUNNEL_CLOSE = {
  /** The remote end finished (the command exited, the device closed the TCP connection). */
  done: 1000,
  /** The server is stopping. */
  serverStopping: 1001,
  /** The device's connection to the server dropped mid-session. */
  deviceLost: 4010,
  /** The device reset the stream (the agent stopped, or a fault on its side). */
  deviceReset: 4011,
  /** The session broke a rule (a frame too large, a text message other than eof). */
  protocol: 4012,
} as const;

/** The text message that half-closes a session's direction (both ways). */
export const EOF_MESSAGE = '{"type":"eof"}';

/**
 * Exec stream frames, in Docker's attach format (Docker Engine API, "Attach to a container",
 * stream format): an 8-byte header `[type, 0, 0, 0, length as uint32 big-endian]`, then `length`
 * bytes. Types 0-2 are Docker's stdin/stdout/stderr; 3 is ours, a JSON {@link ExecControl}.
 * A tty session sends its merged output as stdout.
 */
export const EXEC_FRAME = { stdin: 0, stdout: 1, stderr: 2, control: 3 } as const;
export type ExecFrameType = (typeof EXEC_FRAME)[keyof typeof EXEC_FRAME];
export interface ExecFrame {
  type: ExecFrameType;
  payload: Buffer;
}

/** Largest frame payload either side sends or accepts (bytes); a larger length is a protocol error. */
export const MAX_EXEC_FRAME_BYTES = 1024 * 1024;

/**
 * Control messages. CLI → device: `resize` (tty only), `signal` (POSIX name, e.g. SIGINT, SIGTERM,
 * SIGHUP, to the process's group). Device → CLI: `exit` (the process ended; `code` its status, or
 * 128+n for signal n, as a shell says it), `error` (the session cannot go on; one line).
 */
export type ExecControl =
  | { type: 'resize'; cols: number; rows: number }
  | { type: 'signal'; signal: 'SIGINT' | 'SIGTERM' | 'SIGHUP' | 'SIGKILL' | 'SIGQUIT' }
  | { type: 'exit'; code: number }
  | { type: 'error'; message: string };

/** One session in a device's log (`GET /devices/:uuid/sessions`, newest first). */
export const DeviceSession = Type.Object({
  id: Type.String({ description: '32 hex digits' }),
  device: Type.String({ description: "the device's uuid" }),
  kind: Type.Union([Type.Literal('ssh'), Type.Literal('ssh-host'), Type.Literal('tunnel'), Type.Literal('public-url')]),
  /** Who: the user's email, or `public <client address>` for a public URL. */
  actor: Type.String(),
  /** What: `web`, `web: <command>`, `port 80`, `web port 8080`, `GET /path` (first request). */
  target: Type.String(),
  /** The client's address as the server saw it. */
  clientAddress: Type.String(),
  startedAt: Type.String({ format: 'date-time' }),
  endedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  /** Bytes from the client to the device, and back. */
  bytesIn: Type.Integer({ minimum: 0 }),
  bytesOut: Type.Integer({ minimum: 0 }),
  /** How it ended: `exit 0`, `closed`, `device connection lost`, … (null while open). */
  outcome: Type.Union([Type.String(), Type.Null()]),
});
export type DeviceSession = Static<typeof DeviceSession>;

export const DeviceSessionsQuery = Type.Object({
  limit: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,3}$', description: 'newest N, 1-1000 (default 100)' })),
}, { additionalProperties: false });
export type DeviceSessionsQuery = Static<typeof DeviceSessionsQuery>;

/** `GET|PUT /devices/:uuid/public-url`. */
export const DevicePublicUrl = Type.Object({
  device: Type.String(),
  /** Whether the server serves it now (the device's own setting, else its fleet's). */
  enabled: Type.Boolean(),
  /** The device's own setting; null: follows its fleet. */
  deviceSetting: Type.Union([Type.Boolean(), Type.Null()]),
  fleetSetting: Type.Boolean(),
  /** `https://<server>/d/<uuid>/`, or `https://<uuid>.<domain>/` when the server has --public-url-domain. */
  url: Type.String(),
});
export type DevicePublicUrl = Static<typeof DevicePublicUrl>;

/** `PUT /devices/:uuid/public-url` body: true/false, or null to follow the fleet again. */
export const SetDevicePublicUrl = Type.Object({ enabled: Type.Union([Type.Boolean(), Type.Null()]) }, { additionalProperties: false });
export type SetDevicePublicUrl = Static<typeof SetDevicePublicUrl>;

/** `GET|PUT /fleets/:fleet/public-url`: the default of the fleet's devices. */
export const FleetPublicUrl = Type.Object({ fleet: Type.String(), enabled: Type.Boolean() });
export type FleetPublicUrl = Static<typeof FleetPublicUrl>;
export const SetFleetPublicUrl = Type.Object({ enabled: Type.Boolean() }, { additionalProperties: false });
export type SetFleetPublicUrl = Static<typeof SetFleetPublicUrl>;

/** The public URL path prefix: `/d/<uuid>/…` is proxied to port 80 of the device, path after the uuid. */
export const PUBLIC_URL_PREFIX = '/d/';
/** The device port a public URL serves (balena's public device URL serves port 80 too). */
export const PUBLIC_URL_PORT = 80;
