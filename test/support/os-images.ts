/**
 * Fixture disk images made with Debian's own tools (sfdisk, mkfs.vfat, mke2fs), and mtools /
 * fsck.fat to read them back: the tests check our FAT code against the reference implementations.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync, openSync, readSync, closeSync } from 'node:fs';
import { tempDir } from './tmp.js';
import path from 'node:path';

export const MiB = 1024 * 1024;

export function run(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

export { tempDir } from './tmp.js';

/** A bare FAT file system image (no partition table). */
export function makeFatImage(file: string, options: { fat: 12 | 16 | 32; sizeMiB: number; label?: string; clusterSectors?: number }): void {
  run('truncate', ['-s', `${options.sizeMiB}M`, file]);
  run('mkfs.vfat', ['-F', String(options.fat), ...(options.label ? ['-n', options.label] : []), ...(options.clusterSectors ? ['-s', String(options.clusterSectors)] : []), file]);
}

export interface PartitionSpec {
  sizeMiB: number;
  /** A FAT file system, ext4, or nothing. */
  fs?: { fat: 12 | 16 | 32; label?: string } | 'ext4';
  /** GPT partition name. */
  name?: string;
}

/**
 * A disk image: an MBR or GPT table made by sfdisk (partitions from 1 MiB, in order; MBR with
 * more than four gets an extended partition holding the rest), then each file system made in place.
 * Returns each partition's byte offset and size.
 */
export function makeDisk(file: string, scheme: 'mbr' | 'gpt', parts: PartitionSpec[]): Array<{ offset: number; size: number }> {
  const total = parts.reduce((n, p) => n + p.sizeMiB + 1, 2);
  run('truncate', ['-s', `${total}M`, file]);
  const lines = [`label: ${scheme === 'mbr' ? 'dos' : 'gpt'}`];
  const type = (p: PartitionSpec) => (scheme === 'gpt' ? (p.fs && p.fs !== 'ext4' ? 'U' : 'L') : p.fs && p.fs !== 'ext4' ? 'c' : '83');
  parts.forEach((p, i) => {
    if (scheme === 'mbr' && parts.length > 4 && i === 3) lines.push('type=E');
    lines.push(`size=${p.sizeMiB}MiB, type=${type(p)}${p.name ? `, name="${p.name}"` : ''}`);
  });
  run('sfdisk', ['-q', file], `${lines.join('\n')}\n`);
  const table = JSON.parse(run('sfdisk', ['-J', file])) as { partitiontable: { partitions: Array<{ start: number; size: number; type: string }> } };
  const laid = table.partitiontable.partitions.filter((p) => !['5', 'f', '85'].includes(p.type));
  return parts.map((p, i) => {
    const entry = laid[i];
    if (!entry) throw new Error(`sfdisk made no partition ${i + 1}`);
    const offset = entry.start * 512;
    const size = entry.size * 512;
    if (p.fs === 'ext4') run('mke2fs', ['-q', '-F', '-t', 'ext4', '-E', `offset=${offset}`, file, `${size / 1024}k`]);
    else if (p.fs) run('mkfs.vfat', ['-F', String(p.fs.fat), ...(p.fs.label ? ['-n', p.fs.label] : []), '--offset', String(offset / 512), file, String(size / 1024)]);
    return { offset, size };
  });
}

/** A file of the FAT file system at `offset` in `image`, read by mtools. */
export function mread(image: string, offset: number, file: string): string {
  return run('mtype', ['-i', `${image}@@${offset}`, `::/${file}`]);
}

/** Copies a file into the FAT file system at `offset` with mtools (long names and all). */
export function mwrite(image: string, offset: number, file: string, content: string | Buffer, scratch: string): void {
  const src = path.join(scratch, 'mwrite.tmp');
  writeFileSync(src, content);
  run('mcopy', ['-o', '-i', `${image}@@${offset}`, src, `::/${file}`]);
}

/** `mdir -b` (bare names, full paths) of a directory. */
export function mlist(image: string, offset: number, dir = ''): string[] {
  return run('mdir', ['-b', '-i', `${image}@@${offset}`, `::/${dir}`]).split('\n').filter(Boolean).map((l) => l.replace(/^::\//, ''));
}

/**
 * `fsck.fat -n` on a partition (copied out, since fsck.fat has no offset option): exit status and
 * output. Status 0 with no complaint means the file system is consistent.
 */
export function fsckFat(image: string, offset = 0, size?: number): { status: number; output: string } {
  let target = image;
  let scratch: { dir: string; remove: () => void } | undefined;
  if (offset !== 0 || size !== undefined) {
    scratch = tempDir('skiff-fsck-');
    target = path.join(scratch.dir, 'part.img');
    const length = size ?? 0;
    const buf = Buffer.alloc(length);
    const fd = openSync(image, 'r');
    readSync(fd, buf, 0, length, offset);
    closeSync(fd);
    writeFileSync(target, buf);
  }
  try {
    return { status: 0, output: run('fsck.fat', ['-n', target]) };
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    return { status: e.status ?? 1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  } finally {
    scratch?.remove();
  }
}

/** Lines of fsck.fat output that are not its banner or its closing summary: the problems it found. */
export function fsckProblems(output: string): string[] {
  return output.split('\n').filter((l) => l.trim() !== '' && !/^fsck\.fat \d/.test(l) && !/: \d+ files, \d+\/\d+ clusters$/.test(l));
}
