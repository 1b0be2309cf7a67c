/**
 * Making sure an image is on the engine for the right platform before a build or a run needs it,
 * so a missing base image is one clear message instead of a failed build step.
 */
import type { Readable } from 'node:stream';
import { SkiffError } from '../errors/errors.js';
import type { Engine } from './engine.js';

export interface LocalImage {
  id: string;
  size: number;
  architecture: string;
  variant?: string;
}

function samePlatform(image: { Architecture?: string }, platform: string): boolean {
  const wanted = platform.split('/')[1];
  return !wanted || image.Architecture === wanted;
}

async function inspect(engine: Engine, name: string): Promise<{ Id: string; Size: number; Architecture: string; Variant?: string } | undefined> {
  try {
    return (await engine.docker.getImage(name).inspect()) as { Id: string; Size: number; Architecture: string; Variant?: string };
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return undefined;
    throw err;
  }
}

/**
 * Returns the local image, pulling it for `platform` when it is missing, for another architecture,
 * or when `pull` asks for a fresh copy.
 */
export async function ensureImage(
  engine: Engine,
  name: string,
  platform: string,
  options: { pull?: boolean; service: string; where?: string; signal?: AbortSignal },
): Promise<LocalImage> {
  const local = await inspect(engine, name);
  if (local && samePlatform(local, platform) && !options.pull) return toLocal(local);
  try {
    await pull(engine, name, platform, options.signal);
  } catch (err) {
    if (local && options.pull && samePlatform(local, platform)) return toLocal(local); // offline: keep the local copy
    const reason = engineWords((err as { json?: { message?: string } }).json?.message ?? (err as Error).message);
    const what = local
      ? `base image '${name}' on the engine is for ${local.Architecture}, not ${platform}, and the ${platform} one could not be pulled (${reason})`
      : `image '${name}' is not on the engine and could not be pulled (${reason})`;
    throw new SkiffError('buildFailed', `service '${options.service}': ${what}`, {
      ...(options.where ? { where: options.where } : {}),
      hint: `load or build '${name}' for ${platform} on the engine first (docker load, docker import, docker build --platform ${platform}), or check the name`,
    });
  }
  const after = await inspect(engine, name);
  if (!after) throw new SkiffError('buildFailed', `service '${options.service}': image '${name}' is still missing after a pull`);
  return toLocal(after);
}

function toLocal(i: { Id: string; Size: number; Architecture: string; Variant?: string }): LocalImage {
  return { id: i.Id, size: i.Size, architecture: i.Architecture, ...(i.Variant ? { variant: i.Variant } : {}) };
}

/** The engine's own words, without dockerode's "(HTTP code 500) server error - " wrapper. */
function engineWords(s: string): string {
  return (s.split('\n')[0] ?? s).replace(/^\(HTTP code \d+\)[^-]*- /, '').trim();
}

async function pull(engine: Engine, name: string, platform: string, signal?: AbortSignal): Promise<void> {
  const stream = (await engine.docker.pull(name, { platform, ...(signal ? { abortSignal: signal } : {}) })) as Readable;
  await new Promise<void>((resolve, reject) => {
    engine.docker.modem.followProgress(stream, (err: Error | null, output: Array<{ error?: string }>) => {
      const failed = output?.find((o) => o.error);
      if (err) reject(err);
      else if (failed?.error) reject(new Error(failed.error));
      else resolve();
    });
  });
}
