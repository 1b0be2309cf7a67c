/**
 * The agent's side of delta updates (issue 12, api/deltas.ts): before pulling a service's new
 * image, ask the server for a delta from the image the device runs; assemble the new image from
 * it (src/lib/delta/apply-image.ts) and fall back to the normal pull on any failure, which the
 * caller does. The previous release keeps running meanwhile: nothing here touches a container.
 *
 * The source image's remote reference: the agent's target names every cloud image by
 * {@link localImageName} (`skiff-cloud/<repository>:sha256-<hex>`), a reversible spelling of the
 * server's `<host>/<repository>@sha256:<hex>`; the host is the server's registry, the same as the
 * new image's (both come from the one server the device polls). So the service's image in the
 * target the agent runs now gives the `src` to ask for, with no second store to keep in step.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { ServiceDownload, UpdateDownload } from '../../api/deltas.js';
import type { LocalTargetStateJson } from '../../device-api/wire.js';
import type { EngineClient } from '../../docker/engine-lite.js';
import { CloudHttpError, type CloudClient } from './client.js';
import type { CloudApp, CloudImage } from './target.js';

/** Delta applies at once, at most (balena's rule: each reads a source image and writes layers). */
export const MAX_DELTA_APPLIES = 3;
/** How long the agent waits for the server to make a delta before it pulls instead, in ms. */
export const MAX_DELTA_WAIT_MS = 10 * 60_000;
/** Bounds on one wait between asks, in ms, whatever the server's Retry-After says. */
export const MIN_DELTA_RETRY_MS = 1000;
export const MAX_DELTA_RETRY_MS = 60_000;

/** The temporary folder of delta applies under the agent's data dir (emptied at agent start). */
export function deltaTmpDir(dataDir: string): string {
  return path.join(dataDir, 'delta-tmp');
}

/** The image a service runs now, to make a delta from: its name on the engine and its remote reference. */
export interface DeltaSource {
  /** The engine's name for it (the agent's local name). */
  local: string;
  /** `<host>/<repository>@sha256:<hex>`: the `src` of the delta query. */
  remote: string;
}

/**
 * The remote reference a local cloud image name stands for, on registry `host`; undefined for a
 * name that is not one ({@link localImageName}'s inverse).
 * @example remoteOfLocal('skiff-cloud/abc/web:sha256-0f…', 'cloud.example.com') // 'cloud.example.com/abc/web@sha256:0f…'
 */
export function remoteOfLocal(local: string, host: string): string | undefined {
  const m = /^skiff-cloud\/(.+):sha256-([0-9a-f]{64})$/.exec(local);
  return m ? `${host}/${m[1] ?? ''}@sha256:${m[2] ?? ''}` : undefined;
}

/** No delta can be tried although the service ran an older image: the engine lost it (pruned, say). */
export interface DeltaSourceGone {
  gone: string;
}

/**
 * The image to make `image`'s delta from: the image the agent's current target gives the same
 * service (same app, same service name) of one of the services that will run `image`, when it is
 * another cloud image of the same registry; {@link DeltaSourceGone} when the engine no longer has
 * it; undefined when there is none (a new service, a first release). Pure.
 * @param current the target the agent runs now (`agent.targetState`)
 * @param apps the new target's apps (app uuid → local app id)
 * @param engineImages image names the engine has (name → ID); undefined when not known yet (the source is then assumed there: the apply checks)
 * @param serverHosts the server's registry hosts (`host:port`)
 */
export function chooseDeltaSource(image: CloudImage, apps: readonly CloudApp[], current: LocalTargetStateJson, engineImages: Readonly<Record<string, string>> | undefined, serverHosts: readonly string[]): DeltaSource | DeltaSourceGone | undefined {
  // Only the server makes deltas, and only of its own registry's images (another registry's image is pulled as it is).
  if (!image.host || !image.digest || !serverHosts.includes(image.host)) return undefined;
  let gone: DeltaSourceGone | undefined;
  for (const service of image.services) {
    const slash = service.indexOf('/');
    const appUuid = service.slice(0, slash);
    const name = service.slice(slash + 1);
    const appId = apps.find((a) => a.uuid === appUuid)?.appId;
    if (appId === undefined) continue;
    const running = Object.values(current.local.apps?.[String(appId)]?.services ?? {}).find((s) => s.serviceName === name);
    if (!running || running.image === image.local) continue;
    const remote = remoteOfLocal(running.image, image.host);
    if (!remote) continue;
    if (engineImages && !(running.image in engineImages)) {
      gone ??= { gone: running.image };
      continue;
    }
    return { local: running.image, remote };
  }
  return gone;
}

/**
 * How long to wait before asking for a pending delta again, in ms: the server's Retry-After
 * (bounded to 1–60 s) plus up to 20 % jitter, so devices that asked together do not ask together
 * again; undefined once waiting would pass `maxWaitMs` in all (pull instead). Pure.
 * @param random in [0, 1)
 */
