/**
 * Brings a cloud target's images onto the device's engine: each image by digest from the
 * server's registry through the loopback pull proxy (see pull-proxy.ts), then tagged with its
 * stable local name ({@link localImageName}) so the agent's planner finds it by name as it finds
 * any image. An image already there under that name is not pulled again.
 */
import type { EngineClient, PullProgress } from '../../docker/engine-lite.js';
import type { CloudImage } from './target.js';

/**
 * A pull's percent from the engine's progress lines: the bytes of every layer seen so far over
 * their sizes; a layer that is there already (or finished) counts whole. Pure, for tests.
 */
export class PullPercent {
  private readonly layers = new Map<string, { current: number; total: number }>();
  private readonly existing = new Set<string>();

  add(p: PullProgress): void {
    if (!p.id || p.id.length < 12 || p.id.includes(':')) return; // lines about the image, not a layer
    const layer = this.layers.get(p.id) ?? { current: 0, total: 0 };
    if (p.status === 'Downloading' && p.progressDetail?.total) {
      layer.total = p.progressDetail.total;
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
  signal?: AbortSignal;
}): Promise<void> {
  await Promise.all(images.map(async (image) => {
    if (await present(docker, image.local)) {
      options.onProgress?.(image, 100);
      return;
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
