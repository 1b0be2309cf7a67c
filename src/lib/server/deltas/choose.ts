/**
 * Which target layers a delta carries, and against which source layers: a pure decision over the
 * two images' layer listings (diffID, tar size, entry paths with sizes), tested by tables.
 *
 * Rules, per target layer in rootfs order:
 * - `present` when the source image has a layer with the same diffID (the device copies it);
 * - else the source layers sharing the most bytes of entry paths with it become its `bases` (the
 *   best few, greedily, until they cover nearly all of the overlap; at most {@link MAX_BASES},
 *   kept in source order so the patch's source is the same concatenation on both ends);
 * - no overlap at all: `pull` without encoding (a patch against unrelated bytes is never smaller).
 * After encoding ({@link finishDelta}), a layer is `delta` only when its compressed patch is
 * smaller than its registry blob; otherwise `pull`. No `delta` left: the answer is `none`.
 */
import type { DeltaDescriptor, DeltaLayer } from '../../api/deltas.js';

/** Most source layers one target layer is encoded against. */
export const MAX_BASES = 4;
/** The chosen bases stop once they cover this share of the overlap a target layer has with all source layers. */
export const COVER_SHARE = 0.95;
/** A source layer adding less than this share of the overlap is not worth its bytes in the patch source. */
export const MIN_GAIN_SHARE = 0.02;

/** One layer of an image as the choice sees it. */
export interface LayerListing {
  /** `sha256:…` of the uncompressed tar. */
  diffId: string;
  /** Bytes of the uncompressed tar. */
  size: number;
  /** Regular files' paths (as in the tar, without a leading `./`) and their sizes in bytes. */
  entries: ReadonlyMap<string, number>;
}

/** The plan for one target layer before encoding. */
export type LayerPlan =
  | { kind: 'present' }
  /** `bases`: indexes into the source layers, ascending. */
  | { kind: 'encode'; bases: number[] }
  | { kind: 'pull' };

/** Bytes of `target`'s entries whose path is also in `source` (counted at the target's size). */
export function commonBytes(target: LayerListing, source: LayerListing): number {
  let bytes = 0;
  const [small, large] = target.entries.size <= source.entries.size ? [target.entries, source.entries] : [source.entries, target.entries];
  for (const path of small.keys()) {
    if (large.has(path)) bytes += target.entries.get(path) ?? 0;
  }
  return bytes;
}

/**
 * The source layers (indexes, ascending) to encode `target` against: greedy by new bytes of
 * overlap covered, until {@link COVER_SHARE} of the whole overlap or {@link MAX_BASES}. Empty when
 * no source layer shares a path with a non-empty file of it.
 */
export function chooseBases(target: LayerListing, source: readonly LayerListing[]): number[] {
  // Which target paths each source layer has: the greedy cover counts each path once.
  const covers = source.map((layer) => {
    const paths: string[] = [];
    for (const [path, size] of target.entries) if (size > 0 && layer.entries.has(path)) paths.push(path);
    return paths;
  });
  const all = new Set(covers.flat());
  let total = 0;
  for (const path of all) total += target.entries.get(path) ?? 0;
  if (total === 0) return [];
  const covered = new Set<string>();
  let coveredBytes = 0;
  const chosen: number[] = [];
  while (chosen.length < MAX_BASES && coveredBytes < total * COVER_SHARE) {
    let best = -1;
    let bestGain = 0;
    covers.forEach((paths, index) => {
      if (chosen.includes(index)) return;
      let gain = 0;
      for (const path of paths) if (!covered.has(path)) gain += target.entries.get(path) ?? 0;
      // Ties go to the later layer: it is the newer copy of the files in the running image.
      if (gain > 0 && gain >= bestGain) {
        best = index;
        bestGain = gain;
      }
    });
    if (best < 0 || (chosen.length > 0 && bestGain < total * MIN_GAIN_SHARE)) break;
    chosen.push(best);
    for (const path of covers[best] ?? []) {
      if (!covered.has(path)) {
        covered.add(path);
        coveredBytes += target.entries.get(path) ?? 0;
      }
    }
  }
  return chosen.sort((a, b) => a - b);
}

