/**
 * The client side of a cloud build (`skiff push <fleet>`, and the server's own git hook): pack the
 * project as `skiff build` would read it, upload it as one tar body, then follow the build's event
 * log until its `done` event, re-attaching after a dropped connection from the last seq seen so the
 * output neither repeats nor skips (see src/lib/api/builds.ts for the wire shapes).
 */
import { createReadStream, createWriteStream, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import process from 'node:process';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SkiffError } from '../errors/errors.js';
import type { Build, BuildEventEnvelope, CreateBuildQuery, RemoteBuildEvent } from '../api/builds.js';
import type { Release } from '../api/resources.js';
import type { ResolvedBuild } from '../builder/build-project.js';
import type { IgnoreRules } from '../project/build-context.js';
import type { GitInfo } from '../project/git-info.js';
import type { CloudClient } from './client.js';

// ---------------------------------------------------------------------------------------------
// Packing

export interface PackProjectOptions {
  /** The fleet's device type: the project checks choose Dockerfiles for it, as the server will. */
  deviceType?: string;
  /** Each service's files are filtered by the .dockerignore of its own context (balena's -G). */
  multiDockerignore?: boolean;
  noParentCheck?: boolean;
  /** Folder for the temporary tar (default: the system's temp folder). */
  tmpDir?: string;
  signal?: AbortSignal;
}

/** The project as a tar file on disk, ready to upload (and to upload again). */
export interface PackedProject {
  /** The project as `skiff build --dry-run` reads it (the checks already passed). */
  resolved: ResolvedBuild;
  /** Bytes of the tar. */
  size: number;
  /** Files (not folders) in the tar. */
  files: number;
  /** A new stream of the tar from its start. */
  stream(): Readable;
  /** Removes the temporary tar. */
  dispose(): void;
}

/**
 * Packs the project in `source` for a cloud build: the same checks as `skiff build` (compose file,
 * Dockerfiles for the device type, balena.yml build-secret files present) first, with the compose
 * variables the server will have (the project's .env, not this shell's environment), then the project folder
 * as a tar, with the project's .dockerignore (or, with `multiDockerignore`, each service context's
 * own) applied and `.git` folders never included. The compose file, balena.yml, `.env`, and each
 * context's Dockerfiles and .dockerignore always go, since the server reads the project from them.
 *
 * The tar is written to a temporary file, so a large project is never held in memory and its size
 * is known before the upload (the progress bar's total, the server's early 413).
 *
 * @throws SkiffError('project') for a project that would not build, or a service whose build
 *   context lies outside the project folder (only the folder is uploaded); 'usage' for bad flags
 */
