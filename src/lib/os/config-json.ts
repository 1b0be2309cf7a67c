/**
 * config.json, balenaOS's configuration file in the boot partition: its model, the merge `os
 * configure` does, the dotted-key writes of `config write`, and the checks of what people type.
 * The format is balena-cli's (balena-io/balena-cli, `config write`, `os configure`), so balenaOS
 * images boot with it and balena's tools read it back. Pure, apart from reading files named on
 * the command line.
 */
import { readFile } from 'node:fs/promises';
import { SkiffError } from '../errors/errors.js';
import { closest } from '../text/suggest.js';
import { DEVICE_TYPES, findDeviceType } from '../device-types/device-types.js';
import { validateSsid, validateWifiKey } from './network-connections.js';

/** config.json: balenaOS's documented fields, and whatever else it holds (kept as it is). */
export interface BalenaConfig {
  deviceType?: string;
  applicationName?: string;
  applicationId?: number;
  hostname?: string;
  initialDeviceName?: string;
  developmentMode?: boolean;
  persistentLogging?: boolean;
  listenPort?: number;
  apiEndpoint?: string;
  /** The provisioning key a device registers itself with. */
  apiKey?: string;
  wifiSsid?: string;
  wifiKey?: string;
  os?: { sshKeys?: string[]; [key: string]: unknown };
  [key: string]: unknown;
}

export const CONFIG_FILE = 'config.json';
const DEFAULT_LISTEN_PORT = 48484;

export type NetworkType = 'ethernet' | 'wifi';

/** What `os configure` was asked to set; anything left undefined keeps the image's value. */
export interface ConfigureOptions {
  /** A config.json given with --config (its fields come before the image's). */
  base?: BalenaConfig;
  fleet?: string;
  deviceType?: string;
  /** The balenaOS version, when the image's os-release does not say (or to override it). */
  version?: string;
  dev?: boolean;
  hostname?: string;
  initialDeviceName?: string;
  sshKeys?: string[];
  network?: NetworkType;
  wifiSsid?: string;
  wifiKey?: string;
  provisioningKey?: string;
  apiEndpoint?: string;
}

// -------------------------------------------------------------------- validation (pure)

/** The canonical slug for a device type people typed; unknown is a usage error with a did-you-mean. */
export function canonicalDeviceType(input: string): string {
  const found = findDeviceType(input);
  if (found) return found.slug;
  const names = DEVICE_TYPES.flatMap((d) => [d.slug, ...(d.aliases ?? [])]);
  const guess = closest(input, names);
  const slug = guess && findDeviceType(guess)?.slug;
  throw new SkiffError('usage', `unknown device type '${input}'${slug ? ` (did you mean '${slug}'?)` : ''}`, { hint: "'skiff devices supported' lists them" });
}

/** A hostname balenaOS accepts: one DNS label of letters, digits and hyphens. */
export function validateHostname(name: string): string {
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i.test(name)) {
    throw new SkiffError('usage', `'${name}' is not a valid hostname`, { hint: 'use 1-63 letters, digits and hyphens, not starting or ending with a hyphen' });
  }
  return name;
}

/**
 * Parses config.json text; invalid JSON is a SkiffError at `where:line:col`, and anything but an
 * object is one too.
 */
export function parseConfigJson(text: string, where: string): BalenaConfig {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // Node's messages do not always carry a position: find it with our own scan.
    const found = jsonErrorAt(text) ?? { offset: text.length, reason: (err as Error).message };
    const before = text.slice(0, found.offset).split('\n');
    const line = before.length;
    const col = (before.at(-1)?.length ?? 0) + 1;
    throw new SkiffError('usage', `invalid JSON: ${found.reason}`, { where: `${where}:${line}:${col}` });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SkiffError('usage', 'config.json must hold a JSON object', { where });
  }
  return value as BalenaConfig;
}

