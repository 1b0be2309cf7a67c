/**
 * Registration with the server, once per device, as balena-supervisor does it
 * (`src/lib/register-device.ts`, `src/api-binder/index.ts`): with the provisioning key of
 * config.json (`apiKey`) the device registers its uuid and its own key (`deviceApiKey`); on 201 it
 * writes `deviceId` and `registered_at` into config.json and removes the provisioning key, in one
 * atomic replace. A 409 (the uuid is known: a registration whose answer was lost, or a device set
 * up twice) is settled by trying the device key itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import type { RegisterRequest } from '../../api/device-state.js';
import { AGENT_VERSION } from '../api.js';
import { writeAtomically, type DeviceConfig } from '../config.js';
import { CloudHttpError, CloudUnreachableError, type CloudClient } from './client.js';

/** Whether config.json says the device registered already. */
export function isRegistered(config: Readonly<Record<string, unknown>>): boolean {
  return config.registered_at !== undefined && config.registered_at !== null && typeof config.apiKey !== 'string';
}

/** What one registration attempt came to. */
export type RegisterOutcome =
  | { done: true; deviceId?: number; message: string }
  /** Try again later; `message` says why, for the log. */
  | { done: false; message: string; retryAfterMs?: number };

/**
 * One attempt to register (or to find the device registered already). Never throws for what the
 * server or the network did: a refused, expired or revoked provisioning key, a 409 with a device
 * key that does not work, or an unreachable server are outcomes to log and retry with backoff.
 */
export async function registerOnce(client: CloudClient, config: DeviceConfig): Promise<RegisterOutcome> {
  const provisioningKey = typeof config.apiKey === 'string' && config.apiKey !== '' ? config.apiKey : undefined;
  if (!provisioningKey) {
    // Nothing to register with: either registered by hand (deviceApiKey known to the server) or not at all.
    return (await deviceKeyWorks(client))
      ? { done: true, message: 'Device key accepted by the server' }
      : { done: false, message: `config.json has apiEndpoint but no provisioning key (apiKey), and the server does not accept this device's key; add a provisioning key (skiff config generate --fleet …)` };
  }
  const body: RegisterRequest = {
    uuid: config.uuid,
    device_type: config.deviceType,
    api_key: config.deviceApiKey,
    supervisor_version: AGENT_VERSION,
    os_version: `${os.type()} ${os.release()}`,
    ...(typeof config.applicationId === 'number' ? { application: config.applicationId } : {}),
  };
  try {
    const answer = await client.register(provisioningKey, body);
    return { done: true, deviceId: answer.id, message: `Registered with ${client.apiEndpoint} as device ${config.uuid.slice(0, 7)}` };
  } catch (err) {
    if (err instanceof CloudHttpError) {
      if (err.status === 409) {
        if (await deviceKeyWorks(client)) return { done: true, message: `Registered with ${client.apiEndpoint} (the uuid was known and this device's key works)` };
        return { done: false, message: `registration refused: uuid ${config.uuid} is registered already, and not with this device's key` };
      }
      if (err.status === 401 || err.status === 403) return { done: false, message: `registration refused: the provisioning key (apiKey in config.json) is invalid, expired or revoked (${err.status}); generate a new config.json for the fleet`, retryAfterMs: err.retryAfterMs };
      return { done: false, message: `registration failed: ${err.message}`, retryAfterMs: err.retryAfterMs };
    }
    if (err instanceof CloudUnreachableError) return { done: false, message: `registration: ${err.message}` };
    throw err;
  }
}

/** Whether the server accepts the device key (its own target state answers). */
async function deviceKeyWorks(client: CloudClient): Promise<boolean> {
  try {
    await client.target();
    return true;
  } catch {
    return false;
  }
}

/**
 * Records a registration in config.json: `deviceId` (when known) and `registered_at` set, the
 * provisioning key removed, every other key as the file has it (not as flags changed it in memory),
 * written with {@link writeAtomically}: a crash leaves the old file or the new one.
 */
export function recordRegistration(configFile: string, deviceId: number | undefined, now = Date.now()): Record<string, unknown> {
  const raw = existsSync(configFile) ? (JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>) : {};
  const { apiKey: _provisioningKey, ...rest } = raw;
  const next = { ...rest, ...(deviceId !== undefined ? { deviceId } : {}), registered_at: now };
  writeAtomically(configFile, `${JSON.stringify(next, null, 2)}\n`);
  return next;
}
