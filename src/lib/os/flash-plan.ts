/**
 * What `os flash` looks at and prepares before the first byte is written, in two steps around the
 * questions the command asks: {@link inspectFlash} opens the image and inspects the named drives
 * (system and read-only drives refused), then, once the person agreed, {@link prepareFlash}
 * unmounts the drives' partitions and loads the block map. Sizes are checked by flashImage, which
 * reads the image's first block (its partition table) before it opens any drive.
 */
import { readBmap, type Bmap } from './bmap.js';
import { availableDrives, inspectTarget, unmountTarget, type Drive, type DriveLister, type Target } from './drives.js';
import { SkiffError } from '../errors/errors.js';
import { openImageSource, type ImageSource } from './source.js';

export interface FlashInspection {
  source: ImageSource;
  /** The named drives, inspected; empty when none was named (the caller offers {@link offerDrives}). */
  targets: Target[];
}

/**
 * Opens the image and inspects the named drives side by side; a bad image is reported before a
 * bad drive. `signal` stops a download that is still under way.
 */
export async function inspectFlash(options: { image: string; drives: string[]; signal?: AbortSignal; lister?: DriveLister }): Promise<FlashInspection> {
  const opening = openImageSource(options.image, options.signal ? { signal: options.signal } : {});
  const inspecting = Promise.all([...new Set(options.drives)].map((p) => inspectTarget(p, options.lister)));
  inspecting.catch(() => {}); // awaited below, after the image
  const source = await opening;
  return { source, targets: await inspecting };
}

/** The drives to offer when none was named: removable, hot-plugged or loop, never system drives. */
export async function offerDrives(lister?: DriveLister): Promise<Drive[]> {
  const drives = await availableDrives(lister);
  if (drives.length === 0) throw new SkiffError('error', 'no removable drive found', { hint: 'insert an SD card or USB stick, or name a drive or image file with --drive' });
  return drives;
}

/** What flashImage is given, and what was done to get there. */
export interface FlashPlan {
  source: ImageSource;
  targets: Target[];
  /** Mount points unmounted, per drive that had any. */
  unmounted: Array<{ target: Target; points: string[] }>;
  /** The block map: --bmap, else a .bmap file next to the image. */
  bmap?: { file: string; map: Bmap };
}

/** Unmounts the targets' mounted partitions and loads the block map; run once the person agreed to erase the drives. */
export async function prepareFlash(inspection: FlashInspection, options: { bmap?: string } = {}): Promise<FlashPlan> {
  const { source, targets } = inspection;
  const unmounted: FlashPlan['unmounted'] = [];
  for (const target of targets) {
    if (target.kind !== 'block' || target.mountpoints.length === 0) continue;
    const points = await unmountTarget(target);
    if (points.length > 0) unmounted.push({ target, points });
  }
  const bmapFile = options.bmap ?? source.bmapPath;
  const bmap = bmapFile ? { file: bmapFile, map: await readBmap(bmapFile) } : undefined;
  return { source, targets, unmounted, ...(bmap ? { bmap } : {}) };
}
