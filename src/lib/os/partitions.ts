/**
 * Partition tables (MBR with logical partitions, GPT, or none: a "superfloppy" with a file system
 * at offset 0) of an image file or a block device, and the boot partition balenaOS keeps its
 * configuration in. Reads at offsets only: no mount, no root for an image file.
 */
import { constants, readFileSync } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import process from 'node:process';
import path from 'node:path';
import { SkiffError } from '../errors/errors.js';
import { FatError, FatFs, parseBootSector, rangeOf, type BlockDevice, type FatType } from './fat.js';

export type PartitionScheme = 'mbr' | 'gpt' | 'none';

export interface Partition {
  /** Linux's number: 1-4 primary, 5+ logical (MBR); GPT entries in table order. */
  index: number;
  offset: number;
  size: number;
  /** MBR type byte as hex (`0c`), or the GPT type GUID. */
  type: string;
  /** GPT partition name, when it has one. */
  name?: string;
}

export interface PartitionTable {
  scheme: PartitionScheme;
  sectorSize: number;
  partitions: Partition[];
}

/** Labels balenaOS (and Skiff's own images) give the boot partition. */
export const BOOT_LABELS = ['resin-boot', 'balena-boot', 'skiff-boot'];

/** An image file or block device, opened for reading (and writing when asked). */
export class FileDevice implements BlockDevice {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly size: number,
    readonly isBlockDevice: boolean,
  ) {}

  /** Opens `file`; a missing or unreadable one is one clear SkiffError. */
  static async open(file: string, options: { write?: boolean } = {}): Promise<FileDevice> {
    let handle: FileHandle;
    try {
      // Written, a Linux block device is opened exclusively: the kernel then refuses it (EBUSY)
      // while it or one of its partitions is mounted or used as swap, whatever the mount table says.
      const exclusive = options.write && process.platform === 'linux' && (await stat(file).then((s) => s.isBlockDevice(), () => false));
      handle = await open(file, options.write ? constants.O_RDWR | (exclusive ? constants.O_EXCL : 0) : constants.O_RDONLY);
    } catch (err) {
      throw openError(file, err, options.write === true);
    }
    try {
      const stat = await handle.stat();
      if (stat.isDirectory()) throw new SkiffError('usage', `${file} is a directory, not an image or drive`);
      if (!stat.isFile() && !stat.isBlockDevice()) throw new SkiffError('usage', `${file} is not an image file or a block device`);
      const size = stat.isBlockDevice() ? await blockDeviceSize(file, handle) : stat.size;
      return new FileDevice(file, handle, size, stat.isBlockDevice());
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buffer = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buffer, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    if (done < length) throw new SkiffError('error', `${this.path} ends at byte ${offset + done}, before ${offset + length}: the image is truncated`);
    return buffer;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  /** Flushes written data to the drive (fsync). */
  async sync(): Promise<void> {
    await this.handle.sync();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

function openError(file: string, err: unknown, write: boolean): SkiffError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new SkiffError('usage', `${file} does not exist`, { hint: 'give the path of an OS image file or a drive (skiff util available-drives lists drives)' });
  if (code === 'EACCES' || code === 'EPERM') return new SkiffError('error', `cannot ${write ? 'write to' : 'read'} ${file}: permission denied`, { hint: 'drives usually need root: run with sudo' });
  if (code === 'EROFS') return new SkiffError('error', `${file} is read-only`);
  if (code === 'EBUSY') return new SkiffError('error', `${file} is busy (mounted or in use)`, { hint: 'unmount its partitions first' });
  return new SkiffError('error', `cannot open ${file}: ${(err as Error).message}`, { cause: err });
}

/** A block device's size: sysfs on Linux, else the last readable byte found by bisection. */
async function blockDeviceSize(file: string, handle: FileHandle): Promise<number> {
  try {
    const { realpath } = await import('node:fs/promises');
    const name = path.basename(await realpath(file));
    const sectors = Number.parseInt(readFileSync(`/sys/class/block/${name}/size`, 'utf8'), 10);
    if (Number.isFinite(sectors) && sectors > 0) return sectors * 512;
  } catch {
    // Not Linux, or no sysfs entry: find the end by reading.
  }
  const probe = Buffer.alloc(1);
  const readable = async (at: number) => (await handle.read(probe, 0, 1, at)).bytesRead === 1;
  let lo = 0;
  let hi = 512;
  while (await readable(hi - 1)) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 512) {
    const mid = lo + Math.floor((hi - lo) / 1024) * 512;
    if (await readable(mid - 1)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** Reads the partition table of `device`. A device with no table is scheme `none` with one partition. */
export async function readPartitionTable(device: BlockDevice): Promise<PartitionTable> {
  const head = await device.read(0, Math.min(device.size, 4096 + 512));
  if (head.length < 512) return { scheme: 'none', sectorSize: 512, partitions: [] };
  const mbr = head.subarray(0, 512);
  const hasSignature = mbr.readUInt16LE(510) === 0xaa55;
  const primaries = hasSignature ? mbrEntries(mbr) : [];
  if (primaries.some((p) => p.type === 0xee)) {
    for (const sectorSize of [512, 4096]) {
      const header = head.subarray(sectorSize, sectorSize + 92);
      if (header.length === 92 && header.toString('latin1', 0, 8) === 'EFI PART') return { scheme: 'gpt', sectorSize, partitions: await gptEntries(device, header, sectorSize) };
    }
    throw new SkiffError('error', 'the disk has a protective MBR but no readable GPT header');
  }
  if (parseBootSector(mbr)) return { scheme: 'none', sectorSize: 512, partitions: [{ index: 1, offset: 0, size: device.size, type: 'none' }] };
  if (!hasSignature) return { scheme: 'none', sectorSize: 512, partitions: [] };
  const partitions: Partition[] = [];
  for (const [i, p] of primaries.entries()) {
    if (p.sectors === 0 || p.type === 0) continue;
    if (isExtended(p.type)) {
      partitions.push(...(await logicalPartitions(device, p.start)));
      continue;
    }
    partitions.push({ index: i + 1, offset: p.start * 512, size: p.sectors * 512, type: hex(p.type) });
  }
  return { scheme: 'mbr', sectorSize: 512, partitions: partitions.sort((a, b) => a.index - b.index) };
}

interface MbrEntry {
  type: number;
  start: number;
  sectors: number;
}

function mbrEntries(sector: Buffer): MbrEntry[] {
  return [0, 1, 2, 3].map((i) => {
    const at = 446 + i * 16;
    return { type: sector[at + 4] ?? 0, start: sector.readUInt32LE(at + 8), sectors: sector.readUInt32LE(at + 12) };
  });
}

const isExtended = (type: number) => type === 0x05 || type === 0x0f || type === 0x85;
const hex = (n: number) => n.toString(16).padStart(2, '0');

/** Walks the chain of extended boot records; logical partitions are numbered from 5. */
async function logicalPartitions(device: BlockDevice, extendedStart: number): Promise<Partition[]> {
  const out: Partition[] = [];
  let ebr = extendedStart;
  const seen = new Set<number>();
  while (!seen.has(ebr) && out.length < 128) {
    seen.add(ebr);
    if ((ebr + 1) * 512 > device.size) break;
    const sector = await device.read(ebr * 512, 512);
    if (sector.readUInt16LE(510) !== 0xaa55) break;
    const [first, next] = mbrEntries(sector);
    if (first && first.sectors > 0 && first.type !== 0) out.push({ index: 5 + out.length, offset: (ebr + first.start) * 512, size: first.sectors * 512, type: hex(first.type) });
    if (!next || next.sectors === 0 || !isExtended(next.type)) break;
    ebr = extendedStart + next.start;
  }
  return out;
}

async function gptEntries(device: BlockDevice, header: Buffer, sectorSize: number): Promise<Partition[]> {
  const entriesLba = Number(header.readBigUInt64LE(72));
  const count = Math.min(header.readUInt32LE(80), 1024);
  const entrySize = header.readUInt32LE(84);
  if (entrySize < 128) throw new SkiffError('error', `the GPT header has an invalid entry size (${entrySize})`);
  const table = await device.read(entriesLba * sectorSize, count * entrySize);
  const out: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const e = table.subarray(i * entrySize, (i + 1) * entrySize);
    const type = guid(e.subarray(0, 16));
    if (type === '00000000-0000-0000-0000-000000000000') continue;
    const first = Number(e.readBigUInt64LE(32));
    const last = Number(e.readBigUInt64LE(40));
    const name = e.subarray(56, 128).toString('utf16le').replace(/\0.*$/s, '');
    out.push({ index: i + 1, offset: first * sectorSize, size: (last - first + 1) * sectorSize, type, ...(name ? { name } : {}) });
  }
  return out;
}

/** A GUID in its usual text form (the first three fields are little-endian on disk). */
function guid(b: Buffer): string {
  const h = (from: number, to: number, reverse: boolean) => {
    const part = Buffer.from(b.subarray(from, to));
    return (reverse ? part.reverse() : part).toString('hex');
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`;
}

export interface BootPartition {
  partition: Partition;
  scheme: PartitionScheme;
  fatType: FatType;
  label: string;
  fs: FatFs;
}

/**
 * The boot partition: a FAT partition labelled resin-boot, balena-boot or skiff-boot (volume label
 * or GPT name), else the first FAT partition. None is a SkiffError naming the target.
 */
export async function findBootPartition(device: BlockDevice, target: string): Promise<BootPartition> {
  const table = await readPartitionTable(device);
  const candidates: BootPartition[] = [];
  for (const partition of table.partitions) {
    if (partition.offset + partition.size > device.size) continue;
    const fs = await openFat(rangeOf(device, partition.offset, partition.size));
    if (!fs) continue;
    const found: BootPartition = { partition, scheme: table.scheme, fatType: fs.type, label: fs.label, fs };
    const names = [fs.label, partition.name ?? ''].map((n) => n.toLowerCase());
    if (names.some((n) => BOOT_LABELS.includes(n))) return found;
    candidates.push(found);
  }
  const first = candidates[0];
  if (first) return first;
  const what = table.scheme === 'none' ? 'no partition table and no FAT file system' : `${table.partitions.length} ${table.scheme.toUpperCase()} partition${table.partitions.length === 1 ? '' : 's'}, none of them FAT`;
  throw new SkiffError('usage', `${target} has no FAT boot partition (${what})`, { hint: 'is it a balenaOS image or drive?' });
}

async function openFat(device: BlockDevice): Promise<FatFs | undefined> {
  if (device.size < 512) return undefined;
  if (!parseBootSector(await device.read(0, 512))) return undefined;
  try {
    return await FatFs.open(device);
  } catch (err) {
    if (err instanceof FatError) return undefined;
    throw err;
  }
}
