/**
 * balenaOS's configuration in a boot partition: config.json (read, merged, written) and the
 * NetworkManager connection files in system-connections/. The same format balena-cli writes, so
 * balenaOS images boot with it and balena's tools read it back.
 */
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { SkiffError } from '../errors/errors.js';
import { closest } from '../text/suggest.js';
import { DEVICE_TYPES, findDeviceType } from '../device-types/device-types.js';
import { FatError } from './fat.js';
import { FileDevice, findBootPartition, type BootPartition, type PartitionScheme } from './partitions.js';

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
export const CONNECTIONS_DIR = 'system-connections';
/** The file balena-cli writes (and looks for when it reconfigures) a WiFi connection in. */
export const WIFI_CONNECTION = `${CONNECTIONS_DIR}/resin-wifi`;
/** Templates balenaOS images ship for it, newest format first. */
const WIFI_TEMPLATES = [WIFI_CONNECTION, `${CONNECTIONS_DIR}/resin-sample.ignore`, `${CONNECTIONS_DIR}/resin-sample`];
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

/** A WPA passphrase is 8-63 characters, or 64 hex digits. */
export function validateWifiKey(key: string): string {
  if (!(key.length >= 8 && key.length <= 63) && !/^[0-9a-f]{64}$/i.test(key)) {
    throw new SkiffError('usage', 'the WiFi key must be 8 to 63 characters (or 64 hex digits)', { hint: 'omit --config-wifi-key for an open network' });
  }
  return key;
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
  const ssid = options.wifiSsid ?? options.base?.wifiSsid;
  const key = options.wifiKey ?? options.base?.wifiKey;
  const type = options.network ?? (ssid !== undefined ? 'wifi' : undefined);
  if (type === undefined) return undefined;
  if (type === 'ethernet') return { type };
  if (ssid === undefined || ssid === '') throw new SkiffError('usage', 'a WiFi network needs its SSID', { hint: 'add --config-wifi-ssid NAME (and --config-wifi-key for a protected network)' });
  if (key !== undefined && key !== '') validateWifiKey(key);
  return { type, ssid, ...(key ? { key } : {}) };
}

/**
 * A NetworkManager keyfile for a WiFi network. With a template (the image's own resin-wifi or
 * resin-sample), only the SSID and passphrase change; an open network has no wifi-security.
 */
export function wifiConnection(ssid: string, key: string | undefined, template?: string): string {
  const sections = parseIni(template ?? defaultWifiConnection());
  setIni(sections, 'connection', 'id', template ? undefined : 'resin-wifi');
  setIni(sections, 'wifi', 'ssid', ssid);
  if (key) {
    setIni(sections, 'wifi-security', 'key-mgmt', sections.get('wifi-security')?.get('key-mgmt') ?? 'wpa-psk');
    setIni(sections, 'wifi-security', 'psk', key);
  } else {
    sections.delete('wifi-security');
  }
  return `${[...sections].map(([name, values]) => [`[${name}]`, ...[...values].map(([k, v]) => `${k}=${v}`)].join('\n')).join('\n\n')}\n`;
}

function defaultWifiConnection(): string {
  return [
    '[connection]', 'id=resin-wifi', 'type=wifi', '',
    '[wifi]', 'hidden=true', 'mode=infrastructure', 'ssid=', '',
    '[wifi-security]', 'auth-alg=open', 'key-mgmt=wpa-psk', 'psk=', '',
    '[ipv4]', 'method=auto', '',
    '[ipv6]', 'addr-gen-mode=stable-privacy', 'method=auto', '',
  ].join('\n');
}

function parseIni(text: string): Map<string, Map<string, string>> {
  const sections = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header?.[1]) {
      current = sections.get(header[1]) ?? new Map<string, string>();
      sections.set(header[1], current);
      continue;
    }
    const eq = line.indexOf('=');
    if (current && eq > 0) current.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  return sections;
}

function setIni(sections: Map<string, Map<string, string>>, section: string, key: string, value: string | undefined): void {
  if (value === undefined) return;
  const values = sections.get(section) ?? new Map<string, string>();
  values.set(key, value);
  sections.set(section, values);
}

/** Fields whose type balenaOS relies on: `config write` converts the value to it. */
const TYPED_FIELDS: Record<string, 'boolean' | 'number' | 'array'> = {
  developmentMode: 'boolean',
  persistentLogging: 'boolean',
  localMode: 'boolean',
  listenPort: 'number',
  applicationId: 'number',
  appUpdatePollInterval: 'number',
  vpnPort: 'number',
  'os.sshKeys': 'array',
};

/**
 * Sets a dotted key (`os.network.connectivity.interval`) as balena-cli does: missing parents
 * become objects and the value is a string, except for fields that are booleans, numbers or
 * arrays (known ones, or the type the key already holds), whose value is converted.
 */
