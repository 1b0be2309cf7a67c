/**
 * The boot partition of an image file or a drive, opened for reading or writing: found (see
 * partitions.ts), its files read and written through our FAT code, flushed and synced after a
 * write. A drive is written only when the kernel's mount table shows none of its partitions
 * mounted (when that cannot be told, it is not written at all) and the kernel grants it to us
 * exclusively (see FileDevice.open).
 */
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { SkiffError } from '../errors/errors.js';
import { majMin } from './drives.js';
import { FatError } from './fat.js';
import { FileDevice, findBootPartition, type BootPartition, type PartitionScheme } from './partitions.js';

export type { BootPartition } from './partitions.js';

/** Where the boot partition is, as results report it. */
export interface BootPartitionInfo {
  index: number;
  scheme: PartitionScheme;
  fatType: 12 | 16 | 32;
  label: string;
  offset: number;
  size: number;
}

/** Where the kernel publishes mounts and block devices; other values are for tests. */
export interface SystemTables {
  /** The mount table with each mount's device number: `/proc/self/mountinfo`. */
  mountinfo: string;
  /** Block devices by number: `/sys/dev/block`. */
  sysBlock: string;
}

const SYSTEM: SystemTables = { mountinfo: '/proc/self/mountinfo', sysBlock: '/sys/dev/block' };

/**
 * Opens the target, finds its boot partition and runs `fn`; in write mode the FATs and FSInfo
 * are flushed and the data synced to the drive afterwards. A drive with a mounted partition, or
 * one whose mounts cannot be told, is refused before anything is opened for writing (the kernel
 * would overwrite our changes with its own).
 */
export async function withBootPartition<T>(target: string, mode: 'read' | 'write', fn: (boot: BootPartition) => Promise<T>, tables: SystemTables = SYSTEM): Promise<T> {
  if (mode === 'write') await refuseMounted(target, tables);
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

/**
 * Refuses a block device that is mounted, or one of whose partitions is, from the kernel's mount
 * table (by device number, so any name of the device counts). An image file needs no check. When
 * the mount table or the device's partitions cannot be read, it cannot be told: refused too.
 */
export async function refuseMounted(target: string, tables: SystemTables = SYSTEM): Promise<void> {
  const st = await stat(target).catch(() => undefined);
  // A missing target is reported when it is opened; a file is no drive.
  if (!st?.isBlockDevice()) return;
  const cannotTell = (why: string) =>
    new SkiffError('error', `cannot tell whether ${target} is mounted (${why}), so it is left untouched`, { hint: 'unmount its partitions and make sure /proc and /sys are mounted, then try again' });
  const drive = majMin(st.rdev);
  let ours: Set<string>;
  let info: string;
  try {
    ours = new Set([drive, ...(await partitionNumbers(drive, tables.sysBlock))]);
  } catch (err) {
    throw cannotTell(`${tables.sysBlock}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    info = await readFile(tables.mountinfo, 'utf8');
  } catch (err) {
    throw cannotTell(`${tables.mountinfo}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  for (const line of info.split('\n')) {
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT ... - FSTYPE SOURCE OPTIONS
    const fields = line.split(' ');
    const number = fields[2];
    if (number === undefined || !ours.has(number)) continue;
    const point = (fields[4] ?? '?').replace(/\\040/g, ' ');
    const source = line.split(' - ')[1]?.split(' ')[1] ?? target;
    throw new SkiffError('error', `${source} is mounted at ${point}`, { hint: `unmount it first (umount ${point})` });
  }
}

/** MAJ:MIN of the partitions of a drive: the entries of its sysfs directory that have a `partition` file. */
async function partitionNumbers(drive: string, sysBlock: string): Promise<string[]> {
  const dir = await realpath(path.join(sysBlock, drive));
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const isPartition = await stat(path.join(dir, entry.name, 'partition')).then(() => true, () => false);
    if (isPartition) out.push((await readFile(path.join(dir, entry.name, 'dev'), 'utf8')).trim());
  }
  return out;
}

/** The free space the files need, checked before the first byte is written. */
export async function ensureSpace(boot: BootPartition, files: Array<{ path: string; size: number }>): Promise<void> {
  const { free, needed } = await boot.fs.shortfall(files);
  if (needed > free) throw new SkiffError('error', `the boot partition is full: ${free} bytes free, ${needed} needed`, { hint: 'remove files from it, or use a smaller config' });
}

/** A text file of the boot partition; undefined when it is missing (or a directory). */
export async function readText(boot: BootPartition, file: string): Promise<string | undefined> {
  const entry = await boot.fs.stat(file);
  if (!entry || entry.isDirectory) return undefined;
  return (await boot.fs.readFile(file)).toString('utf8');
}

export function partitionInfo(boot: BootPartition): BootPartitionInfo {
  return { index: boot.partition.index, scheme: boot.scheme, fatType: boot.fatType, label: boot.label, offset: boot.partition.offset, size: boot.partition.size };
}
