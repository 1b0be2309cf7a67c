/**
 * Direct I/O (O_DIRECT) to block devices: writes go from our buffers to the device without a copy
 * through the page cache. That is faster than buffered writes (dd's `oflag=direct` against its
 * `conv=fsync`: 0.2 s against 0.3-3.9 s per GiB on a loop device here, the buffered figure the one
 * that swings with the kernel's writeback), fills no memory with the image, and makes the progress
 * bar show what the device took rather than what the page cache did.
 *
 * O_DIRECT asks for buffers aligned in memory (to 512 bytes on most devices), for offsets and
 * lengths that are multiples of the logical sector size. JavaScript can neither ask for aligned
 * memory nor see an address, so each block buffer is allocated a page larger than needed, and the
 * first offset into it that every target accepts a direct read into (EINVAL otherwise) is the one
 * used. A target that takes no direct I/O at all is written through the page cache as before.
 */
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { sharedBlock } from './image-hash.js';
import type { Target } from './drives.js';

/** The most any device asks buffers to be aligned to: a page. */
const MAX_ALIGNMENT = 4096;
/** malloc returns 16-byte aligned memory, so only multiples of 16 need trying. */
const ALIGNMENT_STEP = 16;
/**
 * Bytes read by a probe. It must span pages: the kernel (6.18 here) takes a misaligned direct
 * read of one sector that stays within a page, then refuses the same buffer for a 4 MiB write.
 */
const PROBE_BYTES = 64 << 10;

/** What direct I/O needs for one target. */
export interface DirectTarget {
  /** Logical sector size: offsets and lengths of direct writes and reads are multiples of it. */
  sectorSize: number;
}

/** Whether bytes at `offset`, `length` long, can go direct: a direct target, whole sectors. */
export function fitsDirect(target: DirectTarget | undefined, offset: number, length: number): target is DirectTarget {
  return target !== undefined && offset % target.sectorSize === 0 && length % target.sectorSize === 0;
}

/** Block buffers for direct I/O to some targets (and plain ones for the rest). */
export class DirectIo {
  private constructor(
    /** Targets that take direct I/O, with their read-only probe descriptors. */
    private readonly probes: Map<Target, { fd: number; sectorSize: number }>,
  ) {}

  /** Opens each block target read-only for direct I/O; a target that refuses is left out. */
  static async open(targets: Target[]): Promise<DirectIo> {
    const probes = new Map<Target, { fd: number; sectorSize: number }>();
    for (const t of targets) {
      if (t.kind !== 'block' || process.platform !== 'linux') continue;
      let fd: number;
      try {
        fd = openSync(t.resolved, constants.O_RDONLY | constants.O_DIRECT);
      } catch {
        continue;
      }
      probes.set(t, { fd, sectorSize: await sectorSize(t.resolved) });
    }
    return new DirectIo(probes);
  }

  /** Whether writes and reads of `target` may go direct. */
  for(target: Target): DirectTarget | undefined {
    const p = this.probes.get(target);
    return p ? { sectorSize: p.sectorSize } : undefined;
  }

  /**
   * A buffer of `size` bytes (shared with the hashing thread) aligned for every direct target.
   * A target whose alignment no offset meets is dropped from direct I/O (it then goes buffered).
   */
  allocate(size: number): Buffer {
    if (this.probes.size === 0) return sharedBlock(size);
    const slab = sharedBlock(size + MAX_ALIGNMENT);
    for (let offset = 0; offset < MAX_ALIGNMENT; offset += ALIGNMENT_STEP) {
      if ([...this.probes.values()].every((p) => accepts(p.fd, slab, offset, Math.min(size, Math.max(PROBE_BYTES, p.sectorSize))))) return slab.subarray(offset, offset + size);
    }
    for (const [t, p] of this.probes) {
      closeSync(p.fd);
      this.probes.delete(t);
    }
    return slab.subarray(0, size);
  }

  close(): void {
    for (const p of this.probes.values()) closeSync(p.fd);
    this.probes.clear();
  }
}

/** Whether a direct read into `buf` at `offset` works (EINVAL: the address is not aligned). */
function accepts(fd: number, buf: Buffer, offset: number, length: number): boolean {
  try {
    readSync(fd, buf, offset, length, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The device's logical sector size from sysfs. A partition has none of its own there: its disk's
 * is used. Unknown: 4096, a multiple of every sector size in use.
 */
async function sectorSize(device: string): Promise<number> {
  const name = path.basename(device);
  for (const file of [`/sys/class/block/${name}/queue/logical_block_size`, `/sys/class/block/${name}/../queue/logical_block_size`]) {
    const n = Number((await readFile(file, 'utf8').catch(() => '')).trim());
    if (Number.isInteger(n) && n >= 512) return n;
  }
  return 4096;
}
