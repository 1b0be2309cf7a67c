/**
 * qemu-user emulation for building other architectures' images on this machine's engine.
 * A RUN step in an arm64 image on an amd64 engine only works when binfmt_misc hands ARM binaries
 * to a static qemu with the fix-binary (F) flag, which opens the interpreter at registration so
 * containers need not contain it.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import process from 'node:process';
import { SkiffError } from '../errors/errors.js';
import { ARCHES, type Arch } from '../device-types/device-types.js';

const BINFMT = '/proc/sys/fs/binfmt_misc';

/** ELF magic and mask per qemu target (the same values as Debian's /usr/share/binfmts). */
const HANDLERS: Record<string, { magic: string; mask: string }> = {
  aarch64: {
    magic: '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
  arm: {
    magic: '\\x7fELF\\x01\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x28\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
};

/** Architectures an engine runs without emulation. */
function nativelyRuns(engine: Arch, target: Arch): boolean {
  if (engine === target) return true;
  if (engine === 'amd64' && target === 'i386') return true;
  // Most 64-bit ARM SoCs run 32-bit ARM code natively.
  if (engine === 'aarch64' && (target === 'armv7hf' || target === 'rpi')) return true;
  if (engine === 'armv7hf' && target === 'rpi') return true;
  return false;
}

export type EmulationStatus =
  | { state: 'native' }
  | { state: 'ready'; interpreter: string }
  | { state: 'unknown'; reason: string }
  | { state: 'missing'; qemu: string; reason: string };

/** What emulation this machine has for running `target` binaries on an `engine` of this arch. */
export function emulationStatus(engineArch: Arch | undefined, target: Arch, engineIsLocal: boolean): EmulationStatus {
  if (engineArch && nativelyRuns(engineArch, target)) return { state: 'native' };
  const qemu = ARCHES[target].qemu;
  if (!qemu) return { state: 'unknown', reason: `no qemu target for ${target}` };
  if (!engineIsLocal) return { state: 'unknown', reason: 'the engine is on another machine' };
  const entry = `${BINFMT}/qemu-${qemu}`;
  if (!existsSync(`${BINFMT}/status`)) return { state: 'missing', qemu, reason: 'binfmt_misc is not mounted' };
  if (!existsSync(entry)) return { state: 'missing', qemu, reason: `no binfmt_misc handler for ${qemu}` };
  const text = readFileSync(entry, 'utf8');
  if (!/^enabled/m.test(text)) return { state: 'missing', qemu, reason: `the ${qemu} handler is disabled` };
  const flags = /^flags:\s*(\S*)/m.exec(text)?.[1] ?? '';
  const interpreter = /^interpreter\s+(\S+)/m.exec(text)?.[1] ?? '';
  if (!flags.includes('F')) return { state: 'missing', qemu, reason: `the ${qemu} handler lacks the fix-binary (F) flag, so containers cannot find ${interpreter}` };
  return { state: 'ready', interpreter };
}

/** The one-line instructions for setting emulation up by hand. */
export function emulationHint(qemu: string): string {
  return `run the build again with --emulated as root, or: apt-get install qemu-user-static && echo -1 > ${BINFMT}/qemu-${qemu} && register /usr/bin/qemu-${qemu}-static with flags F (see README, "Building for other architectures")`;
}

/**
 * Registers the static qemu for `qemu` with the F flag (root only). Replaces a handler of the same
 * name registered without F.
 */
export function registerEmulation(qemu: string): string {
  const handler = HANDLERS[qemu];
  if (!handler) throw new SkiffError('emulation', `cannot register emulation for ${qemu}`);
  const interpreter = [`/usr/bin/qemu-${qemu}-static`, `/usr/libexec/qemu-binfmt/${qemu}-static`].find((p) => existsSync(p));
  if (!interpreter) {
    throw new SkiffError('emulation', `qemu-${qemu}-static is not installed`, { hint: 'install it (apt-get install qemu-user-static) and try again' });
  }
  if (process.getuid?.() !== 0) {
    throw new SkiffError('emulation', 'registering emulation needs root', { hint: `run 'sudo skiff build --emulated …' once; the registration lasts until reboot` });
  }
  try {
    if (!existsSync(`${BINFMT}/status`)) execFileSync('mount', ['-t', 'binfmt_misc', 'binfmt_misc', BINFMT], { stdio: 'ignore' });
    if (existsSync(`${BINFMT}/qemu-${qemu}`)) writeFileSync(`${BINFMT}/qemu-${qemu}`, '-1');
    writeFileSync(`${BINFMT}/register`, `:qemu-${qemu}:M::${handler.magic}:${handler.mask}:${interpreter}:F`);
  } catch (err) {
    throw new SkiffError('emulation', `could not register qemu-${qemu} in binfmt_misc: ${(err as Error).message}`, { hint: emulationHint(qemu) });
  }
  return interpreter;
}