export async function packProject(source: string, options: PackProjectOptions = {}): Promise<PackedProject> {
  const [{ resolveBuild }, { loadIgnoreRules }, { BUILD_SETTINGS_FILES, loadBuildSettings }, { secretFiles }] = await Promise.all([
    import('../builder/build-project.js'), import('../project/build-context.js'), import('../project/balena-yml.js'), import('../builder/secrets.js'),
  ]);
  const resolved = await resolveBuild({
    source,
    ...(options.deviceType ? { deviceType: options.deviceType } : {}),
    multiDockerignore: options.multiDockerignore,
    noParentCheck: options.noParentCheck,
    // The server reads the compose file with the project's .env only, never this shell's variables:
    // check it the same way, so a variable only the shell has fails here and not after the upload.
    environment: {},
  });
  const root = resolved.source;
  const contexts: string[] = [];
  const kept = new Set<string>([
    ...(resolved.composeFile ? [path.join(root, resolved.composeFile)] : []),
    ...BUILD_SETTINGS_FILES.map((f) => path.join(root, f)),
    path.join(root, '.env'),
    path.join(root, '.dockerignore'),
    // The server's build serves them to RUN --mount=type=secret; it never puts them in a context,
    // and removes the upload when the build ends.
    ...secretFiles(root, await loadBuildSettings(root)),
  ]);
  for (const s of resolved.services) {
    if (!s.build) continue;
    const context = path.resolve(root, s.build.context);
    if (path.relative(root, context).startsWith('..')) {
      throw new SkiffError('project', `service '${s.name}' builds from '${s.build.context}', outside the project folder; skiff push uploads only the project folder`, {
        hint: 'move the service into the project folder, or build it here and use skiff deploy',
      });
    }
    contexts.push(context);
    kept.add(path.join(root, s.build.dockerfile));
    kept.add(path.join(context, '.dockerignore'));
    for (const f of readdirSync(context)) if (f.startsWith('Dockerfile')) kept.add(path.join(context, f));
  }
  const rules = new Map<string, IgnoreRules>([[root, await loadIgnoreRules(root)]]);
  if (options.multiDockerignore) {
    for (const c of contexts) if (!rules.has(c)) rules.set(c, await loadIgnoreRules(c));
  }
  const ignore = projectIgnore(root, rules, kept);

  const dir = mkdtempSync(path.join(options.tmpDir ?? os.tmpdir(), 'skiff-push-'));
  const file = path.join(dir, 'project.tar');
  const dispose = (): void => rmSync(dir, { recursive: true, force: true });
  let files = 0;
  try {
    const tar = await import('tar-fs');
    const pack = tar.pack(root, {
      ignore,
      map(header) {
        if (header.type === 'file') files++;
        return header;
      },
    });
    await pipeline(pack, createWriteStream(file), ...(options.signal ? [{ signal: options.signal }] : []));
  } catch (err) {
    dispose();
    if (options.signal?.aborted) throw new SkiffError('interrupted', 'interrupted while packing the project; nothing was uploaded');
    throw err;
  }
  return { resolved, size: statSync(file).size, files, stream: () => createReadStream(file), dispose };
}

/**
 * The tar-fs `ignore` for a project: a path is judged by the rules of the deepest folder in
 * `rules` holding it; `kept` paths go whatever the rules say; any `.git` folder stays out.
 * Exported for the tests.
 */
export function projectIgnore(root: string, rules: ReadonlyMap<string, IgnoreRules>, kept: ReadonlySet<string>): (name: string) => boolean {
  const bases = [...rules.keys()].sort((a, b) => b.length - a.length);
  const rulesFor = (name: string): IgnoreRules | undefined => {
    const base = bases.find((b) => name === b || name.startsWith(`${b}${path.sep}`));
    return base === undefined ? undefined : rules.get(base);
  };
  return (name: string): boolean => {
    const rel = path.relative(root, name);
    if (rel.split(path.sep).includes('.git')) return true;
    if (kept.has(name)) return false;
    const r = rulesFor(name);
    if (!r?.ignores(name)) return false;
    // A negated pattern can bring back a file inside an excluded folder, and a kept file may live
    // in one: walk such folders rather than prune them (their files are judged one by one).
    if (r.hasNegation || [...kept].some((k) => k.startsWith(`${name}${path.sep}`)) || bases.some((b) => b.startsWith(`${name}${path.sep}`))) {
      try {
        if (statSync(name).isDirectory()) return false;
      } catch {
        return true;
      }
    }
    return true;
  };
}

// ---------------------------------------------------------------------------------------------
// Upload

/** What {@link uploadBuild} needs of a client (the git hook passes its own CloudClient). */
export type UploadClient = Pick<CloudClient, 'upload' | 'url'>;

export interface UploadBuildOptions {
  draft?: boolean;
  nocache?: boolean;
  pull?: boolean;
  notes?: string;
  semver?: string;
  /** Release tags. */
  tags?: Record<string, string>;
  /** The project's commit (40 hex). */
  gitCommit?: string;
  /** The pushed ref (git builds). */
  gitRef?: string;
  /** The tree had changes not in `gitCommit`. */
  dirty?: boolean;
  /** `git` only from the server's pre-receive hook. */
  source?: 'push' | 'git';
  /** The tar was filtered by each service's own .dockerignore: the server builds the same way. */
  multiDockerignore?: boolean;
  /** `--buildkit` / `--no-buildkit`; absent: the server's builder decides (auto). */
  builder?: 'auto' | 'buildkit' | 'classic';
  /** Bytes sent so far, and in all when known. */
  onProgress?: (bytes: number, total: number | undefined) => void;
  /**
   * Aborts the upload while bytes are still to go (the server then creates nothing). Once the last
   * byte left, the answer is still awaited (the server may have created the build): the build is
   * returned and the caller, seeing its signal aborted, cancels it.
   */
  signal?: AbortSignal;
  /** No byte taken for this long, or no answer this long after the last byte: the upload fails (ms, default 60 s). */
  stallMs?: number;
  /** More request headers, e.g. the server's own git hook's `x-skiff-git-hook` with `source: 'git'`. */
  headers?: Record<string, string>;
}

