/**
 * Device actions (`POST /devices/:uuid/actions`): restart, reboot, shutdown, purge, identify, sent
 * through the device's event channel and answered by the device.
 *
 * Which replica holds the device's socket is not stored anywhere: the action goes on the bus, the
 * replica holding the socket sends it and says so (`device-action-accepted`), and the device's
 * answer comes back on the bus. No acknowledgement within {@link ActionWaits.acceptMs} means no
 * replica holds a socket of the device: it is offline (409). An acknowledged action that gets no
 * answer within {@link ActionWaits.answerMs} is a 504. This needs no presence table and stays
 * right however sockets move between replicas; its cost is that an offline device is reported
 * after the short wait instead of at once.
 */
import { randomUUID } from 'node:crypto';
import type { DeviceActionRequest, DeviceActionResult } from '../../api/events.js';
import { SkiffError } from '../../errors/errors.js';
import type { Principal } from '../permissions.js';
import { badInput, conflict, type ServiceContext } from './context.js';
import { deviceOf } from './devices.js';

type User = Extract<Principal, { kind: 'user' }>;

export interface ActionWaits {
  /** For a replica to say it sent the action to the device (ms). */
  acceptMs: number;
  /** For the device's answer once it was sent (ms). */
  answerMs: number;
}

export const DEFAULT_ACTION_WAITS: ActionWaits = { acceptMs: 2000, answerMs: 20_000 };

/** The device got the action but did not answer in time (the route answers 504). */
export class DeviceDidNotAnswer extends SkiffError {
  constructor(uuid: string, seconds: number) {
    super('serverUnreachable', `device ${uuid.slice(0, 7)} did not answer within ${seconds} s`, { hint: "it may still act; check with 'skiff device info'" });
  }
}

/**
 * Runs an action on the caller's device and returns the device's answer (`ok` false: it refused
 * or failed, with its reason).
 * @throws SkiffError notFound (not the caller's device), conflict (not connected: offline), DeviceDidNotAnswer
 */
export async function runDeviceAction(ctx: ServiceContext, caller: User, uuid: string, request: DeviceActionRequest, waits: ActionWaits = DEFAULT_ACTION_WAITS): Promise<DeviceActionResult> {
  if (request.service !== undefined && request.action !== 'restart' && request.action !== 'purge') throw badInput('service', `'${request.action}' acts on the whole device: --service goes with restart and purge`);
  const { device } = await deviceOf(ctx, caller, uuid, 'write');
  const id = randomUUID();
  let accept: () => void = () => undefined;
  let answer: (result: DeviceActionResult) => void = () => undefined;
  const accepted = new Promise<void>((resolve) => (accept = resolve));
  const answered = new Promise<DeviceActionResult>((resolve) => (answer = resolve));
  // Subscribed before the action is published: an answer cannot arrive before anyone listens.
  const offAccepted = ctx.events.subscribe('device-action-accepted', (e) => e.id === id && accept());
  const offResult = ctx.events.subscribe('device-action-result', (e) => e.id === id && answer({ ok: e.ok, message: e.message }));
  const timers: NodeJS.Timeout[] = [];
  const timeout = (ms: number): Promise<'timeout'> => new Promise((resolve) => timers.push(setTimeout(() => resolve('timeout'), ms)));
  try {
    await ctx.events.publish({
      topic: 'device-action', id, deviceId: device.id, action: request.action,
      ...(request.service !== undefined ? { service: request.service } : {}), ...(request.force !== undefined ? { force: request.force } : {}),
    });
    // An answer may overtake the acknowledgement (they travel separately between replicas).
    const first = await Promise.race([accepted.then(() => 'accepted' as const), answered, timeout(waits.acceptMs)]);
    if (first === 'timeout') throw conflict(`device ${device.uuid.slice(0, 7)} is not connected to the server (offline?)`);
    if (first !== 'accepted') return first;
    const result = await Promise.race([answered, timeout(waits.answerMs)]);
    if (result === 'timeout') throw new DeviceDidNotAnswer(device.uuid, Math.round(waits.answerMs / 1000));
    return result;
  } finally {
    for (const t of timers) clearTimeout(t);
    offAccepted();
    offResult();
  }
}
