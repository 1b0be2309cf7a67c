/**
 * One image build on the engine's classic builder API, with its output parsed as it streams.
 */
import type { Readable } from 'node:stream';
import type Dockerode from 'dockerode';

export interface ImageBuildRequest {
  context: Readable;
  tag: string;
  dockerfile: string;
  buildArgs: Record<string, string>;
  /**
   * Build args the caller adds to every build (BuildKit's automatic platform args): the classic
   * builder's "not consumed" warning leaves them out, since most Dockerfiles don't declare them.
   */
  quietBuildArgs?: readonly string[];
  platform?: string;
  target?: string;
  labels?: Record<string, string>;
  cacheFrom?: string[];
  nocache?: boolean;
  pull?: boolean;
  squash?: boolean;
  registryConfig?: Record<string, { username: string; password: string }>;
  signal?: AbortSignal;
  /** Each line of build output, without the trailing newline. */
  onLine?: (line: string) => void;
  /**
   * BuildKit only: secret values by id, served to `RUN --mount=type=secret,id=<id>` through the
   * build's session; never written to the context, an image layer or the image config.
   */
  secrets?: Record<string, Buffer>;
  /** BuildKit only: the live view's snapshot, at most every 100 ms and once more when a step ends. */
  onProgress?: (progress: BuildProgress) => void;
}

/** Which builder the engine used: its BuildKit (`POST /build?version=2`) or the classic builder. */
export type BuilderKind = 'buildkit' | 'classic';

/** One step of a build, as the summary and `--json` report it. */
export interface BuildStepTime {
  /** As the builder names it: `[stage-0 3/6] RUN pip install -r requirements.txt`, or `RUN …` for the classic builder. */
  name: string;
  cached: boolean;
  /** Seconds the step took (0 for a cached step). */
  seconds: number;
}

/** A BuildKit build's state for the live view: one service, recomputed from the engine's trace. */
export interface BuildProgress {
  /** Steps finished, cached ones included, and how many of them came from the cache. */
  done: number;
  cached: number;
  /** Steps the build has announced so far (it grows as stages are planned). */
  total: number;
  /** The steps running now, oldest first; `startedAt` in ms since the epoch. */
  running: Array<{ name: string; startedAt: number }>;
  /** The last lines (at most 5) the running step printed most recently. */
  lastLines: string[];
}

export interface ImageBuildResult {
  imageId: string;
  builder: BuilderKind;
  /** Every step that makes a layer or runs (FROM and BuildKit's internal steps left out), in order. */
  stepTimes: BuildStepTime[];
  /** Steps that make a layer (FROM excluded), and how many of them came from the cache. */
  steps: number;
  cachedSteps: number;
}

/**
 * A failed build step: the engine's message, plus output for context: the classic builder's last
 * lines, or the failing BuildKit step's whole output (`step` names it).
 */
export class ImageBuildError extends Error {
  /** What the user can do (BuildKit errors that `buildkit/build.ts` explainBuildkitError recognises). */
  readonly hint?: string;
  /** Where, as `Dockerfile:N` or the Dockerfile's path, when the error names a place. */
  readonly where?: string;

  constructor(message: string, readonly tail: string[], readonly step?: string, options: { hint?: string; where?: string } = {}) {
    super(message);
    this.name = 'ImageBuildError';
    if (options.hint !== undefined) this.hint = options.hint;
    if (options.where !== undefined) this.where = options.where;
  }
}

const TAIL = 15;

const UNCONSUMED = /^\[Warning\] One or more build-args \[([^\]]*)\] were not consumed$/;

/** The classic builder's unconsumed-args warning without the `quiet` names; undefined when none are left. */
export function withoutQuietArgs(line: string, quiet: readonly string[]): string | undefined {
  const m = UNCONSUMED.exec(line.trim());
  if (!m || quiet.length === 0) return line;
  const left = (m[1] ?? '').split(/\s+/).filter((name) => name !== '' && !quiet.includes(name));
  return left.length === 0 ? undefined : `[Warning] One or more build-args [${left.join(' ')}] were not consumed`;
}

/**
 * Step times from the classic builder's output: a step runs from its `Step N/M : X` line to the
 * next step's line (or the end of the build); ` ---> Using cache` under it marks it cached.
 * FROM steps bound the times but are not listed (they make no layer), as BuildKit's are not.
 */
export class ClassicStepTimes {
  private readonly times: BuildStepTime[] = [];
  private current?: { name: string; at: number; cached: boolean; from: boolean };

  /** One output line and when it arrived (ms). */
  line(line: string, at: number): void {
    const step = /^Step \d+\/\d+ : (.*)$/.exec(line);
    if (step) {
      this.close(at);
      const name = (step[1] ?? '').trim();
      this.current = { name, at, cached: false, from: /^FROM\s/i.test(name) };
    } else if (this.current && /^ ---> Using cache$/.test(line)) this.current.cached = true;
  }

