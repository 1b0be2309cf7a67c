/**
 * What the `os configure` and `config read|write|inject` commands do to an image file or a drive:
 * config.json (config-json.ts) and the WiFi connection (network-connections.ts) written into its
 * boot partition (boot-partition.ts), everything checked before the first byte is written.
 */
import { SkiffError } from '../errors/errors.js';
import { ensureSpace, partitionInfo, readText, withBootPartition, type BootPartition, type BootPartitionInfo } from './boot-partition.js';
import { CONFIG_FILE, mergeConfig, mistypedFields, networkOf, parseConfigJson, parseOsRelease, setConfigValue, type BalenaConfig, type ConfigureOptions, type Mistyped } from './config-json.js';
import { WIFI_CONNECTION, WIFI_TEMPLATES, wifiConnection } from './network-connections.js';

export type { BootPartitionInfo } from './boot-partition.js';

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

export interface WriteResult extends ReadResult {
  /** The field of known type that was stored as another type, and that this write repaired. */
  repaired?: Mistyped;
}

export interface InjectResult extends ReadResult {
  /**
   * Fields of known type the file holds as another type. They are written as given: balena-cli
   * stores every `config write` value as a string and injects any JSON object, and balenaOS's
   * supervisor converts such strings, so refusing them would refuse files balena-cli writes.
   */
  mistyped: Mistyped[];
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

/** Sets one (dotted) key of the config.json on an image or drive (see setConfigValue). */
export async function writeTargetConfigValue(target: string, key: string, value: string): Promise<WriteResult> {
  return withBootPartition(target, 'write', async (boot) => {
    const { config, repaired } = setConfigValue((await readConfigIn(boot, target, { optional: true })) ?? {}, key, value);
    await writeConfigIn(boot, config);
    return { target, partition: partitionInfo(boot), config, ...(repaired ? { repaired } : {}) };
  });
}

/** Replaces the config.json on an image or drive with `config`, naming its mistyped fields. */
export async function injectTargetConfig(target: string, config: BalenaConfig): Promise<InjectResult> {
  return withBootPartition(target, 'write', async (boot) => {
    await writeConfigIn(boot, config);
    return { target, partition: partitionInfo(boot), config, mistyped: mistypedFields(config) };
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

async function readConfigIn(boot: BootPartition, target: string, options: { optional: boolean }): Promise<BalenaConfig | undefined> {
  const text = await readText(boot, CONFIG_FILE);
  if (text === undefined) {
    if (options.optional) return undefined;
    throw new SkiffError('usage', `${target} has no config.json in its boot partition`, { hint: "configure it first with 'skiff os configure' or 'skiff config inject'" });
  }
  return parseConfigJson(text, `${target}:${CONFIG_FILE}`);
}

