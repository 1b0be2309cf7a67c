/**
 * The device's event channel: one WebSocket per online agent (`GET /device/v3/:uuid/events`,
 * `Authorization: Bearer <device key>`), JSON text messages both ways. Polling stays the source of
 * truth: a message only makes the agent poll now, or act now; a lost message is made good by the
 * next poll. Device actions (`POST /devices/:uuid/actions`) ride it: the server forwards the
 * action to the replica holding the device's socket and answers with the device's result.
 */
import { Type, type Static } from '@sinclair/typebox';

export const DeviceActionName = Type.Union([
  Type.Literal('restart'), Type.Literal('reboot'), Type.Literal('shutdown'), Type.Literal('purge'), Type.Literal('identify'),
]);
/** balena's device actions (supervisor API v1/v2: restart, reboot, shutdown, purge, blink). */
export type DeviceActionName = Static<typeof DeviceActionName>;

/** `POST /devices/:uuid/actions` body. */
export const DeviceActionRequest = Type.Object({
  action: DeviceActionName,
  /** restart/purge: one service only (default: all). */
  service: Type.Optional(Type.String({ pattern: '^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$' })),
  /** Act even while a service holds an update lock. */
  force: Type.Optional(Type.Boolean()),
}, { additionalProperties: false });
export type DeviceActionRequest = Static<typeof DeviceActionRequest>;

/**
 * `POST /devices/:uuid/actions` answer (200) once the device answered: `ok` false with the device's
 * reason when it refused or failed. A device that is not connected: 409; no answer in 20 s: 504.
 */
export const DeviceActionResult = Type.Object({
  ok: Type.Boolean(),
  message: Type.String(),
});
export type DeviceActionResult = Static<typeof DeviceActionResult>;

/** Server → device. */
export type ServerToDevice =
  /** Fetch the target state now (a release, a variable, a pin or a move changed it). */
  | { type: 'update' }
  /** First message on every connection: the server's clock (ms since the epoch), so the device knows its skew. */
  | { type: 'hello'; time: number }
  /**
   * `sentAt` (the server's clock, ms) and `validMs`: after that long nobody waits for the answer,
   * so a device that reads the action later (it was frozen, its link stalled) refuses it instead of
   * rebooting long after the CLI gave up.
   */
  | { type: 'action'; id: string; action: DeviceActionName; service?: string; force?: boolean; sentAt?: number; validMs?: number };

/** Device → server. */
export type DeviceToServer =
  | { type: 'action-result'; id: string; ok: boolean; message: string };