/** Where (offset) and why JSON text is invalid; undefined when it is valid. */
export function jsonErrorAt(text: string): { offset: number; reason: string } | undefined {
  let i = 0;
  const fail = (reason: string): never => {
    throw { offset: i, reason };
  };
  const space = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i] ?? '')) i++;
  };
  const describe = () => (i >= text.length ? 'unexpected end of input' : `unexpected '${text[i]}'`);
  const literal = (word: string) => {
    if (text.startsWith(word, i)) i += word.length;
    else fail(describe());
  };
  const string = () => {
    i++;
    while (i < text.length && text[i] !== '"') {
      const ch = text.charCodeAt(i);
      if (ch < 0x20) fail('control character in string');
      if (text[i] === '\\') {
        i++;
        if (text[i] === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) fail('invalid \\u escape');
          i += 4;
        } else if (!'"\\/bfnrt'.includes(text[i] ?? 'x')) fail('invalid escape');
      }
      i++;
    }
    if (i >= text.length) fail('unterminated string');
    i++;
  };
  const found = () => describe().replace('unexpected ', '');
  /** `{…}` or `[…]`: items separated by commas up to `close`. */
  const sequence = (close: string, item: () => void) => {
    i++;
    space();
    if (text[i] === close) {
      i++;
      return;
    }
    for (;;) {
      item();
      space();
      if (text[i] === close) {
        i++;
        return;
      }
      if (text[i] !== ',') fail(`expected ',' or '${close}', found ${found()}`);
      i++;
    }
  };
  const member = () => {
    space();
    if (text[i] !== '"') fail(`expected a property name in double quotes, found ${found()}`);
    string();
    space();
    if (text[i] !== ':') fail(`expected ':' after the property name, found ${found()}`);
    i++;
    value();
  };
  const value = (): void => {
    space();
    const ch = text[i];
    if (ch === '{') return sequence('}', member);
    if (ch === '[') return sequence(']', value);
    if (ch === '"') return string();
    if (ch === 't') return literal('true');
    if (ch === 'f') return literal('false');
    if (ch === 'n') return literal('null');
    const number = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (number) {
      i += number[0].length;
      return;
    }
    fail(describe());
  };
  try {
    value();
    space();
    if (i < text.length) fail(`unexpected '${text[i]}' after the JSON value`);
    return undefined;
  } catch (err) {
    return err as { offset: number; reason: string };
  }
}

/** Reads a config.json file given on the command line. */
export async function readConfigFile(file: string): Promise<BalenaConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw fileError(file, err);
  }
  return parseConfigJson(text, file);
}

/** The public keys in `--ssh-key` files: one per non-empty, non-comment line. */
export async function readSshKeys(files: string[]): Promise<string[]> {
  const keys: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw fileError(file, err);
    }
    const found = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
    if (found.length === 0 || found.some((k) => !/^(ssh-|ecdsa-|sk-)\S+ \S+/.test(k))) {
      throw new SkiffError('usage', `${file} is not an SSH public key file`, { hint: 'pass the .pub file, e.g. ~/.ssh/id_ed25519.pub' });
    }
    keys.push(...found);
  }
  return keys;
}

function fileError(file: string, err: unknown): SkiffError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new SkiffError('usage', `${file} does not exist`);
  if (code === 'EISDIR') return new SkiffError('usage', `${file} is a directory`);
  return new SkiffError('usage', `cannot read ${file}: ${(err as Error).message}`);
}

/** os-release's KEY=value lines (quotes removed). */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m?.[1] && m[2] !== undefined) out[m[1]] = m[2].replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1');
  }
  return out;
}

// -------------------------------------------------------------------- the model (pure)

/**
 * The config.json to write: the image's current one, then --config's fields, then each flag
 * given. The network choice itself goes to a connection file (see wifiConnection).
 */
export function mergeConfig(existing: BalenaConfig, options: ConfigureOptions): BalenaConfig {
  const config: BalenaConfig = { ...existing, ...(options.base ?? {}) };
  if (options.fleet !== undefined) {
    // balena accepts a fleet's numeric id in the same flag.
    if (/^\d+$/.test(options.fleet)) config.applicationId = Number(options.fleet);
    else config.applicationName = options.fleet;
  }
  if (options.deviceType !== undefined) config.deviceType = options.deviceType;
  if (options.dev !== undefined) config.developmentMode = options.dev;
  if (options.hostname !== undefined) config.hostname = options.hostname;
  if (options.initialDeviceName !== undefined) config.initialDeviceName = options.initialDeviceName;
  if (options.provisioningKey !== undefined) config.apiKey = options.provisioningKey;
  if (options.apiEndpoint !== undefined) config.apiEndpoint = options.apiEndpoint;
  if (options.sshKeys && options.sshKeys.length > 0) {
    const os = typeof config.os === 'object' && config.os !== null ? { ...config.os } : {};
    const current = Array.isArray(os.sshKeys) ? os.sshKeys.filter((k): k is string => typeof k === 'string') : [];
    os.sshKeys = [...current, ...options.sshKeys.filter((k) => !current.includes(k))];
    config.os = os;
  }
  config.listenPort ??= DEFAULT_LISTEN_PORT;
  return config;
}

