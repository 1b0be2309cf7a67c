/**
 * Drives a card can be flashed on, and which ones must never be: a drive holding a mounted root,
 * boot or swap, or the drive the CLI itself runs from. Linux asks lsblk; other systems plug in a
 * {@link DriveLister} of their own (none yet: there, name the drive with --drive).
 */
import { execFile } from 'node:child_process';
import { readFile, realpath, stat } from 'node:fs/promises';
import process from 'node:process';
import { promisify } from 'node:util';
import { SkiffError } from '../errors/errors.js';

const run = promisify(execFile);

export interface Drive {
  /** Device node, e.g. /dev/sdb or /dev/loop3. */
  device: string;
  size: number;
  /** Vendor and model as the kernel reports them, when it does. */
  model?: string;
  type: string;
  transport?: string;
  removable: boolean;
  hotplug: boolean;
  readOnly: boolean;
  /** Mount points of the drive and its partitions. */
  mountpoints: string[];
  /** For a loop device: the file behind it. */
  backingFile?: string;
  /** Why this drive must not be written, if it must not. */
  system?: string;
}

export interface DriveLister {
  /** Every whole drive the system knows (not partitions), with system drives marked. */
  list(): Promise<Drive[]>;
}

/** The lister for this platform. macOS (diskutil) and Windows have none yet. */
export function driveLister(platform: NodeJS.Platform = process.platform): DriveLister {
  if (platform === 'linux') return new LsblkDriveLister();
  return {
    list: () => Promise.reject(new SkiffError('error', `listing drives is not supported on ${platform} yet`, { hint: 'name the drive with --drive' })),
  };
}

/** Drives worth offering for flashing: removable, hot-plugged or loop devices, never system drives. */
export async function availableDrives(lister: DriveLister = driveLister()): Promise<Drive[]> {
  return (await lister.list()).filter((d) => !d.system && d.size > 0 && (d.removable || d.hotplug || d.type === 'loop'));
}

/** A drive as a person recognises it: `/dev/sdb (SanDisk Ultra, 29.7 GB)`. */
export function driveLabel(d: Pick<Drive, 'device' | 'model' | 'size' | 'backingFile'>, formatSize: (n: number) => string): string {
  const what = d.model ?? (d.backingFile ? `loop on ${d.backingFile}` : undefined);
  return `${d.device} (${what ? `${what}, ` : ''}${formatSize(d.size)})`;
}

// ---------------------------------------------------------------- Linux

interface LsblkNode {
  name: string;
  path: string;
  size: number | string | null;
  model: string | null;
  vendor: string | null;
  rm: boolean | string;
  ro: boolean | string;
  type: string;
  tran: string | null;
  mountpoints?: Array<string | null>;
  mountpoint?: string | null;
  hotplug: boolean | string;
  pkname: string | null;
  'maj:min': string;
  children?: LsblkNode[];
}

const LSBLK_COLUMNS = 'NAME,PATH,SIZE,MODEL,VENDOR,RM,RO,TYPE,TRAN,MOUNTPOINTS,HOTPLUG,PKNAME,MAJ:MIN';

const flag = (v: boolean | string | null | undefined) => v === true || v === '1';

class LsblkDriveLister implements DriveLister {
  async list(): Promise<Drive[]> {
    const { stdout } = await run('lsblk', ['-J', '-b', '-o', LSBLK_COLUMNS]).catch((err: NodeJS.ErrnoException & { stderr?: string }) => {
      throw new SkiffError('error', `cannot list drives: lsblk ${err.code === 'ENOENT' ? 'is not installed' : `failed: ${(err.stderr ?? err.message).trim()}`}`, { hint: 'install util-linux' });
    });
    const roots = (JSON.parse(stdout) as { blockdevices: LsblkNode[] }).blockdevices;
    const [swaps, ownDevices] = await Promise.all([swapDevices(), devicesOf([process.execPath, process.cwd()])]);
    return Promise.all(roots.map(async (root) => {
      const nodes = flatten(root);
      const mountpoints = nodes.flatMap(mountsOf);
      const backingFile = root.type === 'loop' ? await readFile(`/sys/block/${root.name}/loop/backing_file`, 'utf8').then((s) => s.trim(), () => undefined) : undefined;
      const model = [root.vendor, root.model].map((s) => s?.trim()).filter((s) => s && !/^0x[0-9a-f]+$/i.test(s)).join(' ') || undefined;
      const drive: Drive = {
        device: root.path,
        size: Number(root.size ?? 0),
        ...(model ? { model } : {}),
        type: root.type,
        ...(root.tran ? { transport: root.tran } : {}),
        removable: flag(root.rm),
        hotplug: flag(root.hotplug),
        readOnly: flag(root.ro),
        mountpoints,
        ...(backingFile ? { backingFile } : {}),
      };
      const reason = systemReason(nodes, mountpoints, swaps, ownDevices);
      return reason ? { ...drive, system: reason } : drive;
    }));
  }
}