  /** The steps so far, closing the last one at `at` (ms). */
  end(at: number): BuildStepTime[] {
    this.close(at);
    return [...this.times];
  }

  private close(at: number): void {
    const c = this.current;
    this.current = undefined;
    if (!c || c.from) return;
    this.times.push({ name: c.name, cached: c.cached, seconds: c.cached ? 0 : Math.round(Math.max(0, at - c.at) / 100) / 10 });
  }
}

export async function buildImage(docker: Dockerode, req: ImageBuildRequest): Promise<ImageBuildResult> {
  const options: Record<string, unknown> = {
    t: req.tag,
    dockerfile: req.dockerfile,
    buildargs: req.buildArgs,
    rm: true,
    forcerm: true,
    nocache: Boolean(req.nocache),
    pull: Boolean(req.pull),
    ...(req.platform ? { platform: req.platform } : {}),
    ...(req.target ? { target: req.target } : {}),
    ...(req.labels && Object.keys(req.labels).length > 0 ? { labels: req.labels } : {}),
    ...(req.cacheFrom && req.cacheFrom.length > 0 ? { cachefrom: req.cacheFrom } : {}),
    ...(req.squash ? { squash: true } : {}),
    ...(req.registryConfig ? { registryconfig: req.registryConfig } : {}),
    ...(req.signal ? { abortSignal: req.signal } : {}),
  };
  const tail: string[] = [];
  const pushLine = (line: string) => {
    tail.push(line);
    if (tail.length > TAIL) tail.shift();
    req.onLine?.(line);
  };
  const response = (await docker.buildImage(req.context, options)) as unknown as Readable;
  const onAbort = () => {
    req.context.destroy();
    response.destroy();
  };
  req.signal?.addEventListener('abort', onAbort, { once: true });

  let imageId: string | undefined;
  let steps = 0;
  let cachedSteps = 0;
  let failure: string | undefined;
  let pending = '';
  const times = new ClassicStepTimes();

  const handle = (msg: { stream?: string; status?: string; progress?: string; id?: string; aux?: { ID?: string }; error?: string; errorDetail?: { message?: string } }) => {
    if (msg.aux?.ID) imageId = msg.aux.ID;
    if (msg.error || msg.errorDetail) {
      failure = msg.errorDetail?.message ?? msg.error ?? 'build failed';
      return;
    }
    if (msg.stream !== undefined) {
      pending += msg.stream;
      const lines = pending.split(/\r?\n/);
      pending = lines.pop() ?? '';
      for (const line of lines) {
        // FROM steps never report a cache hit, so only the steps that make layers are counted.
        if (/^Step \d+\/\d+ : (?!FROM\s)/i.test(line)) steps++;
        if (/^ ---> Using cache$/.test(line)) cachedSteps++;
        times.line(line, Date.now());
        const id = /^Successfully built ([0-9a-f]+)$/.exec(line)?.[1];
        if (id) imageId ??= id;
        // The engine's note that an emulated platform differs from its own: expected, and noise.
        if (/^ ---> \[Warning\] The requested image's platform/.test(line)) continue;
        const shown = withoutQuietArgs(line, req.quietBuildArgs ?? []);
        if (shown !== undefined && shown.trim() !== '') pushLine(shown);
      }
    } else if (msg.status) {
      // Pull progress: only the settled lines, not every progress tick.
      if (!msg.progress) pushLine(msg.id ? `${msg.id}: ${msg.status}` : msg.status);
    }
  };

  try {
    for await (const line of engineJsonLines(response)) {
      if ('text' in line) pushLine(line.text);
      else handle(line.json as Parameters<typeof handle>[0]);
    }
  } catch (err) {
    if (req.signal?.aborted) throw req.signal.reason ?? err;
    throw err;
  } finally {
    req.signal?.removeEventListener('abort', onAbort);
  }
  if (req.signal?.aborted) throw req.signal.reason ?? new Error('aborted');
  if (pending.trim() !== '') pushLine(pending);
  if (failure !== undefined) throw new ImageBuildError(failure.trim(), [...tail]);
  if (!imageId) throw new ImageBuildError('the engine finished without reporting an image', [...tail]);
  return { imageId, builder: 'classic', stepTimes: times.end(Date.now()), steps, cachedSteps };
}

/**
 * The engine's build answer (one JSON object per line, Docker API `POST /build`) as parsed values;
 * a line that is not JSON (an old engine's plain text) comes as its text. Blank lines are skipped.
 */
export async function* engineJsonLines(response: AsyncIterable<Buffer | string>): AsyncGenerator<{ json: unknown } | { text: string }> {
  let partial = '';
  for await (const chunk of response) {
    partial += chunk.toString();
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const text = partial.slice(0, nl).trim();
      partial = partial.slice(nl + 1);
      if (text) yield parseLine(text);
    }
  }
  if (partial.trim()) yield parseLine(partial.trim());
}

function parseLine(text: string): { json: unknown } | { text: string } {
  try {
    return { json: JSON.parse(text) as unknown };
  } catch {
    return { text };
  }
}