export function setConfigValue(config: BalenaConfig, key: string, value: string): BalenaConfig {
  const parts = key.split('.');
  if (parts.some((p) => p === '' || p === '__proto__' || p === 'constructor' || p === 'prototype')) {
    throw new SkiffError('usage', `'${key}' is not a valid config.json key`);
  }
  const next = structuredClone(config);
  let node: Record<string, unknown> = next;
  for (const part of parts.slice(0, -1)) {
    const child = node[part];
    if (typeof child !== 'object' || child === null || Array.isArray(child)) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  const last = parts.at(-1) ?? key;
  const current = node[last];
  const kind = TYPED_FIELDS[key] ?? (typeof current === 'boolean' ? 'boolean' : typeof current === 'number' ? 'number' : Array.isArray(current) ? 'array' : undefined);
  node[last] = convert(key, value, kind);
  return next;
}

function convert(key: string, value: string, kind: 'boolean' | 'number' | 'array' | undefined): unknown {
  switch (kind) {
    case 'boolean':
      if (value === 'true' || value === 'false') return value === 'true';
      throw new SkiffError('usage', `${key} is true or false, not '${value}'`);
    case 'number':
      if (/^-?\d+(\.\d+)?$/.test(value)) return Number(value);
      throw new SkiffError('usage', `${key} is a number, not '${value}'`);
    case 'array': {
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

// -------------------------------------------------------------------- on a drive or image

export interface BootPartitionInfo {
  index: number;
  scheme: PartitionScheme;
  fatType: 12 | 16 | 32;
  label: string;
  offset: number;
  size: number;
}

export interface ConfigureResult {
  target: string;
  partition: BootPartitionInfo;
  /** balenaOS version: --version, else the image's os-release. */
  osVersion?: string;
  config: BalenaConfig;
  /** Files written in the boot partition, and files removed. */
  written: string[];
  removed: string[];
}

export interface ReadResult {
  target: string;
  partition: BootPartitionInfo;
  config: BalenaConfig;
}

/**
 * Configures an image or drive: merges config.json, writes the WiFi connection (or removes it
 * for `ethernet`). Everything is checked (inputs, space) before the first byte is written.
 */
export async function configureTarget(target: string, options: ConfigureOptions): Promise<ConfigureResult> {
  const network = networkOf(options);
  return withBootPartition(target, 'write', async (boot) => {
    const { fs } = boot;
    const existing = await readConfigIn(boot, target, { optional: true });
    const osRelease = await readText(boot, 'os-release');
    const osVersion = options.version ?? (osRelease ? parseOsRelease(osRelease).VERSION : undefined);
    if (options.dev && osVersion && /\bprod\b/.test(osVersion)) {
      throw new SkiffError('usage', `--dev cannot configure a production balenaOS image (version ${osVersion})`, { hint: 'use a development image, or leave out --dev' });
    }
    const config = mergeConfig(existing ?? {}, options);
    if (config.deviceType === undefined) {
      const manifest = await readText(boot, 'device-type.json');
      const slug = manifest ? deviceTypeOfManifest(manifest) : undefined;
      if (!slug) throw new SkiffError('usage', `no device type for ${target}: neither the image nor --config names one`, { hint: "add --device-type ('skiff devices supported' lists them)" });
      config.deviceType = slug;
    }
    const files = new Map<string, Buffer>([[CONFIG_FILE, Buffer.from(JSON.stringify(config))]]);
    const removed: string[] = [];
    if (network?.type === 'wifi') {
      let template: string | undefined;
      for (const t of WIFI_TEMPLATES) template ??= await readText(boot, t);
      files.set(WIFI_CONNECTION, Buffer.from(wifiConnection(network.ssid ?? '', network.key, template)));
    }
    await ensureSpace(boot, [...files].map(([path, data]) => ({ path, size: data.length })));
    if (network?.type === 'ethernet' && (await fs.remove(WIFI_CONNECTION))) removed.push(WIFI_CONNECTION);
    for (const [path, data] of files) {
      const dir = path.split('/').slice(0, -1).join('/');
      if (dir) await fs.mkdir(dir, { recursive: true });
      await fs.writeFile(path, data);
    }
    return { target, partition: partitionInfo(boot), ...(osVersion ? { osVersion } : {}), config, written: [...files.keys()], removed };
  });
}

/** The config.json in the boot partition of an image or drive. */
export async function readTargetConfig(target: string): Promise<ReadResult> {
  return withBootPartition(target, 'read', async (boot) => {
    const config = await readConfigIn(boot, target, { optional: false });
    return { target, partition: partitionInfo(boot), config: config ?? {} };
  });
}

/** Sets one (dotted) key of the config.json on an image or drive. */
export async function writeTargetConfigValue(target: string, key: string, value: string): Promise<ReadResult> {
  return withBootPartition(target, 'write', async (boot) => {
    const config = setConfigValue((await readConfigIn(boot, target, { optional: true })) ?? {}, key, value);
    await writeConfigIn(boot, config);
    return { target, partition: partitionInfo(boot), config };
  });
}

/** Replaces the config.json on an image or drive with `config`. */
export async function injectTargetConfig(target: string, config: BalenaConfig): Promise<ReadResult> {
  return withBootPartition(target, 'write', async (boot) => {
    await writeConfigIn(boot, config);
    return { target, partition: partitionInfo(boot), config };
  });
}

/** The device type slug a balenaOS boot partition's device-type.json names. */
function deviceTypeOfManifest(text: string): string | undefined {
  try {
    const manifest = JSON.parse(text) as { slug?: unknown };
    return typeof manifest.slug === 'string' && manifest.slug !== '' ? manifest.slug : undefined;
  } catch {
    return undefined;
  }
}

async function writeConfigIn(boot: BootPartition, config: BalenaConfig): Promise<void> {
  const data = Buffer.from(JSON.stringify(config));
  await ensureSpace(boot, [{ path: CONFIG_FILE, size: data.length }]);
  await boot.fs.writeFile(CONFIG_FILE, data);
}

async function ensureSpace(boot: BootPartition, files: Array<{ path: string; size: number }>): Promise<void> {
  const { free, needed } = await boot.fs.shortfall(files);
  if (needed > free) throw new SkiffError('error', `the boot partition is full: ${free} bytes free, ${needed} needed`, { hint: 'remove files from it, or use a smaller config' });
}

async function readText(boot: BootPartition, path: string): Promise<string | undefined> {
  const entry = await boot.fs.stat(path);
  if (!entry || entry.isDirectory) return undefined;
  return (await boot.fs.readFile(path)).toString('utf8');
}

async function readConfigIn(boot: BootPartition, target: string, options: { optional: boolean }): Promise<BalenaConfig | undefined> {
  const text = await readText(boot, CONFIG_FILE);
  if (text === undefined) {
    if (options.optional) return undefined;
    throw new SkiffError('usage', `${target} has no config.json in its boot partition`, { hint: "configure it first with 'skiff os configure' or 'skiff config inject'" });
  }
  return parseConfigJson(text, `${target}:${CONFIG_FILE}`);
}

function partitionInfo(boot: BootPartition): BootPartitionInfo {
  return { index: boot.partition.index, scheme: boot.scheme, fatType: boot.fatType, label: boot.label, offset: boot.partition.offset, size: boot.partition.size };
}

/**
 * Opens the target, finds its boot partition and runs `fn`; in write mode the FATs and FSInfo
 * are flushed and the data synced to the drive afterwards. A drive with a mounted partition is
 * refused before anything is opened for writing (the kernel would overwrite our changes).
 */
async function withBootPartition<T>(target: string, mode: 'read' | 'write', fn: (boot: BootPartition) => Promise<T>): Promise<T> {
  if (mode === 'write') await refuseMounted(target);
  const device = await FileDevice.open(target, { write: mode === 'write' });
  try {
    const boot = await findBootPartition(device, target);
    const result = await fn(boot);
    if (mode === 'write') {
      await boot.fs.flush();
      await device.sync();
    }
    return result;
  } catch (err) {
    if (err instanceof FatError) {
      if (err.code === 'noSpace' && err.space) throw new SkiffError('error', `the boot partition is full: ${err.space.free} bytes free, ${err.space.needed} needed`);
      throw new SkiffError('error', `${target}: boot partition: ${err.message}`, { cause: err });
    }
    throw err;
  } finally {
    await device.close();
  }
}

/** Refuses a block device one of whose partitions (or itself) is mounted. */
async function refuseMounted(target: string): Promise<void> {
  let real: string;
  let mounts: string;
  try {
    real = await realpath(target);
    if (!real.startsWith('/dev/')) return;
    mounts = readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return;
  }
  for (const line of mounts.split('\n')) {
    const [source, mountPoint] = line.split(' ');
    if (!source?.startsWith('/dev/')) continue;
    let dev = source;
    try {
      dev = await realpath(source);
    } catch {
      // A vanished device cannot be ours.
    }
    if (dev === real || (dev.startsWith(real) && /^p?\d+$/.test(dev.slice(real.length)))) {
      throw new SkiffError('error', `${dev} is mounted at ${mountPoint?.replace(/\\040/g, ' ')}`, { hint: `unmount it first (umount ${dev})` });
    }
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