/** The network the options ask for: the flag, else WiFi when an SSID is given (flag or --config). */
export function networkOf(options: ConfigureOptions): { type: NetworkType; ssid?: string; key?: string } | undefined {
  const ssid = textField('wifiSsid', options.wifiSsid ?? options.base?.wifiSsid);
  const key = textField('wifiKey', options.wifiKey ?? options.base?.wifiKey);
  const type = options.network ?? (ssid !== undefined ? 'wifi' : undefined);
  if (type === undefined) return undefined;
  if (type === 'ethernet') return { type };
  if (ssid === undefined || ssid === '') throw new SkiffError('usage', 'a WiFi network needs its SSID', { hint: 'add --config-wifi-ssid NAME (and --config-wifi-key for a protected network)' });
  validateSsid(ssid);
  if (key !== undefined && key !== '') validateWifiKey(key);
  return { type, ssid, ...(key ? { key } : {}) };
}

/** A string field of --config's file, which may hold anything under that name. */
function textField(name: string, value: unknown): string | undefined {
  if (value === undefined || typeof value === 'string') return value;
  throw new SkiffError('usage', `${name} in --config must be a string, not ${JSON.stringify(value)}`);
}

/** The types `config write` converts to for the fields balenaOS reads as other than strings. */
export type TypedKind = 'boolean' | 'number' | 'list';

/**
 * Fields whose type balenaOS relies on (the supervisor's config schema reads them as these,
 * os-config reads os.sshKeys as a list): `config write` converts the value to it.
 */
const TYPED_FIELDS: Record<string, TypedKind> = {
  developmentMode: 'boolean',
  persistentLogging: 'boolean',
  localMode: 'boolean',
  listenPort: 'number',
  applicationId: 'number',
  appUpdatePollInterval: 'number',
  vpnPort: 'number',
  'os.sshKeys': 'list',
};

export type JsonKind = 'string' | TypedKind | 'object' | 'null';

/** A JSON value's type, as the refusals name it. */
function kindOf(value: unknown): JsonKind {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'list';
  const t = typeof value;
  return t === 'number' || t === 'boolean' || t === 'object' ? t : 'string';
}

/** A field of known type stored as another type: `config inject` warns of it, `config write` repairs it. */
export interface Mistyped {
  key: string;
  /** The type stored. */
  held: JsonKind;
  /** The type balenaOS reads it as. */
  reads: TypedKind;
}

/** What `config write` did: the new config.json, and the mistyped field it repaired, if any. */
export interface ConfigValueWrite {
  config: BalenaConfig;
  repaired?: Mistyped;
}

/**
 * The fields of known type that `config` holds as another type (`"listenPort": "48484"`, as
 * balena-cli's `config write` stores every value). A `null` counts as unset; a field under a
 * parent that is not an object is not looked at.
 */
export function mistypedFields(config: BalenaConfig): Mistyped[] {
  const found: Mistyped[] = [];
  for (const [key, reads] of Object.entries(TYPED_FIELDS)) {
    let value: unknown = config;
    for (const part of key.split('.')) value = kindOf(value) === 'object' ? (value as Record<string, unknown>)[part] : undefined;
    if (value === undefined || value === null) continue;
    const held = kindOf(value);
    if (held !== reads) found.push({ key, held, reads });
  }
  return found;
}

const REPLACE_HINT = "'skiff config read' shows the file; 'skiff config inject' replaces it whole";