function flatten(node: LsblkNode): LsblkNode[] {
  return [node, ...(node.children ?? []).flatMap(flatten)];
}

function mountsOf(node: LsblkNode): string[] {
  return [...(node.mountpoints ?? []), node.mountpoint].filter((m): m is string => typeof m === 'string' && m !== '');
}

function systemReason(nodes: LsblkNode[], mountpoints: string[], swaps: Set<string>, own: Set<string>): string | undefined {
  if (mountpoints.includes('/')) return 'it holds the mounted root file system (/)';
  const boot = mountpoints.find((m) => m === '/boot' || m.startsWith('/boot/'));
  if (boot) return `it holds the mounted boot file system (${boot})`;
  const swap = nodes.find((n) => swaps.has(n['maj:min']) || mountsOf(n).includes('[SWAP]'));
  if (swap) return `it holds active swap (${swap.path})`;
  if (nodes.some((n) => own.has(n['maj:min']))) return 'skiff runs from it';
  return undefined;
}

/** MAJ:MIN of the block devices holding swap: swap partitions, and the file systems of swap files. */
async function swapDevices(): Promise<Set<string>> {
  const text = await readFile('/proc/swaps', 'utf8').catch(() => '');
  const out = new Set<string>();
  for (const line of text.split('\n').slice(1)) {
    const [file, type] = line.split(/\s+/);
    if (!file) continue;
    const unescaped = file.replace(/\\040/g, ' ');
    if (type === 'partition') {
      const st = await stat(unescaped).catch(() => undefined);
      if (st) out.add(majMin(st.rdev));
    } else {
      for (const d of await devicesOf([unescaped])) out.add(d);
    }
  }
  return out;
}

/**
 * MAJ:MIN of the block devices whose file systems hold these paths. The mount table (not st_dev)
 * names the device, since btrfs, overlay and others report an anonymous st_dev.
 */
async function devicesOf(paths: string[]): Promise<Set<string>> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const mounts = info.split('\n').filter(Boolean).map((line) => {
    const [left = '', right = ''] = line.split(' - ');
    const fields = left.split(' ');
    const source = right.split(' ')[1] ?? '';
    return { majMin: fields[2] ?? '', point: (fields[4] ?? '').replace(/\\040/g, ' '), source };
  });
  const out = new Set<string>();
  for (const p of paths) {
    const real = await realpath(p).catch(() => undefined);
    if (!real) continue;
    const mount = mounts
      .filter((m) => real === m.point || real.startsWith(m.point.endsWith('/') ? m.point : `${m.point}/`))
      .sort((a, b) => b.point.length - a.point.length)[0];
    if (!mount) continue;
    out.add(mount.majMin);
    if (mount.source.startsWith('/dev/')) {
      const st = await stat(mount.source).catch(() => undefined);
      if (st?.isBlockDevice()) out.add(majMin(st.rdev));
    }
  }
  return out;
}

export function majMin(rdev: number): string {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & 0xfff00);
  return `${major}:${minor}`;
}

// ---------------------------------------------------------------- targets

export interface Target {
  /** As given on the command line. */
  path: string;
  /** The device node or file after following links. */
  resolved: string;
  kind: 'block' | 'file';
  /** Bytes the target holds; undefined for a regular file (it grows). */
  size?: number;
  model?: string;
  /** For a loop device: the file behind it. */
  backingFile?: string;
  readOnly: boolean;
  /** Mount points of the target and its partitions (unmounted before writing). */
  mountpoints: string[];
  /** A regular file that does not exist yet. */
  created: boolean;
}

/**
 * Looks a --drive up and refuses what must never be written: a system drive (no override), a
 * read-only drive. Sizes are checked later, against the image.
 */
