/**
 * The device side of a delta update (api/deltas.ts): make the target image from the source
 * image the engine has, a {@link DeltaDescriptor} and its downloads, and load it into the engine,
 * used only when every layer and the image ID are exactly the release's.
 *
 * Disk: the layer tars the load needs (downloaded/patched layers, `present` layers out of place,
 * and the bases) are in `tmpDir` at once; memory: one VCDIFF window and a few stream buffers.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { DeltaDescriptor } from '../api/deltas.js';
import { EngineError, splitReference, type EngineClient } from '../docker/engine-lite.js';
import { DeltaApplyError } from './errors.js';
import { extractLayers, type WantedLayer } from './export.js';
import { blobDecoders, diskError, patchLayer, writeLayerFile } from './layer-patch.js';

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

/** How many times a cut download is resumed from where it stopped before the apply fails. */
const RESUMES = 2;

/**
 * Applies `delta`: reads the source layers it needs from the engine's image export, downloads and
 * patches (memory bounded whatever the layer size), verifies each layer's sha256 against its
 * diffID, loads the image, checks the loaded image's ID is `delta.imageId`, and only then tags it.
 * @returns the image ID (`sha256:…`) and the bytes downloaded
 * @throws DeltaApplyError for anything that should fall back to a pull; temporary files are gone either way
 */
