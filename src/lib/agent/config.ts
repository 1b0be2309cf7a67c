/**
 * The agent's config.json, in balenaOS's format (uuid, deviceType, listenPort, developmentMode,
 * deviceApiKey, …), created on first start and kept across restarts. It holds the device API key,
 * so it is the owner's alone (0600), as is every file of the agent that holds a secret.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
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

/** The mode of files that hold a secret (the device API key, the target's environment): owner read/write only. */
export const SECRET_FILE_MODE = 0o600;

/**
 * Makes an open file 0600: a temp file left by a crash keeps its old mode when opened again. A file
 * system without Unix modes (FAT, where balenaOS keeps config.json) refuses, and has its mount's
 * modes instead: that is no reason to fail the write.
 */
export function restrictOpenFile(fd: number): void {
  try {
    fchmodSync(fd, SECRET_FILE_MODE);
  } catch {
    // no Unix modes here
  }
}

/** What {@link tightenSecretFile} found: a file open to others, made 0600 or not (a file system without Unix modes, e.g. FAT). */
export type Tightened = { done: true; from: number } | { done: false; from: number; reason: string };

/**
 * Takes group and other access away from an existing secret file (one written by an older agent,
 * or copied in by hand). Undefined when there was nothing to do (no such file, or already 0600).
 */
export function tightenSecretFile(file: string): Tightened | undefined {
  let from: number;
  try {
    from = statSync(file).mode & 0o777;
  } catch {
    return undefined; // not there (yet): it is written 0600
  }
  if ((from & 0o077) === 0) return undefined;
  try {
    chmodSync(file, SECRET_FILE_MODE);
    return { done: true, from };
  } catch (err) {
    return { done: false, from, reason: (err as NodeJS.ErrnoException).code ?? (err as Error).message };
  }
}

/**
 * Reads config.json, filling in (and saving) what a first start needs. The default device type is
 * a function: it is only asked for when the file has none (it may need the engine).
 */
export function loadDeviceConfig(file: string, defaults: { deviceType: () => string; listenPort?: number; developmentMode?: boolean }): DeviceConfig {
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
    deviceType: typeof raw.deviceType === 'string' ? raw.deviceType : defaults.deviceType(),
    listenPort: typeof raw.listenPort === 'number' ? raw.listenPort : defaults.listenPort ?? 48484,
    developmentMode: typeof raw.developmentMode === 'boolean' ? raw.developmentMode : defaults.developmentMode ?? true,
    deviceApiKey: typeof raw.deviceApiKey === 'string' && raw.deviceApiKey !== '' ? raw.deviceApiKey : randomBytes(16).toString('hex'),
  };
  if (JSON.stringify(config) !== JSON.stringify(raw)) writeAtomically(file, `${JSON.stringify(config, null, 2)}\n`);
  return config;
}

/**
 * Write to a temp file, fsync, rename: a crash leaves the old or the new file, never a torn one.
 * The file is the owner's alone (0600) from its first byte, whatever the umask or a stale temp file.
 */
export function writeAtomically(file: string, text: string): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', SECRET_FILE_MODE);
  try {
    restrictOpenFile(fd);
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
