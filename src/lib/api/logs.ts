/**
 * Device logs through the cloud. The agent sends its services' and its own lines in batches
 * (`POST /device/v2/:uuid/logs`, device key); the server keeps a bounded history per device; the
 * CLI reads it and follows it with server-sent events (`GET /devices/:uuid/logs`), where each
 * event's `id:` is the line's id so a follow that reconnects (`Last-Event-ID` or `after=`) neither
 * repeats nor skips a line. Line fields follow the local-mode log line (src/lib/device-api/wire.ts
 * LogLine, from balena-supervisor's docs/API.md).
 */
import { Type, type Static } from '@sinclair/typebox';

/** One line as the device sends it. */
export const DeviceLogLineIn = Type.Object({
  /**
   * Milliseconds since the epoch, at most JavaScript's last date (year 275760): a larger number
   * overflowed PostgreSQL's bigint (a 500 that the agent retried for ever) and printed no date.
   */
  timestamp: Type.Integer({ minimum: 0, maximum: 8_640_000_000_000_000 }),
  /**
   * Longer messages are cut by the agent (16 KiB). A NUL byte (a service may print one) is
   * stored as U+FFFD: PostgreSQL's text cannot hold it.
   */
  message: Type.String({ maxLength: 16_384 }),
  serviceName: Type.Optional(Type.String({ maxLength: 63 })),
  isSystem: Type.Optional(Type.Boolean()),
  isStdErr: Type.Optional(Type.Boolean()),
}, { additionalProperties: false });
export type DeviceLogLineIn = Static<typeof DeviceLogLineIn>;

/** `POST /device/v2/:uuid/logs` body: oldest first. Answer 204. */
export const DeviceLogBatch = Type.Object({
  lines: Type.Array(DeviceLogLineIn, { maxItems: 1000 }),
  /** Lines the agent dropped (buffer full) since its last accepted batch; the server records a system line saying so. */
  dropped: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
}, { additionalProperties: false });
export type DeviceLogBatch = Static<typeof DeviceLogBatch>;

/** One stored line, as the CLI reads it: the line plus its id (increasing per server). */
export const DeviceLogLine = Type.Object({
  id: Type.Integer(),
  timestamp: Type.Integer(),
  message: Type.String(),
  serviceName: Type.Optional(Type.String()),
  isSystem: Type.Optional(Type.Boolean()),
  isStdErr: Type.Optional(Type.Boolean()),
});
export type DeviceLogLine = Static<typeof DeviceLogLine>;

/**
 * `GET /devices/:uuid/logs?…`: without `follow`, a JSON array of the newest `count` lines (oldest
 * first); with `follow=true`, server-sent events (`id:` line id, `data:` a {@link DeviceLogLine}),
 * the newest `count` first, then new lines as they arrive.
 */
export const DeviceLogsQuery = Type.Object({
  /** Lines of history, default 1000. */
  count: Type.Optional(Type.String({ pattern: '^[0-9]{1,6}$' })),
  /**
   * Only lines with a larger id (a reconnecting follower's last id; the Last-Event-ID header does
   * the same). Then the history is the oldest `count` lines after it, not the newest, and a follow
   * sends every line after it: a reader resuming wants what follows its last line.
   */
  after: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$' })),
  follow: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  /** Only these services (repeatable). */
  service: Type.Optional(Type.Union([Type.String({ maxLength: 63 }), Type.Array(Type.String({ maxLength: 63 }), { maxItems: 50 })])),
  /** Only the agent's own lines. */
  system: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
}, { additionalProperties: false });
export type DeviceLogsQuery = Static<typeof DeviceLogsQuery>;