export async function applyImageDelta(options: ApplyImageDeltaOptions): Promise<{ imageId: string; downloadedBytes: number }> {
  await emptyTmp(options.tmpDir);
  try {
    return await apply(options);
  } catch (err) {
    if (err instanceof DeltaApplyError) throw err;
    const disk = diskError(err, 'the delta apply');
    if (disk) throw disk;
    if (err instanceof EngineError) throw new DeltaApplyError('engine', `the engine failed the delta apply: ${err.message}`, { cause: err });
    throw new DeltaApplyError('engine', `the delta apply failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  } finally {
    await cleanDeltaTmp(options.tmpDir).catch(() => undefined);
  }
}

/** Empties `tmpDir` (made if missing): what an apply killed mid-way left there (the agent calls it at start). */
export async function cleanDeltaTmp(tmpDir: string): Promise<void> {
  await mkdir(tmpDir, { recursive: true });
  for (const name of await readdir(tmpDir)) await rm(path.join(tmpDir, name), { recursive: true, force: true });
}

async function emptyTmp(tmpDir: string): Promise<void> {
  try {
    await cleanDeltaTmp(tmpDir);
  } catch (err) {
    throw diskError(err, tmpDir) ?? new DeltaApplyError('disk', `cannot prepare ${tmpDir}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** The target config's diffIDs, after checking the config is the one the delta names. */
function configDiffIds(config: Buffer, delta: DeltaDescriptor): string[] {
  const digest = `sha256:${createHash('sha256').update(config).digest('hex')}`;
  if (digest !== delta.imageId) throw new DeltaApplyError('corrupt', `the image config's sha256 is ${digest}, not the delta's image ${delta.imageId}`);
  let diffIds: unknown;
  try {
    diffIds = (JSON.parse(config.toString('utf8')) as { rootfs?: { diff_ids?: unknown } }).rootfs?.diff_ids;
  } catch {
    throw new DeltaApplyError('corrupt', 'the image config is not JSON');
  }
  if (!Array.isArray(diffIds) || !diffIds.every((d): d is string => typeof d === 'string')) throw new DeltaApplyError('corrupt', 'the image config has no rootfs.diff_ids');
  const named = delta.layers.map((l) => l.diffId);
  if (diffIds.length !== named.length || diffIds.some((d, i) => d !== named[i])) {
    throw new DeltaApplyError('corrupt', `the image config's layers (${diffIds.length}) are not the delta's (${named.length}) in order`);
  }
  return diffIds;
}

const short = (digest: string): string => digest.replace(/^sha256:/, '').slice(0, 12);

/**
 * A download that resumes from where it was cut (the fetcher asks from `offset`, the server
 * honours Range) up to {@link RESUMES} times, counting bytes as they pass.
 */
function resumable(fetch: (offset: number) => Promise<Readable>, total: number, label: string, onBytes: (n: number) => void): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    let offset = 0;
    let failures = 0;
    for (;;) {
      let why: string;
      try {
        const stream = await fetch(offset);
        for await (const chunk of stream) {
          const buf = chunk as Buffer;
          offset += buf.length;
          onBytes(buf.length);
          yield buf;
        }
        if (offset >= total) return;
        why = `it ended after ${offset} of ${total} bytes`;
      } catch (err) {
        if (err instanceof DeltaApplyError && err.failure !== 'download') throw err;
        why = err instanceof Error ? err.message : String(err);
      }
      if (++failures > RESUMES) throw new DeltaApplyError('download', `${label}: download failed (${why})`);
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

async function apply(o: ApplyImageDeltaOptions): Promise<{ imageId: string; downloadedBytes: number }> {
  const { delta, docker } = o;
  const signal = o.signal ?? new AbortController().signal;
  const diffIds = configDiffIds(o.config, delta);

  let sourceLayers: string[];
  try {
    sourceLayers = (await docker.getImage(o.source).inspect()).RootFS?.Layers ?? [];
  } catch (err) {
    if (err instanceof EngineError && err.statusCode === 404) throw new DeltaApplyError('source', `the engine has no image ${o.source} to apply the delta to`, { cause: err });
    throw err;
  }
  const have = new Set(sourceLayers);
  for (const layer of delta.layers) {
    const needs = layer.source === 'present' ? [layer.diffId] : layer.source === 'delta' ? layer.bases : [];
    for (const d of needs) {
      if (!have.has(d)) throw new DeltaApplyError('source', `the source image ${o.source} lacks layer ${d} that the delta needs`);
    }
  }

  // The load need not be given the tars of the target's first layers when they are the source's
  // first layers: moby's tarexport (load.go) looks each layer's chain ID up and only reads the tar
  // of a chain it lacks — found on Docker 20.10.24 by loading an archive whose manifest named
  // missing files for the layers already there (it loaded). Only layers out of that place are copied.
  let prefix = 0;
  while (prefix < diffIds.length && diffIds[prefix] === sourceLayers[prefix]) prefix++;

  const layerFile = (diffId: string): string => path.join(o.tmpDir, `${diffId.replace(/^sha256:/, '')}.tar`);
  const wanted = new Map<string, WantedLayer>();
  delta.layers.forEach((layer, i) => {
    if (layer.source === 'present' && i >= prefix) wanted.set(layer.diffId, { file: layerFile(layer.diffId), size: layer.size });
    if (layer.source === 'delta') for (const b of layer.bases) if (!wanted.has(b)) wanted.set(b, { file: layerFile(b) });
  });
  if (wanted.size > 0) {
    let exported: Readable;
    try {
      exported = await docker.getImage(o.source).export({ signal });
    } catch (err) {
      throw new DeltaApplyError('source', `the engine did not export ${o.source}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    await extractLayers(exported, wanted, o.tmpDir, o.source);
  }

  let downloaded = 0;
  const onBytes = (n: number): void => {
    downloaded += n;
    o.onProgress?.(downloaded, delta.downloadBytes);
  };
  const targetFiles: string[] = [];
  for (const [i, layer] of delta.layers.entries()) {
    const label = `layer ${i + 1} (${short(layer.diffId)})`;
    const file = layer.source === 'present' ? layerFile(layer.diffId) : path.join(o.tmpDir, `target-${i}.tar`);
    targetFiles.push(file);
    if (layer.source === 'delta') {
      const input = resumable((offset) => o.fetchDeltaLayer(i, offset, signal), layer.bytes, label, onBytes);
      await patchLayer(input, layer.bases.map(layerFile), file, { diffId: layer.diffId, size: layer.size, fileSha256: layer.sha256, label }, signal);
    } else if (layer.source === 'pull') {
      const decoders = await blobDecoders(layer.mediaType);
      const input = resumable((offset) => o.fetchBlob(layer.digest, offset, signal), layer.bytes, label, onBytes);
      await writeLayerFile(input, decoders, file, { diffId: layer.diffId, size: layer.size, fileSha256: layer.digest, label }, signal);
    }
  }
  // bases no target layer uses are not needed for the load
  for (const d of wanted.keys()) {
    if (!delta.layers.some((l, i) => l.diffId === d && i >= prefix)) await rm(layerFile(d), { force: true });
  }

  const imageId = await load(o, diffIds, targetFiles, prefix, signal);
  return { imageId, downloadedBytes: downloaded };
}

/**
 * Loads the image (docker save's legacy layout, streamed: manifest, config, layer tars) without a
 * name, checks what the engine made of it, and only then tags it.
 */
async function load(o: ApplyImageDeltaOptions, diffIds: string[], files: string[], prefix: number, signal: AbortSignal): Promise<string> {
  const { delta, docker } = o;
  const configName = `${delta.imageId.replace(/^sha256:/, '')}.json`;
  // the first `prefix` layers are named but not in the archive: the engine has their chains (above)
  const layerNames = diffIds.map((d, i) => (i < prefix ? `present-${i}.tar` : `layer-${i}.tar`));
  const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: null, Layers: layerNames }]));
  const tarStream = await import('tar-stream');
  const pack = tarStream.pack();
  const entry = (name: string, size: number): NodeJS.WritableStream =>
    pack.entry({ name, size, mode: 0o644, mtime: new Date(0) }, (err) => {
      if (err) pack.destroy(err);
    });
  const fill = (async (): Promise<void> => {
    pack.entry({ name: 'manifest.json', mode: 0o644, mtime: new Date(0) }, manifest);
    pack.entry({ name: configName, mode: 0o644, mtime: new Date(0) }, o.config);
    for (let i = prefix; i < files.length; i++) {
      const file = files[i] ?? '';
      const { size } = await stat(file);
      await pipeline(createReadStream(file), entry(layerNames[i] ?? '', size));
    }
    pack.finalize();
  })();
  fill.catch((err: unknown) => pack.destroy(err instanceof Error ? err : new Error(String(err))));

  let messages: string[];
  try {
    [messages] = await Promise.all([docker.loadImage(pack as unknown as Readable, { signal }), fill]);
  } catch (err) {
    const disk = diskError(err, 'the image load');
    if (disk) throw disk;
    throw new DeltaApplyError('engine', `the engine refused the image: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const loadedId = messages.map((m) => /Loaded image ID: (sha256:[0-9a-f]{64})/.exec(m)?.[1]).find((m) => m !== undefined);
  const image = docker.getImage(loadedId ?? delta.imageId);
  let inspected;
  try {
    inspected = await image.inspect();
  } catch (err) {
    throw new DeltaApplyError('engine', `the engine does not have the image it loaded (${short(loadedId ?? delta.imageId)}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const layers = inspected.RootFS?.Layers ?? [];
  if (inspected.Id !== delta.imageId || layers.length !== diffIds.length || layers.some((d, i) => d !== diffIds[i])) {
    // an image nothing names is ours to remove; one with names was there before the load
    if ((inspected.RepoTags ?? []).length === 0) await image.remove({ force: false }).catch(() => undefined);
    throw new DeltaApplyError('engine', `the loaded image ${inspected.Id} is not the release's ${delta.imageId}`);
  }
  const { name, tag } = splitReference(o.tag);
  await image.tag(name, tag);
  return delta.imageId;
}
