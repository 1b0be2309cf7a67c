/**
 * Device types Skiff knows offline: slug (balena's), name, balena architecture and Docker platform.
 * Slugs are balena's, so `--deviceType raspberrypi4-64` means the same in both tools. The table
 * itself, with its source and date, is in balena-device-types.ts.
 */
import { SkiffError } from '../errors/errors.js';
import { CURRENT_DEVICE_TYPES, DISCONTINUED_DEVICE_TYPES } from './balena-device-types.js';
import { closest } from '../text/suggest.js';

/** balena's architecture names. */
export type Arch = 'rpi' | 'armv7hf' | 'aarch64' | 'amd64' | 'i386';

export interface DeviceType {
  slug: string;
  name: string;
  arch: Arch;
  /** Other names people type for it. */
  aliases?: string[];
  /** balena no longer supports it (no new OS releases); still accepted so existing fleets build. */
  discontinued?: boolean;
}

export interface Platform {
  os: 'linux';
  architecture: 'arm' | 'arm64' | 'amd64' | '386';
  variant?: 'v6' | 'v7' | 'v8';
}

export const ARCHES: Record<Arch, { platform: Platform; description: string; qemu?: string }> = {
  rpi: { platform: { os: 'linux', architecture: 'arm', variant: 'v6' }, description: 'ARMv6 (Raspberry Pi 1 / Zero)', qemu: 'arm' },
  armv7hf: { platform: { os: 'linux', architecture: 'arm', variant: 'v7' }, description: 'ARMv7 hard-float', qemu: 'arm' },
  aarch64: { platform: { os: 'linux', architecture: 'arm64' }, description: '64-bit ARM', qemu: 'aarch64' },
  amd64: { platform: { os: 'linux', architecture: 'amd64' }, description: '64-bit x86' },
  i386: { platform: { os: 'linux', architecture: '386' }, description: '32-bit x86' },
};

/** Names Skiff accepts besides balena's own slugs and aliases. */
const SKIFF_ALIASES: Record<string, string[]> = {
  'raspberry-pi': ['rpi', 'raspberrypi0', 'raspberrypi-zero'],
  'raspberry-pi2': ['rpi2'],
  raspberrypi3: ['rpi3'],
  'raspberrypi3-64': ['rpi3-64'],
  'raspberrypi4-64': ['rpi4', 'raspberrypi4', 'rpi4-64'],
  raspberrypi5: ['rpi5'],
  'raspberrypi0-2w-64': ['rpi0-2w', 'raspberrypi-zero2w'],
  'raspberrypicm4-ioboard': ['cm4', 'rpi-cm4'],
  'raspberrypi400-64': ['rpi400'],
  'beaglebone-black': ['bbb'],
  'jetson-orin-nano-devkit-nvme': ['jetson-orin-nano', 'jetson-orin'],
  'genericx86-64-ext': ['generic-x86-64', 'x86-64', 'x86_64'],
  'generic-aarch64': ['aarch64', 'arm64'],
  'generic-amd64': ['amd64'],
  'qemux86-64': ['qemu-x86-64', 'qemu'],
  qemux86: ['qemu-x86'],
};

function withSkiffAliases(list: readonly DeviceType[]): DeviceType[] {
  return list.map((d) => {
    const aliases = [...new Set([...(d.aliases ?? []), ...(SKIFF_ALIASES[d.slug] ?? [])])];
    return aliases.length > 0 ? { ...d, aliases } : d;
  });
}

/** The boards most people have, first in lists and prompts; the others follow by slug. */
const COMMON_FIRST = [
  'raspberry-pi', 'raspberry-pi2', 'raspberrypi3', 'raspberrypi3-64', 'raspberrypi4-64', 'raspberrypi5', 'raspberrypi0-2w-64', 'raspberrypicm4-ioboard',
  'beaglebone-black', 'jetson-nano', 'jetson-orin-nano-devkit-nvme', 'jetson-agx-orin-devkit', 'intel-nuc', 'genericx86-64-ext', 'generic-aarch64', 'generic-amd64',
];

function commonFirst(list: readonly DeviceType[]): DeviceType[] {
  const rank = (d: DeviceType) => {
    const i = COMMON_FIRST.indexOf(d.slug);
    return i < 0 ? COMMON_FIRST.length : i;
  };
  // Slugs are [a-z0-9-], where code-point order is the collation's order; localeCompare would page
  // in ICU's collation data (some 3 MB of the agent's resident memory, which loads this module).
  return [...list].sort((a, b) => rank(a) - rank(b) || (a.slug < b.slug ? -1 : a.slug > b.slug ? 1 : 0));
}

/** The device types balena supports today: what `skiff devices supported` lists. */
export const DEVICE_TYPES: readonly DeviceType[] = commonFirst(withSkiffAliases(CURRENT_DEVICE_TYPES));

/** Every device type Skiff builds for: today's, then the discontinued ones existing fleets may still use. */
export const ALL_DEVICE_TYPES: readonly DeviceType[] = [...DEVICE_TYPES, ...withSkiffAliases(DISCONTINUED_DEVICE_TYPES).map((d) => ({ ...d, discontinued: true }))];