export function deltaRetryMs(retryAfterMs: number, waitedMs: number, random: number, maxWaitMs = MAX_DELTA_WAIT_MS): number | undefined {
  const base = Math.min(MAX_DELTA_RETRY_MS, Math.max(MIN_DELTA_RETRY_MS, retryAfterMs));
  const wait = Math.round(base * (1 + 0.2 * random));
  return waitedMs + wait > maxWaitMs ? undefined : wait;
}

/** A `delta` layer's download from `offset` bytes (as applyImageDelta's `fetchDeltaLayer`). */
export type LayerFetch = (index: number, offset: number, signal: AbortSignal) => Promise<Readable>;

/**
 * `fetchLayer`, except that a 503 or 504 (the replica asked is making the delta's files again, their
 * maker being gone; or a proxy's timeout) waits the answer's Retry-After, bounded to
 * {@link MIN_DELTA_RETRY_MS}–{@link MAX_DELTA_RETRY_MS} (5 s without one), before it fails: the
 * apply's next resume, one of its few, then asks once the files may be there. Other failures
 * fail at once; `signal` ends the wait (rejecting with its reason).
 */
export function waitingOutUnavailable(fetchLayer: LayerFetch): LayerFetch {
  return async (index, offset, signal) => {
    try {
      return await fetchLayer(index, offset, signal);
    } catch (err) {
      if (err instanceof CloudHttpError && (err.status === 503 || err.status === 504)) {
        await abortableSleep(Math.min(MAX_DELTA_RETRY_MS, Math.max(MIN_DELTA_RETRY_MS, err.retryAfterMs ?? 5000)), signal);
      }
      throw err;
    }
  };
}

/** A counting semaphore: at most `limit` holders at once, the others wait in order. */
export class Slots {
  private used = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(readonly limit: number) {}

  /** Runs `work` when a slot is free. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.used >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.used++;
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.used--;
    }
  }
}

/** How one image arrived, before it is keyed by service. */
export type ImageDownload = ServiceDownload;

/**
 * The report's `update_download` for release `commit` (comma-joined commits of several apps):
 * each service of each image, by service name (`<app uuid>/<name>` → `<name>`). Pure.
 */
export function updateDownloadOf(commit: string, downloads: ReadonlyArray<{ image: CloudImage; download: ImageDownload }>): UpdateDownload {
  const services: Record<string, ServiceDownload> = {};
  for (const { image, download } of downloads) {
    for (const service of image.services) services[service.slice(service.indexOf('/') + 1).slice(0, 100)] = { ...download, fallback: download.fallback === null ? null : clip(download.fallback) };
  }
  return { commit: commit.slice(0, 100), services };
}

function clip(text: string): string {
  return text.length > 2000 ? `${text.slice(0, 1999)}…` : text;
}

/** What a delta attempt came to: the image made, or the reason to pull instead (and the bytes it cost). */
export type DeltaOutcome =
  | { kind: 'done'; downloadedBytes: number; pullBytes: number }
  /** The server has no delta that helps (its reason). */
  | { kind: 'none'; reason: string; downloadedBytes: 0 }
  /** The delta failed (or took too long to be made): the one-line reason, and what it downloaded before. */
  | { kind: 'fallback'; reason: string; downloadedBytes: number };

export interface DeltaContext {
  client: CloudClient;
  docker: EngineClient;
  /** The pull proxy's `127.0.0.1:<port>`: manifests, configs and `pull` blobs come through it. */
  proxyHost: string;
  tmpDir: string;
  slots: Slots;
  /** [0, 1), for the retry jitter. */
  random: () => number;
  /** Aborts waits and downloads: a newer target, or the agent stopping. The attempt then rejects with the abort. */
  signal: AbortSignal;
  maxWaitMs?: number;
}

const MANIFEST_TYPES = ['application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.manifest.v1+json'];

/**
 * Tries to make `image` from `source` by delta. Never throws for a delta that cannot be had or
 * fails (that is a `fallback` with the one-line reason); rejects only when `signal` aborted.
 * `onProgress(percent)` while it downloads.
 */
export async function updateByDelta(ctx: DeltaContext, image: CloudImage, source: DeltaSource, onProgress: (percent: number) => void): Promise<DeltaOutcome> {
  let downloaded = 0;
  try {
    const answer = await askForDelta(ctx, source.remote, image.remote);
    if (answer.status === 'none') return { kind: 'none', reason: `no delta: ${answer.reason}`, downloadedBytes: 0 };
    if (answer.status === 'timeout') return { kind: 'fallback', reason: answer.reason, downloadedBytes: 0 };
    const delta = answer.delta;
    const { applyImageDelta } = await import('../../delta/apply-image.js');
    const result = await ctx.slots.run(async () => {
      const config = await imageConfig(ctx.proxyHost, image, ctx.signal);
      return applyImageDelta({
        docker: ctx.docker, source: source.local, delta, config, tmpDir: ctx.tmpDir, tag: image.local, signal: ctx.signal,
        fetchDeltaLayer: waitingOutUnavailable((index, offset, signal) => ctx.client.deltaLayer(delta.id, index, offset, signal)),
        fetchBlob: (digest, offset, signal) => proxyGet(ctx.proxyHost, `/v2/${image.repository}/blobs/${digest}`, signal, offset > 0 ? { range: `bytes=${offset}-` } : {}, offset > 0 ? 206 : 200),
        onProgress: (bytes, total) => {
          downloaded = bytes;
          onProgress(total === 0 ? 100 : Math.min(100, Math.floor((bytes / total) * 100)));
        },
      });
    });
    return { kind: 'done', downloadedBytes: result.downloadedBytes, pullBytes: delta.pullBytes };
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason ?? err;
    return { kind: 'fallback', reason: oneLine(err), downloadedBytes: downloaded };
  }
}

/** The reason of a failure on one line, with the apply's failure kind when it has one. */
function oneLine(err: unknown): string {
  const e = err as { failure?: string; message?: string };
  const text = (e.message ?? String(err)).replace(/\s+/g, ' ').trim();
  return e.failure && !text.startsWith(e.failure) ? `${e.failure}: ${text}` : text;
}

/** Asks until the delta is ready or not to be had, waiting out 504s within the bound. */
async function askForDelta(ctx: DeltaContext, src: string, dest: string): Promise<Exclude<Awaited<ReturnType<CloudClient['delta']>>, { status: 'pending' }> | { status: 'timeout'; reason: string }> {
  let waited = 0;
  for (;;) {
    const reply = await ctx.client.delta(src, dest);
    if (reply.status !== 'pending') return reply;
    const wait = deltaRetryMs(reply.retryAfterMs, waited, ctx.random(), ctx.maxWaitMs);
    if (wait === undefined) return { status: 'timeout', reason: `the server did not make the delta within ${Math.round((ctx.maxWaitMs ?? MAX_DELTA_WAIT_MS) / 60_000)} min` };
    await abortableSleep(wait, ctx.signal);
    waited += wait;
  }
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', stop);
    };
    const stop = (): void => {
      done();
      reject(signal.reason as Error);
    };
    const t = setTimeout(() => {
      done();
      resolve();
    }, ms);
    signal.addEventListener('abort', stop, { once: true });
  });
}