/** After Ctrl-C with the whole tar sent, how long the server's answer (the build to cancel) is still awaited. */
const ABORT_ANSWER_MS = 10_000;

/** The upload's query string (the options as the route's strings). Exported for the tests. */
export function createBuildQuery(options: UploadBuildOptions): CreateBuildQuery {
  const flag = (v: boolean | undefined): 'true' | undefined => (v ? 'true' : undefined);
  const tag = Object.entries(options.tags ?? {}).map(([k, v]) => `${k}=${v}`);
  const query: CreateBuildQuery = {
    draft: flag(options.draft), nocache: flag(options.nocache), pull: flag(options.pull), dirty: flag(options.dirty),
    multiDockerignore: flag(options.multiDockerignore),
    builder: options.builder === 'auto' ? undefined : options.builder,
    notes: options.notes, semver: options.semver, gitCommit: options.gitCommit, gitRef: options.gitRef, source: options.source,
    tag: tag.length > 0 ? tag : undefined,
  };
  return Object.fromEntries(Object.entries(query).filter(([, v]) => v !== undefined)) as CreateBuildQuery;
}

/**
 * Uploads a project tar to `fleet` (`POST /fleets/:fleet/builds`, `application/x-tar`) and returns
 * the queued build. `tar.size`, when known, is sent as content-length, so the server refuses a
 * too-large context before the upload.
 *
 * @throws SkiffError: notFound (the fleet, or one the user cannot see), usage (the server refused
 *   an option or the size: 400/413), serverUnreachable (no answer, or the upload stalled),
 *   interrupted (the signal aborted before the last byte; nothing was created)
 */
