/**
 * The agent's config.json, in balenaOS's format (uuid, deviceType, listenPort, developmentMode,
 * deviceApiKey, …), created on first start and kept across restarts.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, fsyncSync, openSync, closeSync } from 'node:fs';
import path from 'node:path';

export interface DeviceConfig {
  uuid: string;
  deviceType: string;
  listenPort: number;
  developmentMode: boolean;
  deviceApiKey: string;
  deviceName?: string;
  /** Kept for the cloud later; unused in local mode. */
  apiEndpoint?: string;
  [key: string]: unknown;
}

export class ConfigError extends Error {}

/** Reads config.json, filling in (and saving) what a first start needs. */
export function loadDeviceConfig(file: string, defaults: { deviceType: string; listenPort?: number; developmentMode?: boolean }): DeviceConfig {
  let raw: Record<string, unknown> = {};
  if (existsSync(file)) {
    try {
      raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(`${file} is not valid JSON (${(err as Error).message}); fix or remove it`);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${file} must hold a JSON object`);
  }
  const config: DeviceConfig = {
    ...raw,
    uuid: typeof raw.uuid === 'string' && /^[0-9a-f]{7,64}$/.test(raw.uuid) ? raw.uuid : randomBytes(16).toString('hex'),
    deviceType: typeof raw.deviceType === 'string' ? raw.deviceType : defaults.deviceType,
    listenPort: typeof raw.listenPort === 'number' ? raw.listenPort : defaults.listenPort ?? 48484,
    developmentMode: typeof raw.developmentMode === 'boolean' ? raw.developmentMode : defaults.developmentMode ?? true,
    deviceApiKey: typeof raw.deviceApiKey === 'string' && raw.deviceApiKey !== '' ? raw.deviceApiKey : randomBytes(16).toString('hex'),
  };
  if (JSON.stringify(config) !== JSON.stringify(raw)) writeAtomically(file, `${JSON.stringify(config, null, 2)}\n`);
  return config;
}

/** Write to a temp file, fsync, rename: a crash leaves the old or the new file, never a torn one. */
export function writeAtomically(file: string, text: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  const fd = openSync(tmp, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, file);
}
