/**
 * Making one delta: reads both images' manifests and configs from the registry, downloads and
 * decompresses the layers it needs into `<dataDir>/deltas/tmp/<id>/` (each checked against its
 * blob digest and diffID), lists their tar entries, lets choose.ts decide, encodes each chosen
 * layer with `xdelta3 -e -9 -S none -A -n -B <n> -s <bases> <layer>` piped through Brotli, and moves
 * the files kept into `<dataDir>/deltas/<id>/<index>.br` in one rename. The temp folder is removed
 * whatever happens; a process killed meanwhile leaves it for the next start to remove
 * ({@link cleanDeltaTemp}).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import type { RunningRegistry } from '../registry/contract.js';
import { finishDelta, planDelta, type DeltaOutcome, type EncodedLayer, type LayerListing, type TargetBlob } from './choose.js';

/**
 * Largest xdelta3 source window (`-B`), bytes. xdelta3 -9 takes about 5× its window in memory
 * (measured: 695 MB RSS for a 130 MB window), so this bounds each encoding to ~1.3 GB; a larger
 * source still encodes, with matches found within a window that slides along the target.
 */
export const MAX_SOURCE_WINDOW = 256 * 1024 ** 2;
/** Largest image config read, bytes. */
const MAX_CONFIG = 16 * 1024 * 1024;

/** A delta that cannot be made for a reason the device should hear (answered as `none`, not `failed`). */
export class NoDelta extends Error {}

/** An image as the target state names it, split. */
export interface ImageName {
  /** `<host>/<repository>@sha256:…`, as the device asked. */
  ref: string;
  repository: string;
  digest: string;
}

export interface GenerateInput {
  /** The delta's id (32 hex digits): its folder and download URLs. */
  id: string;
  src: ImageName;
  dest: ImageName;
  /** The server's data dir: files go to `<dataDir>/deltas/`. */
  dataDir: string;
  registry: RunningRegistry;
  signal?: AbortSignal;
}

export interface GenerateResult {
  outcome: DeltaOutcome;
  /** Wall time, ms. */
  ms: number;
}

/** `<dataDir>/deltas`: one folder per delta made here, and `tmp/` for the ones being made. */
export function deltasDir(dataDir: string): string {
  return path.join(dataDir, 'deltas');
}

/** The folder of a finished delta's files. */
export function deltaFolder(dataDir: string, id: string): string {
  return path.join(deltasDir(dataDir), id);
}

/** The file of target layer `index` of delta `id`. */
export function deltaFile(dataDir: string, id: string, index: number): string {
  return path.join(deltaFolder(dataDir, id), `${index}.br`);
}

/** Removes what deltas being made left (a killed server): called at start, before any job runs. */
export async function cleanDeltaTemp(dataDir: string): Promise<void> {
  await rm(path.join(deltasDir(dataDir), 'tmp'), { recursive: true, force: true });
}

interface ManifestLayer {
  digest: string;
  size: number;
  mediaType: string;
}

interface ImageLayers {
  configDigest: string;
  layers: Array<ManifestLayer & { diffId: string }>;
}

function isLayer(v: unknown): v is ManifestLayer {
  if (typeof v !== 'object' || v === null) return false;
  const d = v as Record<string, unknown>;
  return typeof d['digest'] === 'string' && typeof d['size'] === 'number' && (d['mediaType'] === undefined || typeof d['mediaType'] === 'string');
}