/** The plan for every target layer, in the target's order. */
export function planDelta(source: readonly LayerListing[], target: readonly LayerListing[]): LayerPlan[] {
  const have = new Set(source.map((l) => l.diffId));
  return target.map((layer): LayerPlan => {
    if (have.has(layer.diffId)) return { kind: 'present' };
    const bases = chooseBases(layer, source);
    return bases.length === 0 ? { kind: 'pull' } : { kind: 'encode', bases };
  });
}

/** A target layer's registry blob (from its manifest). */
export interface TargetBlob {
  digest: string;
  /** Bytes of the (compressed) blob. */
  bytes: number;
  mediaType: string;
}

/** What encoding one layer gave: the compressed patch's bytes and sha256. */
export interface EncodedLayer {
  bytes: number;
  sha256: string;
}

/** The outcome: a descriptor, or why there is none. `keep`: indexes of target layers whose encoded file the descriptor uses. */
export type DeltaOutcome =
  | { kind: 'ready'; descriptor: DeltaDescriptor; keep: number[] }
  | { kind: 'none'; reason: string };

export const NOTHING_IN_COMMON = 'nothing in common with the running release';
export const NOT_SMALLER = 'no delta smaller than the pull';
export const NOTHING_TO_DOWNLOAD = 'every layer is already on the device';

/**
 * The descriptor from the plans and the encoded sizes: a layer is `delta` only when its encoded
 * file is smaller than its blob. `encoded` has an entry for each `encode` plan that was encoded
 * (one missing, e.g. xdelta3 gave up on it, means `pull`).
 */
export function finishDelta(input: {
  id: string;
  src: string;
  dest: string;
  imageId: string;
  source: readonly LayerListing[];
  target: readonly LayerListing[];
  blobs: readonly TargetBlob[];
  plans: readonly LayerPlan[];
  encoded: ReadonlyMap<number, EncodedLayer>;
}): DeltaOutcome {
  const layers: DeltaLayer[] = [];
  const keep: number[] = [];
  let downloadBytes = 0;
  let pullBytes = 0;
  let anyBases = false;
  input.target.forEach((layer, index) => {
    const plan = input.plans[index] ?? { kind: 'pull' };
    const blob = input.blobs[index];
    if (!blob) throw new Error(`no blob for target layer ${index}`);
    if (plan.kind === 'present') {
      layers.push({ source: 'present', diffId: layer.diffId, size: layer.size });
      return;
    }
    pullBytes += blob.bytes;
    const encoded = plan.kind === 'encode' ? input.encoded.get(index) : undefined;
    if (plan.kind === 'encode') anyBases = true;
    if (plan.kind === 'encode' && encoded && encoded.bytes < blob.bytes) {
      const bases = plan.bases.map((b) => input.source[b]?.diffId ?? '');
      layers.push({ source: 'delta', diffId: layer.diffId, size: layer.size, bases, bytes: encoded.bytes, sha256: encoded.sha256 });
      keep.push(index);
      downloadBytes += encoded.bytes;
      return;
    }
    layers.push({ source: 'pull', diffId: layer.diffId, size: layer.size, digest: blob.digest, bytes: blob.bytes, mediaType: blob.mediaType });
    downloadBytes += blob.bytes;
  });
  if (keep.length === 0) {
    const reason = layers.every((l) => l.source === 'present') ? NOTHING_TO_DOWNLOAD : anyBases ? NOT_SMALLER : NOTHING_IN_COMMON;
    return { kind: 'none', reason };
  }
  return { kind: 'ready', keep, descriptor: { id: input.id, src: input.src, dest: input.dest, imageId: input.imageId, layers, downloadBytes, pullBytes } };
}