export async function inspectTarget(given: string, lister: DriveLister = driveLister()): Promise<Target> {
  const resolved = await realpath(given).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw new SkiffError('error', `cannot open ${given}: ${err.code ?? err.message}`);
  });
  if (resolved === undefined) {
    if (given.startsWith('/dev/')) throw new SkiffError('usage', `drive ${given} does not exist`, { hint: "'skiff util available-drives' lists the drives" });
    return { path: given, resolved: given, kind: 'file', readOnly: false, mountpoints: [], created: true };
  }
  const st = await stat(resolved);
  if (st.isFile()) return { path: given, resolved, kind: 'file', readOnly: false, mountpoints: [], created: false };
  if (!st.isBlockDevice()) throw new SkiffError('usage', `${given} is neither a block device nor a regular file`);

  const id = majMin(st.rdev);
  const [drives, { stdout }] = await Promise.all([
    lister.list(),
    run('lsblk', ['-J', '-b', '-o', 'PATH,MAJ:MIN,MOUNTPOINTS', '-s', resolved]).catch(() => ({ stdout: '{"blockdevices":[]}' })),
  ]);
  // -s lists the target with its ancestors: a partition of a system drive is as much a system drive.
  const ancestors = flattenPaths((JSON.parse(stdout) as { blockdevices: LsblkNode[] }).blockdevices);
  const drive = drives.find((d) => d.device === resolved) ?? drives.find((d) => ancestors.includes(d.device));
  const systemDrive = drives.find((d) => d.system && (d.device === resolved || ancestors.includes(d.device)));
  if (systemDrive) {
    throw new SkiffError('error', `refusing to write ${given}: it is a system drive (${systemDrive.device}: ${systemDrive.system})`, { hint: 'pick a removable drive; skiff util available-drives lists them' });
  }
  const sys = `/sys/dev/block/${id}`;
  const size = Number(await readFile(`${sys}/size`, 'utf8').catch(() => '0')) * 512;
  const readOnly = (await readFile(`${sys}/ro`, 'utf8').catch(() => '0')).trim() === '1';
  if (readOnly) throw new SkiffError('error', `${given} is read-only`, { hint: 'check the card\'s lock switch, or detach and attach the loop device without -r' });
  const mountpoints = drive?.device === resolved ? drive.mountpoints : await mountpointsOf(resolved);
  return { path: given, resolved, kind: 'block', size, ...(drive?.model ? { model: drive.model } : {}), ...(drive?.device === resolved && drive.backingFile ? { backingFile: drive.backingFile } : {}), readOnly, mountpoints, created: false };
}

function flattenPaths(nodes: LsblkNode[]): string[] {
  return nodes.flatMap((n) => [n.path, ...flattenPaths(n.children ?? [])]);
}

async function mountpointsOf(device: string): Promise<string[]> {
  const { stdout } = await run('lsblk', ['-J', '-o', 'PATH,MOUNTPOINTS', device]).catch(() => ({ stdout: '{"blockdevices":[]}' }));
  return (JSON.parse(stdout) as { blockdevices: LsblkNode[] }).blockdevices.flatMap(flatten).flatMap(mountsOf);
}

/** Unmounts the target's mounted partitions (deepest first), so nothing writes to them meanwhile. */
export async function unmountTarget(target: Target): Promise<string[]> {
  const points = [...new Set(target.mountpoints.filter((m) => m !== '[SWAP]'))].sort((a, b) => b.length - a.length);
  for (const point of points) {
    await run('umount', [point]).catch((err: NodeJS.ErrnoException & { stderr?: string }) => {
      const why = (err.stderr ?? err.message).trim().split('\n')[0]?.replace(`umount: ${point}: `, '').replace(/\.$/, '');
      throw new SkiffError('error', `cannot unmount ${point} on ${target.path}: ${why}`, { hint: 'close the programs using it (lsof +f -- ' + point + ') and try again' });
    });
  }
  return points;
}

/** A target as a person recognises it: a drive's {@link driveLabel}, or `out.img (file)`. */
export function targetLabel(t: Target, formatSize: (n: number) => string): string {
  if (t.kind === 'file') return `${t.path} (file)`;
  return driveLabel({ device: t.path, size: t.size ?? 0, ...(t.model ? { model: t.model } : {}), ...(t.backingFile ? { backingFile: t.backingFile } : {}) }, formatSize);
}
