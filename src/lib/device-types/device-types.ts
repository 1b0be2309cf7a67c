/**
 * Device types Skiff knows offline: slug (balena's), name, balena architecture and Docker platform.
 * Slugs are balena's, so `--deviceType raspberrypi4-64` means the same in both tools.
 */
import { SkiffError } from '../errors/errors.js';
import { closest } from '../text/suggest.js';

/** balena's architecture names. */
export type Arch = 'rpi' | 'armv7hf' | 'aarch64' | 'amd64' | 'i386';

export interface DeviceType {
  slug: string;
  name: string;
  arch: Arch;
  /** Other names people type for it. */
  aliases?: string[];
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

export const DEVICE_TYPES: readonly DeviceType[] = [
  { slug: 'raspberry-pi', name: 'Raspberry Pi (v1 / Zero / Zero W)', arch: 'rpi', aliases: ['rpi', 'raspberrypi', 'raspberrypi0', 'raspberrypi-zero'] },
  { slug: 'raspberry-pi2', name: 'Raspberry Pi 2', arch: 'armv7hf', aliases: ['raspberrypi2', 'rpi2'] },
  { slug: 'raspberrypi3', name: 'Raspberry Pi 3', arch: 'armv7hf', aliases: ['rpi3'] },
  { slug: 'raspberrypi3-64', name: 'Raspberry Pi 3 (64-bit OS)', arch: 'aarch64', aliases: ['rpi3-64'] },
  { slug: 'raspberrypi4-64', name: 'Raspberry Pi 4 (64-bit OS)', arch: 'aarch64', aliases: ['rpi4', 'raspberrypi4', 'rpi4-64'] },
  { slug: 'raspberrypi5', name: 'Raspberry Pi 5', arch: 'aarch64', aliases: ['rpi5'] },
  { slug: 'raspberrypi0-2w-64', name: 'Raspberry Pi Zero 2 W (64-bit OS)', arch: 'aarch64', aliases: ['rpi0-2w', 'raspberrypi-zero2w'] },
  { slug: 'raspberrypicm4-ioboard', name: 'Raspberry Pi CM4 IO Board', arch: 'aarch64', aliases: ['cm4', 'rpi-cm4'] },
  { slug: 'raspberrypi400-64', name: 'Raspberry Pi 400', arch: 'aarch64', aliases: ['rpi400'] },
  { slug: 'beaglebone-black', name: 'BeagleBone Black', arch: 'armv7hf', aliases: ['bbb', 'beaglebone'] },
  { slug: 'beaglebone-green', name: 'BeagleBone Green', arch: 'armv7hf' },
  { slug: 'jetson-nano', name: 'NVIDIA Jetson Nano', arch: 'aarch64' },
  { slug: 'jetson-orin-nano-devkit-nvme', name: 'NVIDIA Jetson Orin Nano Devkit NVMe', arch: 'aarch64', aliases: ['jetson-orin-nano', 'jetson-orin'] },
  { slug: 'jetson-agx-orin-devkit', name: 'NVIDIA Jetson AGX Orin Devkit', arch: 'aarch64' },
  { slug: 'intel-nuc', name: 'Intel NUC / generic x86-64', arch: 'amd64', aliases: ['nuc'] },
  { slug: 'genericx86-64-ext', name: 'Generic x86_64 (GPT)', arch: 'amd64', aliases: ['generic-x86-64', 'x86-64', 'x86_64'] },
  { slug: 'generic-aarch64', name: 'Generic AARCH64', arch: 'aarch64', aliases: ['aarch64', 'arm64'] },
  { slug: 'generic-amd64', name: 'Generic AMD64 (GPT, UEFI)', arch: 'amd64', aliases: ['amd64'] },
  { slug: 'qemux86-64', name: 'QEMU X86 64bit', arch: 'amd64', aliases: ['qemu-x86-64', 'qemu'] },
  { slug: 'qemux86', name: 'QEMU X86 32bit', arch: 'i386', aliases: ['qemu-x86'] },
  { slug: 'intel-edison', name: 'Intel Edison', arch: 'i386', aliases: ['edison'] },
  { slug: 'fincm3', name: 'Balena Fin (CM3)', arch: 'armv7hf' },
  { slug: 'up-board', name: 'UP Board', arch: 'amd64' },
  { slug: 'orange-pi-zero', name: 'Orange Pi Zero', arch: 'armv7hf' },
  { slug: 'rockpi-4b-rk3399', name: 'ROCK Pi 4B', arch: 'aarch64' },
];

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
  return DEVICE_TYPES.find((d) => d.slug === s) ?? DEVICE_TYPES.find((d) => d.aliases?.includes(s));
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
      const names = DEVICE_TYPES.flatMap((d) => [d.slug, ...(d.aliases ?? [])]);
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