/** Accepts the architecture's common other names (`arm64`, `x86_64`, `armhf`...). */
const ARCH_ALIASES: Record<string, Arch> = {
  rpi: 'rpi', armv6: 'rpi', armv6l: 'rpi', armel: 'rpi',
  armv7hf: 'armv7hf', armv7: 'armv7hf', armv7l: 'armv7hf', armhf: 'armv7hf', arm: 'armv7hf',
  aarch64: 'aarch64', arm64: 'aarch64', armv8: 'aarch64',
  amd64: 'amd64', x86_64: 'amd64', 'x86-64': 'amd64', x64: 'amd64',
  i386: 'i386', '386': 'i386', x86: 'i386', i686: 'i386',
};

export function findDeviceType(slug: string): DeviceType | undefined {
  const s = slug.toLowerCase();
  return ALL_DEVICE_TYPES.find((d) => d.slug === s) ?? ALL_DEVICE_TYPES.find((d) => d.aliases?.includes(s));
}

export function parseArch(name: string): Arch | undefined {
  return ARCH_ALIASES[name.toLowerCase()];
}

export interface BuildTarget {
  deviceType: DeviceType;
  arch: Arch;
  platform: Platform;
}

/** `linux/arm/v7` */
export function platformString(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** The default device type for an architecture when only --arch is given. */
const DEFAULT_FOR_ARCH: Record<Arch, string> = {
  rpi: 'raspberry-pi',
  armv7hf: 'raspberrypi3',
  aarch64: 'generic-aarch64',
  amd64: 'intel-nuc',
  i386: 'qemux86',
};

/**
 * Resolves --deviceType / --arch into one target. Unknown names get a did-you-mean; an arch that
 * contradicts the device type is an error rather than a silent guess.
 */
export function resolveTarget(options: { deviceType?: string; arch?: string; defaultArch?: Arch }): BuildTarget {
  let arch: Arch | undefined;
  if (options.arch !== undefined) {
    arch = parseArch(options.arch);
    if (!arch) {
      const suggestion = closest(options.arch, Object.keys(ARCH_ALIASES));
      throw new SkiffError('usage', `unknown architecture '${options.arch}'`, {
        hint: suggestion ? `did you mean '${suggestion}'? Known: ${Object.keys(ARCHES).join(', ')}` : `known architectures: ${Object.keys(ARCHES).join(', ')}`,
      });
    }
  }
  let deviceType: DeviceType | undefined;
  if (options.deviceType !== undefined) {
    deviceType = findDeviceType(options.deviceType);
    if (!deviceType) {
      const names = ALL_DEVICE_TYPES.flatMap((d) => [d.slug, ...(d.aliases ?? [])]);
      const suggestion = closest(options.deviceType, names);
      const slug = suggestion ? findDeviceType(suggestion)?.slug : undefined;
      throw new SkiffError('usage', `unknown device type '${options.deviceType}'`, {
        hint: slug ? `did you mean '${slug}'? 'skiff devices supported' lists them all` : `'skiff devices supported' lists the known device types`,
      });
    }
    if (arch && arch !== deviceType.arch) {
      throw new SkiffError('usage', `--arch ${options.arch} does not match device type '${deviceType.slug}', which is ${deviceType.arch}`, {
        hint: `drop --arch, or pass --arch ${deviceType.arch}`,
      });
    }
  }
  arch ??= deviceType?.arch ?? options.defaultArch ?? 'amd64';
  const dt = deviceType ?? findDeviceType(DEFAULT_FOR_ARCH[arch]);
  if (!dt) throw new Error(`no default device type for ${arch}`);
  return { deviceType: dt, arch, platform: ARCHES[arch].platform };
}

/** Maps an engine's `Architecture` (docker info / image inspect) to ours. */
export function archFromDocker(architecture: string, variant?: string): Arch | undefined {
  switch (architecture) {
    case 'amd64': case 'x86_64': return 'amd64';
    case 'arm64': case 'aarch64': return 'aarch64';
    case '386': case 'i386': case 'i686': return 'i386';
    case 'arm': case 'armv7l': case 'armhf': return variant === 'v6' ? 'rpi' : 'armv7hf';
    case 'armv6l': return 'rpi';
    default: return undefined;
  }
}

/** The build arguments BuildKit sets on every build, by name. */
export const AUTOMATIC_PLATFORM_ARGS = ['TARGETPLATFORM', 'TARGETOS', 'TARGETARCH', 'TARGETVARIANT', 'BUILDPLATFORM', 'BUILDOS', 'BUILDARCH', 'BUILDVARIANT'] as const;

/**
 * BuildKit's automatic platform arguments (`ARG TARGETARCH` in a Dockerfile written for buildx),
 * which the classic builder does not set: TARGET* from the device's platform, BUILD* from the
 * engine's. Variants are empty where buildx leaves them empty (arm64, amd64, 386).
 * @example automaticPlatformArgs(ARCHES.armv7hf.platform, ARCHES.amd64.platform).TARGETPLATFORM === 'linux/arm/v7'
 */
export function automaticPlatformArgs(target: Platform, build: Platform): Record<(typeof AUTOMATIC_PLATFORM_ARGS)[number], string> {
  const variant = (p: Platform) => (p.architecture === 'arm' ? (p.variant ?? '') : '');
  const full = (p: Platform) => `${p.os}/${p.architecture}${variant(p) ? `/${variant(p)}` : ''}`;
  return {
    TARGETPLATFORM: full(target),
    TARGETOS: target.os,
    TARGETARCH: target.architecture,
    TARGETVARIANT: variant(target),
    BUILDPLATFORM: full(build),
    BUILDOS: build.os,
    BUILDARCH: build.architecture,
    BUILDVARIANT: variant(build),
  };
}