/**
 * Sets a dotted key (`os.network.connectivity.interval`) as balena-cli does: missing parents
 * become objects and the value is a string, except for fields that are booleans, numbers or
 * lists (known ones, or the type the key already holds), whose value is converted.
 *
 * balena-cli (lodash `setWith`) silently drops such a write or replaces what is in the way,
 * depending on the value found there; here a value of another type is not replaced: a key under a
 * field that is not an object (`hostname.sub` over a string hostname), an object replaced by a
 * value, or, for a field of unknown type, a value that does not convert to the stored type, is a
 * usage error naming the key and both types. The one exception is a field of known type stored as
 * another type (`"listenPort": "48484"`): a value that converts to the type balenaOS reads repairs
 * it, and the result says so (`repaired`). A `null` counts as unset. Numeric segments
 * (`os.udevRules.101`) name object fields, as in balena-cli, never list items.
 *
 * @example setConfigValue({ os: {} }, 'os.network.connectivity.interval', '300').config
 *   // → { os: { network: { connectivity: { interval: '300' } } } }
 * @example setConfigValue({ listenPort: '48484' }, 'listenPort', '48485')
 *   // → { config: { listenPort: 48485 }, repaired: { key: 'listenPort', held: 'string', reads: 'number' } }
 */
export function setConfigValue(config: BalenaConfig, key: string, value: string): ConfigValueWrite {
  const parts = key.split('.');
  if (parts.some((p) => p === '' || p === '__proto__' || p === 'constructor' || p === 'prototype')) {
    throw new SkiffError('usage', `'${key}' is not a valid config.json key`);
  }
  const next = structuredClone(config);
  let node: Record<string, unknown> = next;
  for (const [i, part] of parts.slice(0, -1).entries()) {
    const child = node[part];
    if (child === undefined || child === null) node[part] = {};
    else if (kindOf(child) !== 'object') {
      const parent = parts.slice(0, i + 1).join('.');
      throw new SkiffError('usage', `cannot set ${key}: ${parent} holds a ${kindOf(child)}, not an object`, { hint: REPLACE_HINT });
    }
    node = node[part] as Record<string, unknown>;
  }
  const last = parts.at(-1) ?? key;
  const current = node[last];
  const held = current === undefined || current === null ? undefined : kindOf(current);
  const reads = TYPED_FIELDS[key];
  if (held === 'object') {
    throw new SkiffError('usage', `cannot set ${key}: it holds an object, which a ${reads ?? 'string'} would replace`, { hint: `set its fields (${key}.NAME) instead, or use 'skiff config inject'` });
  }
  // A known field takes its known type whatever is stored; an unknown one keeps its stored type.
  node[last] = convert(key, value, reads ?? (held === 'string' || held === 'null' ? undefined : held));
  return { config: next, ...(reads && held && held !== reads ? { repaired: { key, held, reads } } : {}) };
}

function convert(key: string, value: string, kind: TypedKind | undefined): unknown {
  switch (kind) {
    case 'boolean':
      if (value === 'true' || value === 'false') return value === 'true';
      throw new SkiffError('usage', `${key} is true or false, not '${value}'`);
    case 'number':
      if (/^-?\d+(\.\d+)?$/.test(value)) return Number(value);
      throw new SkiffError('usage', `${key} is a number, not '${value}'`);
    case 'list': {
      if (!value.trim().startsWith('[')) return [value];
      const parsed = parseJsonValue(value);
      if (!Array.isArray(parsed)) throw new SkiffError('usage', `${key} is a list: give one value or a JSON array`);
      return parsed;
    }
    default:
      return value;
  }
}

function parseJsonValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new SkiffError('usage', `invalid JSON value: ${(err as Error).message}`);
  }
}

/**
 * A config.json from options alone (`os build-config`): as `os configure` would merge it into an
 * empty image, with the WiFi network in `wifiSsid`/`wifiKey` as balena's generated configs carry
 * it, so `os configure --config` turns it into a connection file.
 */
export function buildConfig(options: ConfigureOptions): BalenaConfig {
  const config = mergeConfig({}, options);
  if (config.deviceType === undefined) throw new SkiffError('usage', 'a config.json needs a device type', { hint: 'add --device-type' });
  const network = networkOf(options);
  if (network?.type === 'wifi') {
    config.wifiSsid = network.ssid;
    if (network.key) config.wifiKey = network.key;
  }
  return config;
}
