/**
 * One image build on the engine's BuildKit (`POST /build?version=2`, Docker API 1.39+), with a
 * session serving the build's secrets and registry credentials, and the trace folded as it streams.
 */
import type { Readable } from 'node:stream';
import type Dockerode from 'dockerode';
import { engineJsonLines, ImageBuildError, type BuildProgress, type ImageBuildRequest, type ImageBuildResult } from '../image-build.js';
import { openBuildSession } from './session.js';
import { BuildkitTrace, decodeStatus } from './status.js';

/** How often the live view gets a snapshot while nothing ends (ms). */
const PROGRESS_EVERY_MS = 100;

/** What the engine's raw error text means, in one line, with what to do and where. */
export interface ExplainedBuildError {
  message: string;
  hint?: string;
  where?: string;
}

const NOISE = [/failed to solve with frontend [\w.]+: /g, /failed to solve: /g, /failed to create LLB definition: /g, /failed to build LLB: /g, /rpc error: code = \w+ desc = /g];

/**
 * Turns the engine's BuildKit error text into one clear line.
 * @param message the engine's `errorDetail.message` (or a failing vertex's error)
 * @param dockerfileWhere the Dockerfile as the user knows it (`web/Dockerfile`), for `where`
 * @param step the failing vertex's name, when known (`[internal] load metadata for …` means the base image)
 */
export function explainBuildkitError(message: string, dockerfileWhere: string, step?: string): ExplainedBuildError {
  const raw = message.trim();
  const frontend = /failed to solve with frontend gateway\.v0: (.*)$/s.exec(raw);
  if (frontend) {
    const reason = frontend[1] ?? '';
    const image = /https?:\/\/([^/"]+)\/v2\/(.+?)\/manifests\/([^"\s]+)/.exec(reason);
    const name = image ? `${image[1]}/${image[2]}:${image[3]}` : (/docker-image:\/\/([^\s"]+)/.exec(reason)?.[1] ?? 'its frontend image');
    return {
      message: `the Dockerfile's syntax directive names frontend image ${name}, which cannot be pulled (${shortReason(reason)})`,
      hint: "remove the '# syntax=' line to use the engine's built-in frontend, or load the image on the engine with docker load",
      where: `${dockerfileWhere}:1`,
    };
  }
  const secret = /secret (\S+?):? not found/.exec(raw) ?? /secret (\S+) not found/.exec(raw);
  if (secret) {
    const id = secret[1] ?? '';
    return {
      message: `the build needs secret '${id}', but secret '${id}' was not given`,
      hint: `add it to build-secrets in balena.yml, or pass --secret id=${id},src=<file>`,
      where: dockerfileWhere,
    };
  }
  // The command's whole text (a lowered heredoc's script too) is in the step's name and output:
  // the line says only what failed.
  const exec = /executor failed running \[.*\]: (?:exit code: |.*exit status )(\d+)\s*$/s.exec(raw);
  if (exec) {
    const keyword = /^\[[^\]]*\]\s*(\w+)/.exec(step ?? '')?.[1]?.toUpperCase() ?? 'RUN';
    return { message: `the ${keyword} step failed with exit code ${exec[1] ?? '?'}`, hint: 'its output is above; fix the command and build again' };
  }
  const missing = /failed to compute cache key: "?\/?([^"]*?)"? not found/.exec(raw);
  if (missing) {
    return {
      message: `${missing[1] ?? 'a source'} is not in the build context`,
      hint: 'check the COPY/ADD source path (relative to the build context), and that .dockerignore does not exclude it',
    };
  }
  const parse = /dockerfile parse error line (\d+): (.*)$/s.exec(raw);
  if (parse) return { message: `Dockerfile parse error: ${(parse[2] ?? '').trim()}`, where: `${dockerfileWhere}:${parse[1] ?? ''}` };
  const metadataStep = /^\[internal\] load metadata for (\S+)/.exec(step ?? '');
  const registryUrl = /https?:\/\/([^/"]+)\/v2\/(.+?)\/manifests\/([^"\s]+)/.exec(raw);
  if (metadataStep || /pull access denied|failed to resolve source metadata|failed to do request: Head "https?:\/\/[^"]+\/manifests\//.test(raw)) {
    const fromMessage = /(?:source metadata for|repository for|image) "?([^\s":]+(?::[^\s":]+)?)/.exec(raw)?.[1];
    const name = metadataStep?.[1] ?? fromMessage ?? (registryUrl ? `${registryUrl[1]}/${registryUrl[2]}:${registryUrl[3]}` : 'the base image');
    return {
      message: `the base image ${name} is neither on the engine nor pullable (${shortReason(raw)})`,
      hint: 'check the FROM line and the registry login, or load the image on the engine with docker load',
      where: dockerfileWhere,
    };
  }
  let cleaned = raw;
  for (const re of NOISE) cleaned = cleaned.replace(re, '');
  return { message: cleaned.trim() || raw };
}

function shortReason(text: string): string {
  if (/no such host/.test(text)) return 'the registry host is unknown';
  if (/connection refused/.test(text)) return 'the registry refused the connection';
  if (/i\/o timeout|context deadline exceeded/.test(text)) return 'the registry did not answer';
  if (/pull access denied|unauthorized|authentication required/.test(text)) return 'access denied';
  if (/not found|manifest unknown/.test(text)) return 'not found';
  const last = text.split(': ').pop() ?? text;
  return last.trim().slice(0, 120);
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new Error('aborted');
}

