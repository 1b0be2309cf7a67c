/**
 * The device side of a delta update (api/deltas.ts): make the target image from the source
 * image the engine has, a {@link DeltaDescriptor} and its downloads, and load it into the engine,
 * used only when every layer and the image ID are exactly the release's.
 *
 * CONTRACT STUB (issue 12): the helper that owns src/lib/delta/ replaces the body.
 */
import type { Readable } from 'node:stream';
import type { DeltaDescriptor } from '../api/deltas.js';
import type { EngineClient } from '../docker/engine-lite.js';

import { DeltaApplyError } from './errors.js';

export { DeltaApplyError, type DeltaFailure } from './errors.js';

export interface ApplyImageDeltaOptions {
  docker: EngineClient;
  /** The source image as the engine names it (the local name or ID of the image the device runs). */
  source: string;
  delta: DeltaDescriptor;
  /** The target image's config JSON, exactly as the registry serves it (its sha256 must be `delta.imageId`). */
  config: Buffer;
  /** A `delta` layer's download (Brotli-compressed VCDIFF), from `offset` bytes (a resumed download). */
  fetchDeltaLayer(index: number, offset: number, signal: AbortSignal): Promise<Readable>;
  /** A `pull` layer's registry blob (gzip or zstd or plain tar, as the manifest's media type says), from `offset` bytes. */
  fetchBlob(digest: string, offset: number, signal: AbortSignal): Promise<Readable>;
  /** A folder the apply owns for its temporary files; emptied before and after. */
  tmpDir: string;
  /** `repo:tag` to give the image once it is verified (the agent's local name). */
  tag: string;
  /** Bytes downloaded so far of `delta.downloadBytes`. */
  onProgress?(downloaded: number, total: number): void;
  signal?: AbortSignal;
}

/**
 * Applies `delta`: reads the source layers it needs from the engine's image export, downloads and
 * patches (memory bounded whatever the layer size), verifies each layer's sha256 against its
 * diffID, loads the image, checks the loaded image's ID is `delta.imageId`, and only then tags it.
 * @returns the image ID (`sha256:…`) and the bytes downloaded
 * @throws DeltaApplyError for anything that should fall back to a pull; temporary files are gone either way
 */
export function applyImageDelta(options: ApplyImageDeltaOptions): Promise<{ imageId: string; downloadedBytes: number }> {
  void options;
  return Promise.reject(new DeltaApplyError('engine', 'delta apply is not built yet'));
}

/** Removes what an apply killed mid-way left in `tmpDir` (the agent calls it at start). */
export function cleanDeltaTmp(tmpDir: string): Promise<void> {
  void tmpDir;
  return Promise.resolve();
}