/**
 * The target image's config JSON, as its registry serves it: the manifest by the target's digest
 * (checked: its sha256 is that digest), then the config blob it names (checked against its digest).
 * @throws Error naming what did not check out
 */
export async function imageConfig(proxyHost: string, image: CloudImage, signal: AbortSignal): Promise<Buffer> {
  if (!image.digest) throw new Error(`${image.remote} is not pinned by digest`);
  const manifestBytes = await readAll(await proxyGet(proxyHost, `/v2/${image.repository}/manifests/${image.digest}`, signal, { accept: MANIFEST_TYPES.join(', ') }, 200), 4 * 1024 * 1024);
  if (sha256(manifestBytes) !== image.digest) throw new Error(`the manifest of ${image.remote} does not match its digest`);
  let configDigest: unknown;
  try {
    configDigest = (JSON.parse(manifestBytes.toString('utf8')) as { config?: { digest?: unknown } }).config?.digest;
  } catch {
    throw new Error(`the manifest of ${image.remote} is not JSON`);
  }
  if (typeof configDigest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(configDigest)) throw new Error(`the manifest of ${image.remote} names no config (a manifest list?)`);
  const config = await readAll(await proxyGet(proxyHost, `/v2/${image.repository}/blobs/${configDigest}`, signal, {}, 200), 16 * 1024 * 1024);
  if (sha256(config) !== configDigest) throw new Error(`the config of ${image.remote} does not match its digest`);
  return config;
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

async function readAll(stream: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      stream.destroy();
      throw new Error(`an answer larger than ${max} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** GET through the pull proxy (which adds the device's registry token), following the registry's redirects. */
function proxyGet(proxyHost: string, urlPath: string, signal: AbortSignal, headers: Record<string, string>, expected: number, redirects = 3): Promise<Readable> {
  return new Promise<Readable>((resolve, reject) => {
    const url = urlPath.startsWith('http') ? urlPath : `http://${proxyHost}${urlPath}`;
    const req = (url.startsWith('https:') ? https : http).request(url, { signal, headers, timeout: 60_000 });
    req.on('timeout', () => req.destroy(new Error(`no byte from the registry for 60 s (${urlPath})`)));
    req.on('error', reject);
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if ([301, 302, 303, 307, 308].includes(status) && typeof res.headers.location === 'string' && redirects > 0) {
        res.resume();
        const next = res.headers.location;
        // A relative location stays on the proxy; an absolute one (object storage) is fetched as it is, without our headers but the range.
        proxyGet(proxyHost, next, signal, next.startsWith('http') ? (headers.range ? { range: headers.range } : {}) : headers, expected, redirects - 1).then(resolve, reject);
        return;
      }
      if (status !== expected) {
        res.resume();
        reject(new Error(`the registry answered ${status} for ${urlPath}`));
        return;
      }
      resolve(res);
    });
    req.end();
  });
}