export async function uploadBuild(client: UploadClient, fleet: string, tar: { stream: Readable; size?: number }, options: UploadBuildOptions = {}): Promise<Build> {
  const stallMs = options.stallMs ?? 60_000;
  const total = tar.size;
  let sent = 0;
  let finished = false;
  let last = Date.now();
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      sent += chunk.length;
      last = Date.now();
      options.onProgress?.(sent, total);
      cb(null, chunk);
    },
    flush(cb) {
      finished = true;
      last = Date.now();
      cb();
    },
  });
  tar.stream.on('error', (err) => counter.destroy(err));
  tar.stream.pipe(counter);
  const own = new AbortController();
  let stalled = false;
  // Set by an abort after the last byte left: how long the answer may still take.
  let answerBy: number | undefined;
  let gaveUp = false;
  const watchdog = setInterval(() => {
    if (answerBy !== undefined) {
      if (Date.now() < answerBy) return;
      gaveUp = true;
      own.abort(new Error('interrupted'));
    } else if (Date.now() - last >= stallMs) {
      stalled = true;
      own.abort(new Error('stalled'));
    }
  }, Math.min(1000, stallMs));
  const onAbort = (): void => {
    if (!finished) own.abort(options.signal?.reason);
    else answerBy = Date.now() + Math.min(stallMs, ABORT_ANSWER_MS);
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  try {
    // The answer comes after the whole body: the watchdog, not a fixed timeout, bounds the wait.
    return await client.upload<Build>('createBuild', {
      params: { fleet },
      query: { ...createBuildQuery(options) },
      body: counter,
      headers: {
        ...options.headers, 'content-type': 'application/x-tar',
        ...(total !== undefined ? { 'content-length': String(total) } : { 'transfer-encoding': 'chunked' }),
      },
      signal: own.signal,
    });
  } catch (err) {
    if (gaveUp) {
      throw new SkiffError('interrupted', `interrupted after the whole project was sent; ${client.url} did not answer within ${Math.round(Math.min(stallMs, ABORT_ANSWER_MS) / 1000)} s, so a build may exist`, {
        hint: `skiff build-logs shows it (GET /fleets/${fleet}/builds lists the fleet's builds)`,
      });
    }
    if (stalled) {
      throw new SkiffError('serverUnreachable', finished
        ? `${client.url} did not answer within ${Math.round(stallMs / 1000)} s of the upload's end`
        : `the upload to ${client.url} stalled: nothing was taken for ${Math.round(stallMs / 1000)} s (${sent} bytes sent)`, { hint: 'check the network and the server, then push again', cause: err });
    }
    if (options.signal?.aborted) throw new SkiffError('interrupted', 'upload interrupted; the server created no build');
    throw err;
  } finally {
    clearInterval(watchdog);
    options.signal?.removeEventListener('abort', onAbort);
    tar.stream.unpipe(counter);
    if (!finished) tar.stream.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Following

/** The last event of every build. */
export type BuildDone = Extract<RemoteBuildEvent, { kind: 'done' }>;

export interface FollowBuildOptions {
  /** Events up to this seq were seen already (default 0: from the start). */
  after?: number;
  onEvent?: (envelope: BuildEventEnvelope) => void;
  /** A dropped stream is being re-attached: attempt 1, 2, … since the last event, and why. */
  onReattach?: (attempt: number, reason: string) => void;
  signal?: AbortSignal;
  /** Re-attaches in a row (without an event between) before giving up (default 10). */
  maxAttempts?: number;
  /** No byte (the server sends a keep-alive every 15 s) for this long counts as a dropped stream (ms, default 45 s). */
  idleMs?: number;
  /** Wait before attempt `n` (ms); default backoff 0.5 s doubling to 8 s, with jitter. */
  retryDelayMs?: (attempt: number) => number;
}

/** 0.5 s, 1 s, 2 s … up to 8 s, each scaled by a random 0.5–1 so many clients do not return together. */
export function reattachDelayMs(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(8000, 500 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.5 + random() / 2));
}

/** Errors that another attempt cannot fix: the build is gone or not ours, the token is wrong. */
const FINAL_CODES = new Set(['notFound', 'notLoggedIn', 'usage', 'interrupted']);

/**
 * Follows build `id` until its `done` event and returns it. Each event is given to `onEvent` once,
 * in seq order: after a dropped connection, a stream that ends early or one silent for `idleMs`,
 * it re-attaches with `after=<last seq seen>` (backoff with jitter) and drops any repeat.
 *
 * @throws SkiffError: notFound / notLoggedIn at once; serverUnreachable after `maxAttempts` failed
 *   re-attaches in a row (naming `skiff build-logs <id> --follow`); interrupted when `signal` aborts
 */
export async function followBuild(client: Pick<CloudClient, 'stream'>, id: string, options: FollowBuildOptions = {}): Promise<BuildDone> {
  const maxAttempts = options.maxAttempts ?? 10;
  const idleMs = options.idleMs ?? 45_000;
  const delay = options.retryDelayMs ?? ((n: number) => reattachDelayMs(n));
  let last = options.after ?? 0;
  let failures = 0;
  for (;;) {
    if (options.signal?.aborted) throw new SkiffError('interrupted', `stopped following build ${id.slice(0, 7)}`);
    let done: BuildDone | undefined;
    let idle = false;
    const attempt = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, attempt.signal]) : attempt.signal;
    let lastByte = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - lastByte < idleMs) return;
      idle = true;
      attempt.abort(new Error('idle'));
    }, Math.min(1000, idleMs));
    let reason: string;
    try {
      const response = await client.stream('buildEvents', {
        params: { id },
        query: { after: String(last), follow: 'true' },
        headers: { accept: 'text/event-stream' },
        signal,
        headersTimeoutMs: Math.max(idleMs, 10_000),
      });
      if (!response.body) throw new Error('the server answered without a body');
      const watched = response.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          lastByte = Date.now();
          controller.enqueue(chunk);
        },
      }), { signal });
      const { readServerSentEvents } = await import('./sse.js');
      await readServerSentEvents(watched, (sse) => {
        if (done) return;
        const envelope = parseEnvelope(sse.data);
        if (envelope.seq <= last) return;
        last = envelope.seq;
        failures = 0;
        options.onEvent?.(envelope);
        if (envelope.event.kind === 'done') {
          done = envelope.event;
          attempt.abort(new Error('done'));
        }
      });
      if (done) return done;
      reason = 'the server ended the stream before the build finished';
    } catch (err) {
      if (done) return done;
      if (options.signal?.aborted) throw new SkiffError('interrupted', `stopped following build ${id.slice(0, 7)}`);
      if (err instanceof SkiffError && FINAL_CODES.has(err.code) && !idle) throw err;
      if (err instanceof SyntaxError) throw new SkiffError('error', `build ${id.slice(0, 7)}: the server sent an event that is not JSON`, { cause: err });
      reason = idle ? `no data for ${Math.round(idleMs / 1000)} s` : describeFailure(err);
    } finally {
      clearInterval(watchdog);
    }
    failures++;
    if (failures > maxAttempts) {
      throw new SkiffError('serverUnreachable', `lost the output of build ${id.slice(0, 7)} (${reason}) and could not re-attach after ${maxAttempts} attempts; the build goes on on the server`, {
        hint: `follow it again with: skiff build-logs ${id} --follow`,
      });
    }
    options.onReattach?.(failures, reason);
    await sleep(delay(failures), options.signal);
  }
}