/**
 * Builds `req.context` (a tar) with the engine's BuildKit. Secrets and registry credentials go
 * through a session opened for this build and always closed after it.
 * @throws ImageBuildError when the build fails: `message` is {@link explainBuildkitError}'s text,
 *   `tail` the failing step's whole output (bounded, see `OUTPUT_MAX_LINES`), `step` its name
 * @throws the signal's reason when `req.signal` aborts the build
 */
export async function buildImageBuildkit(docker: Dockerode, req: ImageBuildRequest): Promise<ImageBuildResult> {
  if (req.signal?.aborted) throw abortReason(req.signal);
  const session = await openBuildSession(docker, { ...(req.secrets ? { secrets: req.secrets } : {}), ...(req.registryConfig ? { registryConfig: req.registryConfig } : {}) });
  let response: Readable | undefined;
  const onAbort = () => {
    req.context.destroy();
    response?.destroy();
    session.close();
  };
  req.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const query: Record<string, unknown> = {
      version: '2',
      session: session.id,
      t: req.tag,
      dockerfile: req.dockerfile,
      buildargs: req.buildArgs,
      nocache: Boolean(req.nocache),
      pull: Boolean(req.pull),
      rm: true,
      forcerm: true,
      ...(req.labels && Object.keys(req.labels).length > 0 ? { labels: req.labels } : {}),
      ...(req.platform ? { platform: req.platform } : {}),
      ...(req.target ? { target: req.target } : {}),
      // docker-modem JSON-encodes objects but not arrays: the API wants a JSON list here.
      ...(req.cacheFrom && req.cacheFrom.length > 0 ? { cachefrom: JSON.stringify(req.cacheFrom) } : {}),
    };
    response = await new Promise<Readable>((resolve, reject) => {
      docker.modem.dial(
        {
          path: '/build?',
          method: 'POST',
          options: query,
          file: req.context,
          isStream: true,
          headers: { 'Content-Type': 'application/x-tar' },
          ...(req.signal ? { abortSignal: req.signal } : {}),
          statusCodes: { 200: true, 400: 'bad parameter', 500: 'server error' },
        },
        (err: unknown, res: unknown) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(res as Readable)),
      );
    });
    if (req.signal?.aborted) {
      response.destroy();
      throw abortReason(req.signal);
    }
    return await follow(response, req);
  } catch (err) {
    if (req.signal?.aborted) throw abortReason(req.signal);
    throw err;
  } finally {
    req.signal?.removeEventListener('abort', onAbort);
    session.close();
  }
}

interface BuildLine {
  id?: string;
  aux?: unknown;
  stream?: string;
  error?: string;
  errorDetail?: { message?: string };
}

async function follow(response: Readable, req: ImageBuildRequest): Promise<ImageBuildResult> {
  const trace = new BuildkitTrace();
  let imageId: string | undefined;
  let failure: string | undefined;
  let lastProgress = 0;
  let pendingProgress: NodeJS.Timeout | undefined;
  const emitProgress = () => {
    if (pendingProgress) clearTimeout(pendingProgress);
    pendingProgress = undefined;
    lastProgress = Date.now();
    const p: BuildProgress = trace.progress();
    req.onProgress?.(p);
  };
  const progressSoon = (stepEnded: boolean) => {
    if (!req.onProgress) return;
    if (stepEnded || Date.now() - lastProgress >= PROGRESS_EVERY_MS) emitProgress();
    else pendingProgress ??= setTimeout(emitProgress, PROGRESS_EVERY_MS - (Date.now() - lastProgress));
  };

  const handle = (msg: BuildLine) => {
    if (msg.error !== undefined || msg.errorDetail !== undefined) {
      failure = msg.errorDetail?.message ?? msg.error ?? 'build failed';
      return;
    }
    if (msg.id === 'moby.buildkit.trace' && typeof msg.aux === 'string') {
      const decoded = decodeStatus(msg.aux);
      if (!decoded) return;
      const before = trace.progress().done;
      for (const line of trace.apply(decoded)) req.onLine?.(line);
      progressSoon(trace.progress().done !== before);
      return;
    }
    if (msg.id === 'moby.image.id' && msg.aux !== null && typeof msg.aux === 'object') {
      const id = (msg.aux as { ID?: unknown }).ID;
      if (typeof id === 'string') imageId = id;
      return;
    }
    if (typeof msg.stream === 'string') for (const line of msg.stream.split(/\r?\n/)) if (line.trim() !== '') req.onLine?.(line);
  };

  try {
    for await (const line of engineJsonLines(response)) {
      if ('text' in line) req.onLine?.(line.text);
      else if (line.json !== null && typeof line.json === 'object') handle(line.json as BuildLine);
    }
  } finally {
    if (pendingProgress) clearTimeout(pendingProgress);
  }
  if (req.signal?.aborted) throw abortReason(req.signal);
  if (req.onProgress) emitProgress();
  const failed = trace.failed();
  if (failure !== undefined || failed) {
    const explained = explainBuildkitError(failure ?? failed?.error ?? 'build failed', req.dockerfile, failed?.name);
    throw new ImageBuildError(explained.message, failed?.output ?? [], failed?.name, explained);
  }
  if (!imageId) throw new ImageBuildError('the engine finished without reporting an image', []);
  return { imageId, builder: 'buildkit', stepTimes: trace.stepTimes(), steps: trace.steps, cachedSteps: trace.cachedSteps };
}