async function readAll(stream: ReadableStream<Uint8Array>, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of Readable.fromWeb(stream as Parameters<typeof Readable.fromWeb>[0])) {
    length += (chunk as Buffer).length;
    if (length > limit) throw new Error(`${what} is over ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** The image's layers with their diffIDs, from its manifest and config. Throws NoDelta for an image we cannot diff. */
async function readImage(registry: RunningRegistry, image: ImageName): Promise<ImageLayers> {
  const json = await registry.manifestJson(image.repository, image.digest);
  if (json === undefined) throw new NoDelta(`the image ${image.repository}@${image.digest} is not in the registry`);
  const m = typeof json === 'object' && json !== null ? json as Record<string, unknown> : {};
  if (Array.isArray(m['manifests'])) throw new NoDelta(`the image ${image.repository}@${image.digest} is a multi-platform index`);
  const config = m['config'];
  const layers = m['layers'];
  if (!isLayer(config) || !Array.isArray(layers) || !layers.every(isLayer)) throw new NoDelta(`the manifest of ${image.repository}@${image.digest} is not an image manifest`);
  const stream = await registry.blob(image.repository, config.digest);
  if (!stream) throw new NoDelta(`the config of ${image.repository}@${image.digest} is not in the registry`);
  const bytes = await readAll(stream, MAX_CONFIG, 'the image config');
  if (sha256(bytes) !== config.digest) throw new Error(`the config blob ${config.digest} does not hash to its digest`);
  const rootfs = (JSON.parse(bytes.toString('utf8')) as { rootfs?: { diff_ids?: unknown } }).rootfs;
  const diffIds = rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length !== layers.length || !diffIds.every((d): d is string => typeof d === 'string' && /^sha256:[0-9a-f]{64}$/.test(d))) {
    throw new NoDelta(`the config of ${image.repository}@${image.digest} does not list one diffID per layer`);
  }
  return {
    configDigest: config.digest,
    layers: layers.map((l, i) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType ?? '', diffId: diffIds[i] as string })),
  };
}

/** A pass-through that hashes and counts what flows. */
class Hashing extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    done(null, chunk);
  }
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/** How a layer blob of this media type becomes its tar; NoDelta for one we cannot read. */
function decompressor(mediaType: string): Transform {
  if (/zstd/.test(mediaType)) throw new NoDelta(`layers of type ${mediaType} are not supported for deltas`);
  if (/gzip/.test(mediaType)) return zlib.createGunzip();
  if (/\.tar$|tar$/.test(mediaType) && !/foreign|nondistributable/.test(mediaType)) return new PassThrough();
  throw new NoDelta(`layers of type '${mediaType}' are not supported for deltas`);
}

/** Downloads a layer blob into `file` as its tar; checks the blob's digest and the tar's diffID. */
async function fetchLayer(registry: RunningRegistry, repository: string, layer: ManifestLayer & { diffId: string }, file: string, signal?: AbortSignal): Promise<number> {
  const unpack = decompressor(layer.mediaType);
  const stream = await registry.blob(repository, layer.digest, signal);
  if (!stream) throw new NoDelta(`the layer ${layer.digest} of ${repository} is not in the registry`);
  const blob = new Hashing();
  const tar = new Hashing();
  await pipeline(Readable.fromWeb(stream as Parameters<typeof Readable.fromWeb>[0]), blob, unpack, tar, createWriteStream(file), ...(signal ? [{ signal }] : []));
  if (blob.digest() !== layer.digest) throw new Error(`the blob ${layer.digest} of ${repository} hashes to ${blob.digest()}`);
  if (tar.digest() !== layer.diffId) throw new Error(`the layer ${layer.digest} of ${repository} unpacks to ${tar.digest()}, not its diffID ${layer.diffId}`);
  return tar.bytes;
}

/** The regular files of a tar and their sizes. A tar that does not parse lists nothing (its layer is then pulled). */
async function listTar(file: string): Promise<Map<string, number>> {
  const { extract } = await import('tar-stream');
  const entries = new Map<string, number>();
  const reader = extract();
  reader.on('entry', (header, body, next) => {
    if (header.type === 'file' || header.type === 'contiguous-file') entries.set(header.name.replace(/^(\.\/|\/)+/, ''), header.size ?? 0);
    body.on('end', next);
    body.resume();
  });
  try {
    await pipeline(createReadStream(file), reader);
  } catch {
    entries.clear();
  }
  return entries;
}

/** Concatenates `files` into `out` (the patch source of several bases). */
async function concat(files: string[], out: string): Promise<void> {
  const sink = createWriteStream(out);
  for (const file of files) await pipeline(createReadStream(file), sink, { end: false });
  await new Promise<void>((resolve, reject) => sink.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

/** xdelta3's source window: the source's bytes rounded up to whole MiB, within [1 MiB, {@link MAX_SOURCE_WINDOW}]. */
export function sourceWindow(sourceBytes: number): number {
  const mib = 1024 * 1024;
  return Math.min(MAX_SOURCE_WINDOW, Math.max(mib, Math.ceil(sourceBytes / mib) * mib));
}

/**
 * Encodes `target` against `source` into `out` (Brotli of xdelta3's VCDIFF). Undefined when the
 * file reaches `limit` bytes (it would not be used: the pull is as small) or xdelta3 fails.
 */
async function encode(source: string, sourceBytes: number, target: string, out: string, limit: number, signal?: AbortSignal): Promise<EncodedLayer | undefined> {
  // -n: no Adler-32 per window. The device checks the file's sha256 and each layer's diffID anyway,
  // and summing Adler-32 in JavaScript under the agent's --no-opt was two thirds of a 1 GiB apply.
  const child = spawn('xdelta3', ['-e', '-9', '-S', 'none', '-A', '-n', '-B', String(sourceWindow(sourceBytes)), '-s', source, target], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', (err: NodeJS.ErrnoException) => reject(err.code === 'ENOENT' ? new Error('xdelta3 is not installed on the server (not on its PATH): install it (apt-get install xdelta3)', { cause: err }) : err));
    child.on('close', (code) => resolve(code));
  });
  // A spawn error rejects before the output pipeline ends and anything awaits this: without a
  // handler now, Node takes it as unhandled and the whole server exits (xdelta3 missing did that).
  exited.catch(() => undefined);
  const kill = (): void => void child.kill('SIGKILL');
  signal?.addEventListener('abort', kill, { once: true });
  const counted = new Hashing();
  const tooBig = new AbortController();
  const cap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      // `counted` runs just before: it has seen this chunk already.
      if (counted.bytes >= limit) {
        kill();
        tooBig.abort();
        done(new Error('not smaller'));
        return;
      }
      done(null, chunk);
    },
  });
  // A 4 MiB window (lgwin 22, Brotli's default), not 16: the device's decoder holds a ring buffer
  // that large for every apply, and what VCDIFF leaves as literals rarely repeats from further back.
  const brotli = zlib.createBrotliCompress({
    params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 9, [zlib.constants.BROTLI_PARAM_LGWIN]: 22, [zlib.constants.BROTLI_PARAM_MODE]: zlib.constants.BROTLI_MODE_GENERIC },
  });
  try {
    await pipeline(child.stdout, brotli, counted, cap, createWriteStream(out));
    const code = await exited;
    if (code !== 0) throw new Error(`xdelta3 exited with ${code}: ${stderr.trim()}`);
    return { bytes: counted.bytes, sha256: counted.digest() };
  } catch (err) {
    kill();
    await exited.catch(() => null);
    if (tooBig.signal.aborted) return undefined;
    if (signal?.aborted) throw signal.reason;
    throw err;
  } finally {
    signal?.removeEventListener('abort', kill);
  }
}

/**
 * Makes delta `id` from `src` to `dest`. Resolves with the descriptor (its files in
 * `<dataDir>/deltas/<id>/`) or `none` with the reason. Throws for a fault (registry unreachable,
 * a blob not matching its digest, xdelta3 missing): the job is then `failed`.
 */
export async function generateDelta(input: GenerateInput): Promise<GenerateResult> {
  const started = Date.now();
  const tmp = path.join(deltasDir(input.dataDir), 'tmp', input.id);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    let outcome: DeltaOutcome;
    try {
      outcome = await make(input, tmp);
    } catch (err) {
      if (!(err instanceof NoDelta)) throw err;
      outcome = { kind: 'none', reason: err.message };
    }
    return { outcome, ms: Date.now() - started };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function make(input: GenerateInput, tmp: string): Promise<DeltaOutcome> {
  const { registry, signal } = input;
  const [src, dest] = await Promise.all([readImage(registry, input.src), readImage(registry, input.dest)]);
  const tarOf = (diffId: string): string => path.join(tmp, `${diffId.slice(7)}.tar`);
  // Every layer once (an image may repeat one, and present layers are the source's), as a tar with its listing.
  const fetched = new Map<string, LayerListing>();
  const listed = async (repository: string, layer: ImageLayers['layers'][number]): Promise<LayerListing> => {
    const known = fetched.get(layer.diffId);
    if (known) return known;
    const size = await fetchLayer(registry, repository, layer, tarOf(layer.diffId), signal);
    const listing = { diffId: layer.diffId, size, entries: await listTar(tarOf(layer.diffId)) };
    fetched.set(layer.diffId, listing);
    return listing;
  };
  const source: LayerListing[] = [];
  for (const layer of src.layers) source.push(await listed(input.src.repository, layer));
  const target: LayerListing[] = [];
  for (const layer of dest.layers) target.push(await listed(input.dest.repository, layer));
  const plans = planDelta(source, target);
  const encoded = new Map<number, EncodedLayer>();
  for (const [index, plan] of plans.entries()) {
    if (plan.kind !== 'encode') continue;
    const bases = plan.bases.map((b) => source[b] as LayerListing);
    const sourceBytes = bases.reduce((n, b) => n + b.size, 0);
    let sourceFile = tarOf((bases[0] as LayerListing).diffId);
    if (bases.length > 1) {
      sourceFile = path.join(tmp, `bases-${index}.bin`);
      await concat(bases.map((b) => tarOf(b.diffId)), sourceFile);
    }
    const layer = target[index] as LayerListing;
    const blob = dest.layers[index] as ManifestLayer;
    const result = await encode(sourceFile, sourceBytes, tarOf(layer.diffId), path.join(tmp, `${index}.br`), blob.size, signal);
    if (bases.length > 1) await rm(sourceFile, { force: true });
    if (result) encoded.set(index, result);
  }
  const blobs: TargetBlob[] = dest.layers.map((l) => ({ digest: l.digest, bytes: l.size, mediaType: l.mediaType }));
  const outcome = finishDelta({ id: input.id, src: input.src.ref, dest: input.dest.ref, imageId: dest.configDigest, source, target, blobs, plans, encoded });
  if (outcome.kind === 'ready') {
    const out = path.join(tmp, 'out');
    await mkdir(out);
    for (const index of outcome.keep) await rename(path.join(tmp, `${index}.br`), path.join(out, `${index}.br`));
    const folder = deltaFolder(input.dataDir, input.id);
    // A folder of an earlier attempt (evicted halfway, or made before a restart) is replaced whole.
    await rm(folder, { recursive: true, force: true });
    await rename(out, folder);
  }
  return outcome;
}

/** Bytes of the files in a delta's folder; undefined when the folder or a file of `indexes` is missing. */
export async function folderBytes(dataDir: string, id: string, indexes: readonly number[]): Promise<number | undefined> {
  let total = 0;
  for (const index of indexes) {
    try {
      total += (await stat(deltaFile(dataDir, id, index))).size;
    } catch {
      return undefined;
    }
  }
  return total;
}