function parseEnvelope(data: string): BuildEventEnvelope {
  const value = JSON.parse(data) as Partial<BuildEventEnvelope>;
  if (typeof value.seq !== 'number' || typeof value.event?.kind !== 'string') throw new SyntaxError('not a build event');
  return value as BuildEventEnvelope;
}

function describeFailure(err: unknown): string {
  if (err instanceof SkiffError) return err.message;
  const e = err as { message?: string; cause?: { message?: string; code?: string } };
  return e.cause?.message ?? e.cause?.code ?? e.message ?? String(err);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * The events a build has so far, without following (`skiff build-logs BUILD`): one pass, no
 * re-attach. Returns the last seq seen.
 */
export async function readBuildEvents(client: Pick<CloudClient, 'stream'>, id: string, options: { after?: number; onEvent?: (envelope: BuildEventEnvelope) => void; signal?: AbortSignal } = {}): Promise<number> {
  let last = options.after ?? 0;
  const response = await client.stream('buildEvents', {
    params: { id }, query: { after: String(last), follow: 'false' }, headers: { accept: 'text/event-stream' }, ...(options.signal ? { signal: options.signal } : {}),
  });
  if (!response.body) return last;
  const { readServerSentEvents } = await import('./sse.js');
  await readServerSentEvents(response.body, (sse) => {
    const envelope = parseEnvelope(sse.data);
    if (envelope.seq <= last) return;
    last = envelope.seq;
    options.onEvent?.(envelope);
  });
  return last;
}

/**
 * Cancels build `id` (Ctrl-C before its release) and waits for its `done`, which says what became
 * of it: `cancelled`, or `success` when the release was made first. Uses a client without the
 * caller's (aborted) signal; a build that already finished (409) is only followed to its end.
 */
export async function cancelBuildAndWait(client: CloudClient, id: string, options: { after?: number; onEvent?: (envelope: BuildEventEnvelope) => void; timeoutMs?: number } = {}): Promise<BuildDone> {
  const free = client.detached();
  await free.cancelBuild(id).catch((err: unknown) => {
    // 409: it ended already. No answer in time: the server waits for the build to stop before it
    // answers, and may take as long as our timeout; the events below say how it ended either way.
    if (!(err instanceof SkiffError && (err.code === 'conflict' || err.code === 'serverUnreachable'))) throw err;
  });
  return followBuild(free, id, { after: options.after, onEvent: options.onEvent, signal: AbortSignal.timeout(options.timeoutMs ?? 120_000), maxAttempts: 3 });
}

// ---------------------------------------------------------------------------------------------
// `skiff push <fleet>` as one function

export interface PushToFleetOptions {
  client: CloudClient;
  fleet: string;
  source: string;
  draft?: boolean;
  nocache?: boolean;
  pull?: boolean;
  notes?: string;
  tags?: Record<string, string>;
  multiDockerignore?: boolean;
  noParentCheck?: boolean;
  /** `--buildkit` / `--no-buildkit` for the server's build; absent: auto. */
  builder?: 'auto' | 'buildkit' | 'classic';
  /** Return once the server has the project (the build goes on). */
  detached?: boolean;
  signal?: AbortSignal;
  onEvent?: (event: PushEvent) => void;
  /** Tests: re-attach faster. */
  retryDelayMs?: (attempt: number) => number;
}

/** What the UI is told while pushing to a fleet. */
export type PushEvent =
  | { kind: 'warning'; message: string }
  | { kind: 'git'; info: GitInfo }
  | { kind: 'packed'; bytes: number; files: number }
  | { kind: 'upload-progress'; bytes: number; total: number | undefined }
  | { kind: 'uploaded'; build: Build }
  | { kind: 'build'; envelope: BuildEventEnvelope }
  | { kind: 'reattach'; attempt: number; reason: string }
  | { kind: 'cancelling'; build: string };

export interface PushToFleetResult {
  build: Build;
  /** The release made; absent with `detached`. */
  release?: Release;
}

/** A compose variable the shell has but the server will not: say why the warning comes anyway. */
export function withShellNote(warning: string, environment: NodeJS.ProcessEnv = process.env): string {
  const name = /variable (\w+) is not set/.exec(warning)?.[1];
  return name !== undefined && environment[name] !== undefined
    ? `${warning} (${name} is set in this shell, but the server builds with the project's .env only: put it there)`
    : warning;
}

/** Lines of each service's output kept for the error of a failed build. */
const TAIL_LINES = 20;

/**
 * `skiff push <fleet>`: checks the fleet, packs the project, uploads it, follows the build and
 * returns the release. Ctrl-C before the release exists cancels the build on the server and waits
 * for it to stop; after, the release stands.
 *
 * @throws SkiffError: notFound (the fleet), project (the project does not build here either),
 *   buildFailed (the failing service's last lines as details; no release), interrupted (Ctrl-C;
 *   the message says whether a build was cancelled or the release stands), serverUnreachable
 */
export async function pushToFleet(options: PushToFleetOptions): Promise<PushToFleetResult> {
  const emit = options.onEvent ?? (() => {});
  const { client, signal } = options;
  const fleet = await client.fleet(options.fleet);
  const { projectGitInfo } = await import('../project/git-info.js');
  const git = await projectGitInfo(options.source);
  if (git) emit({ kind: 'git', info: git });
  const packed = await packProject(options.source, {
    deviceType: fleet.deviceType, multiDockerignore: options.multiDockerignore, noParentCheck: options.noParentCheck, ...(signal ? { signal } : {}),
  });
  let build: Build;
  try {
    for (const w of packed.resolved.warnings) emit({ kind: 'warning', message: withShellNote(w) });
    emit({ kind: 'packed', bytes: packed.size, files: packed.files });
    build = await uploadBuild(client, fleet.name, { stream: packed.stream(), size: packed.size }, {
      draft: options.draft, nocache: options.nocache, pull: options.pull, notes: options.notes, tags: options.tags,
      multiDockerignore: options.multiDockerignore, source: 'push',
      ...(options.builder ? { builder: options.builder } : {}),
      ...(git ? { gitCommit: git.commit, dirty: git.dirty } : {}),
      onProgress: (bytes, total) => emit({ kind: 'upload-progress', bytes, total }),
      ...(signal ? { signal } : {}),
    });
  } finally {
    packed.dispose();
  }
  emit({ kind: 'uploaded', build });

  let last = 0;
  let release: Release | undefined;
  let failed: string | undefined;
  const tails = new Map<string, string[]>();
  const seen = (envelope: BuildEventEnvelope): void => {
    last = envelope.seq;
    const e = envelope.event;
    if (e.kind === 'log') {
      const tail = tails.get(e.service) ?? [];
      tail.push(e.line);
      if (tail.length > TAIL_LINES) tail.shift();
      tails.set(e.service, tail);
    } else if (e.kind === 'service-failed') failed ??= e.service;
    else if (e.kind === 'release') release = e.release;
    emit({ kind: 'build', envelope });
  };
  if (signal?.aborted) return cancelled(options, build, last, seen);
  if (options.detached) return { build };

  let done: BuildDone;
  try {
    done = await followBuild(client.detached(), build.id, {
      onEvent: seen,
      onReattach: (attempt, reason) => emit({ kind: 'reattach', attempt, reason }),
      ...(signal ? { signal } : {}),
      ...(options.retryDelayMs ? { retryDelayMs: options.retryDelayMs } : {}),
    });
  } catch (err) {
    if (!(signal?.aborted)) throw err;
    if (release) throw new SkiffError('interrupted', `stopped following build ${build.id.slice(0, 7)}; release ${release.commit.slice(0, 7)} was made and stands`);
    return cancelled(options, build, last, seen);
  }
  return finish(client, build, done, release, failed, tails);
}

async function cancelled(options: PushToFleetOptions, build: Build, last: number, seen: (e: BuildEventEnvelope) => void): Promise<never> {
  options.onEvent?.({ kind: 'cancelling', build: build.id });
  const done = await cancelBuildAndWait(options.client, build.id, { after: last, onEvent: seen });
  if (done.status === 'success' && done.release) {
    throw new SkiffError('interrupted', `build ${build.id.slice(0, 7)} finished before it could be cancelled; release ${done.release.slice(0, 7)} stands`);
  }
  throw new SkiffError('interrupted', `Build cancelled: build ${build.id.slice(0, 7)} stopped on the server and no release was made`);
}

async function finish(client: CloudClient, build: Build, done: BuildDone, release: Release | undefined, failed: string | undefined, tails: ReadonlyMap<string, string[]>): Promise<PushToFleetResult> {
  const short = build.id.slice(0, 7);
  if (done.status === 'success') {
    const made = release ?? (done.release ? await client.detached().release(done.release) : undefined);
    if (!made) throw new SkiffError('error', `build ${short} succeeded but the server named no release`);
    return { build: { ...build, status: 'success', release: made.commit }, release: made };
  }
  if (done.status === 'cancelled') {
    throw new SkiffError('interrupted', `build ${short} was cancelled on the server${done.error ? ` (${done.error})` : ''}; no release was made`);
  }
  const service = failed ?? [...tails.keys()].pop();
  const details = service ? (tails.get(service) ?? []).map((l) => `[${service}] ${l}`) : [];
  throw new SkiffError('buildFailed', `build ${short} failed${done.error ? `: ${done.error}` : ''}; no release was made`, {
    details,
    hint: `fix the error and push again ('skiff build-logs ${short}' shows the whole output)`,
  });
}

/**
 * balena's rule for `push <fleetOrDevice>`: an IP address (v4, or v6 in brackets when a port
 * follows) or a `.local` name, each optionally with `:port`, is a device on the LAN; anything else
 * names a fleet.
 */
export function pushTargetKind(arg: string): 'device' | 'fleet' {
  let host = arg.trim();
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(host);
  if (bracketed?.[1] !== undefined) return isIP(bracketed[1]) === 6 ? 'device' : 'fleet';
  if (isIP(host) !== 0) return 'device';
  const port = /^(.*):(\d{1,5})$/.exec(host);
  if (port?.[1] !== undefined) host = port[1];
  if (isIP(host) === 4) return 'device';
  return /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+local\.?$/i.test(host) ? 'device' : 'fleet';
}
