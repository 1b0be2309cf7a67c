/**
 * Brings a cloud target's images onto the device's engine: each image by digest from the
 * server's registry through the loopback pull proxy (see pull-proxy.ts), then tagged with its
 * stable local name ({@link localImageName}) so the agent's planner finds it by name as it finds
 * any image. An image already there under that name is not pulled again. When the device runs an
 * older image of the same service, a delta from it is tried first (delta.ts); any failure of it
 * ends in the same pull.
 */
import type { ServiceDownload } from '../../api/deltas.js';
import type { EngineClient, PullProgress } from '../../docker/engine-lite.js';
import { updateByDelta, type DeltaContext, type DeltaSource, type DeltaSourceGone } from './delta.js';
import type { CloudImage } from './target.js';

/**
 * A pull's percent from the engine's progress lines: the bytes of every layer seen so far over
 * their sizes; a layer that is there already (or finished) counts whole. Pure, for tests.
 */
export class PullPercent {
  private readonly layers = new Map<string, { current: number; total: number }>();
  private readonly existing = new Set<string>();
  /** Layers whose compressed size the engine said (a `Downloading` line): their bytes were fetched. */
  private readonly sized = new Set<string>();

  add(p: PullProgress): void {
    if (!p.id || p.id.length < 12 || p.id.includes(':')) return; // lines about the image, not a layer
    const layer = this.layers.get(p.id) ?? { current: 0, total: 0 };
    if (p.status === 'Downloading' && p.progressDetail?.total) {
      layer.total = p.progressDetail.total;
      this.sized.add(p.id);
      layer.current = Math.min(p.progressDetail.current ?? 0, layer.total);
    } else if (p.status === 'Already exists' || p.status === 'Download complete' || p.status === 'Pull complete') {
      if (p.status === 'Already exists') this.existing.add(p.id);
      layer.total = layer.total || 1;
      layer.current = layer.total;
    }
    this.layers.set(p.id, layer);
  }

  /** Layers of the image, and how many of them the engine had to download (the others it had already). */
  get layerCounts(): { total: number; downloaded: number } {
    return { total: this.layers.size, downloaded: this.layers.size - this.existing.size };
  }

  /**
   * Bytes the engine downloaded: the compressed sizes of the layers it fetched, as its progress
   * lines said them (a layer too small to get a `Downloading` line counts 0).
   */
  get downloadedBytes(): number {
    let bytes = 0;
    for (const id of this.sized) if (!this.existing.has(id)) bytes += this.layers.get(id)?.total ?? 0;
    return bytes;
  }

  /** 0–100; 0 before any size is known. */
  get percent(): number {
    let current = 0;
    let total = 0;
    for (const l of this.layers.values()) {
      current += l.current;
      total += l.total;
    }
    return total === 0 ? 0 : Math.min(100, Math.floor((current / total) * 100));
  }
}

/** Where the engine pulls `image` from: through the proxy when it is on the server's registry, else as written. */
export function pullReference(image: CloudImage, serverHosts: readonly string[], proxyHost: string | undefined): string {
  if (image.host && serverHosts.includes(image.host) && image.digest) {
    if (!proxyHost) throw new Error('the pull proxy is not running');
    return `${proxyHost}/${image.repository}@${image.digest}`;
  }
  return image.remote;
}

/**
 * Pulls the images the engine lacks (all at once: the engine shares layers between them) and tags
 * them. `onProgress(image, percent)` while they download.
 * @throws Error naming the image that could not be pulled and the engine's reason
 */
export async function ensureImages(docker: EngineClient, images: readonly CloudImage[], options: {
  serverHosts: readonly string[];
  proxyHost?: string;
  onProgress?: (image: CloudImage, percent: number) => void;
  /** Once an image is pulled: how many of its layers were downloaded (a new release of a service usually needs one). */
  onPulled?: (image: CloudImage, layers: { total: number; downloaded: number }) => void;
  /** Once an image is there: how it came (for the report's `update_download`). */
  onDownloaded?: (image: CloudImage, download: ServiceDownload) => void;
  /** Deltas: how to try them, and the image each would start from (none: pull). */
  delta?: {
    context: DeltaContext;
    sourceOf: (image: CloudImage) => DeltaSource | DeltaSourceGone | undefined;
    /** A delta not used, with the one-line reason (`failed`: tried and failed, else there was none to try); the pull follows. */
    onFallback?: (image: CloudImage, reason: string, failed: boolean) => void;
  };
  signal?: AbortSignal;
}): Promise<void> {
  await Promise.all(images.map(async (image) => {
    if (await present(docker, image.local)) {
      options.onDownloaded?.(image, { method: 'present', downloadedBytes: 0, pullBytes: 0, fallback: null });
      options.onProgress?.(image, 100);
      return;
    }
    let fallback: string | null = null;
    let deltaBytes = 0;
    const source = options.delta?.sourceOf(image);
    if (options.delta && source && 'gone' in source) {
      fallback = `no delta: the engine no longer has the image the service ran (${source.gone})`;
      options.delta.onFallback?.(image, fallback, false);
    } else if (options.delta && source && !('gone' in source)) {
      options.onProgress?.(image, 0);
      const outcome = await updateByDelta(options.delta.context, image, source, (percent) => options.onProgress?.(image, percent));
      if (outcome.kind === 'done') {
        options.onDownloaded?.(image, { method: 'delta', downloadedBytes: outcome.downloadedBytes, pullBytes: outcome.pullBytes, fallback: null });
        options.onProgress?.(image, 100);
        return;
      }
      fallback = outcome.kind === 'fallback' ? `delta failed: ${outcome.reason}` : outcome.reason;
      deltaBytes = outcome.downloadedBytes;
      options.delta.onFallback?.(image, outcome.reason, outcome.kind === 'fallback');
    }
    const reference = pullReference(image, options.serverHosts, options.proxyHost);
    const percent = new PullPercent();
    let last = -1;
    options.onProgress?.(image, 0);
    try {
      await docker.pull(reference, {
        signal: options.signal,
        onProgress: (p) => {
          percent.add(p);
          if (percent.percent !== last) {
            last = percent.percent;
            options.onProgress?.(image, last);
          }
        },
      });
      if (reference !== image.local) {
        const colon = image.local.lastIndexOf(':');
        await docker.getImage(reference).tag(image.local.slice(0, colon), image.local.slice(colon + 1));
      }
    } catch (err) {
      throw new Error(`could not pull image ${image.remote}: ${(err as Error).message}`, { cause: err });
    }
    options.onPulled?.(image, percent.layerCounts);
    options.onDownloaded?.(image, { method: 'pull', downloadedBytes: deltaBytes + percent.downloadedBytes, pullBytes: percent.downloadedBytes, fallback });
    options.onProgress?.(image, 100);
  }));
}

async function present(docker: EngineClient, name: string): Promise<boolean> {
  try {
    await docker.getImage(name).inspect();
    return true;
  } catch {
    return false;
  }
}
