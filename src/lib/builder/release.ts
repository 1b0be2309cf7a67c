/**
 * Builds a project into a release: every service's image for one target, in parallel (bounded),
 * on one engine. Emits events for the UI and returns the release manifest.
 */
import path from 'node:path';
import process from 'node:process';
import { existsSync } from 'node:fs';
import { SkiffError } from '../errors/errors.js';
import { ARCHES, AUTOMATIC_PLATFORM_ARGS, automaticPlatformArgs, platformString, archFromDocker, type BuildTarget, type Platform } from '../device-types/device-types.js';
import type { Engine } from '../docker/engine.js';
import { emulationStatus, emulationHint, registerEmulation } from '../docker/emulation.js';
import { buildImage, ImageBuildError, type BuilderKind, type BuildProgress, type BuildStepTime } from '../docker/image-build.js';
import { buildImageBuildkit, explainBuildkitError } from '../docker/buildkit/build.js';
import { ensureImage } from '../docker/images.js';
import { buildArgsFor, loadBuildSettings, type BuildSettings } from '../project/balena-yml.js';
import { classicBuilderError, lowerDockerfile, missingSecretsError, scanDockerfile, type DockerfileScan } from '../project/dockerfile-features.js';
import { chooseBuilder, frontendHasHeredocs, type BuilderChoice, type BuilderRequest } from './builder-choice.js';
import { hasSecrets, readSecretFlags, readServiceSecrets, SECRETS_DIR, type SecretFlag } from './secrets.js';
import { warningLine } from '../project/project.js';
import { loadIgnoreRules, packContext, type IgnoreRules } from '../project/build-context.js';
import { dockerfileFacts, logicalLines, resolveDockerfile, stageEnd, withoutLinesFrom, type DockerfileFacts, type ResolvedDockerfile } from '../project/dockerfile.js';
import type { BuildSpec, ProjectSpec, ServiceSpec } from '../project/types.js';

export interface ReleaseBuildOptions {
  project: ProjectSpec;
  target: BuildTarget;
  engine: Engine;
  /** The tag part of `<project>_<service>:<tag>`. */
  tag?: string;
  nocache?: boolean;
  pull?: boolean;
  squash?: boolean;
  /** --buildArg values, applied to every service last. */
  buildArgs?: Record<string, string>;
  /** --cache-from images, added to every service's own. */
  cacheFrom?: string[];
  /** Each service uses the .dockerignore of its own context. */
  multiDockerignore?: boolean;
  /** Register qemu emulation when it is missing (needs root). */
  emulated?: boolean;
  /** Don't convert CRLF line endings in Dockerfiles. */
  noConvertEol?: boolean;
  registryConfig?: Record<string, { username: string; password: string }>;
  /** How many services build at once. */
  concurrency?: number;
  signal?: AbortSignal;
  onEvent?: (event: BuildEvent) => void;
  /** Extra labels put on every image (tests use them to clean up). */
  labels?: Record<string, string>;
  /** %%BALENA_APP_NAME%%: the fleet's name; the project's name when absent. */
  appName?: string;
  /** %%BALENA_RELEASE_HASH%%; `unavailable` when absent, as in balena-cli's local builds. */
  releaseHash?: string;
  /** `--buildkit` / `--no-buildkit`; `auto` (the default) uses BuildKit when the engine has it. */
  builder?: BuilderRequest;
  /** `--secret` flags, given to every service (after balena.yml's build-secrets). */
  secrets?: SecretFlag[];
  /** For `DOCKER_BUILDKIT` and `--secret id=x,env=VAR`; the process environment when absent. */
  environment?: NodeJS.ProcessEnv;
}

export type BuildEvent =
  | { kind: 'plan'; services: string[]; deviceType: string; arch: string; platform: string; engine: string }
  | { kind: 'service-start'; service: string }
  | { kind: 'log'; service: string; line: string }
  /** Which builder this build uses and why, said once before the first service starts. */
  | { kind: 'builder'; builder: BuilderKind; message: string }
  /** A BuildKit build's live state (never stored or sent by the server: log lines carry the same). */
  | { kind: 'progress'; service: string; progress: BuildProgress }
  | { kind: 'service-done'; service: string; result: ServiceImage }
  | { kind: 'service-failed'; service: string; message: string }
  | { kind: 'warning'; message: string }
  | { kind: 'info'; message: string };

export interface ServiceImage {
  service: string;
  /** `<project>_<service>:<tag>`, or the compose `image` for services that don't build. */
  image: string;
  imageId: string;
  /** Bytes, as the engine reports the image's size. */
  size: number;
  architecture: string;
  variant?: string;
  source: 'build' | 'image';
  buildSeconds: number;
  steps: number;
  cachedSteps: number;
  /** The builder that made it; absent for a service that does not build. */
  builder?: BuilderKind;
  /** Each step's name, cache hit and seconds, in order; absent for a service that does not build. */
  stepTimes?: BuildStepTime[];
  /** Which Dockerfile was used, relative to the project. */
  dockerfile?: string;
  contextBytes?: number;
}

export interface ReleaseManifest {
  project: string;
  source: string;
  deviceType: string;
  arch: string;
  platform: string;
  tag: string;
  commit?: string;
  engine: { address: string; version: string; arch: string };
  createdAt: string;
  buildSeconds: number;
  services: ServiceImage[];
  volumes: string[];
  networks: string[];
}

const GB = 1024 ** 3;

interface PreparedService {
  spec: ServiceSpec;
  image: string;
  dockerfile?: ResolvedDockerfile;
  facts?: DockerfileFacts;
  rules?: IgnoreRules;
  buildArgs: Record<string, string>;
  /** Automatic build args the user did not set themselves. */
  quietBuildArgs: string[];
  /** BuildKit secrets by id (empty for the classic builder, which refuses them). */
  secrets?: Record<string, Buffer>;
  /** The Dockerfile's path relative to the project, for `file:line` in messages. */
  where?: string;
  /** Rewritten instructions (lowered heredocs) → what the user wrote, for step names shown. */
  renames?: Array<[string, string]>;
}

export function imageName(project: string, service: string, tag = 'latest'): string {
  return `${project}_${service}:${tag}`.toLowerCase();
}

/** How one service is built, decided before anything runs; shared by the build and `build --dry-run`. */
export interface ServiceBuildPlan {
  dockerfile: ResolvedDockerfile;
  /** balena.yml build-variables (global, then the service's), compose build.args, then --buildArg. */
  userArgs: Record<string, string>;
  /** What the build sends: BuildKit's automatic platform args, with the user's over them. */
  buildArgs: Record<string, string>;
  /** Automatic args whose "not consumed" warning is not the user's business. */
  quietBuildArgs: string[];
  /** The folder whose .dockerignore applies: the project's, or the context's own. */
  ignoreDir: string;
  /** Said to the user, e.g. a service's .dockerignore that is not used. */
  warnings: string[];
}

/**
 * Chooses and templates a service's Dockerfile, merges its build args and picks the .dockerignore
 * that applies, as balena does: no I/O beyond reading the Dockerfile.
 *
 * @throws SkiffError('project') for a missing Dockerfile or an unknown %%VAR%% in a template
 */
export function planServiceBuild(
  project: ProjectSpec, spec: ServiceSpec, build: BuildSpec, target: BuildTarget, settings: BuildSettings,
  options: Pick<ReleaseBuildOptions, 'appName' | 'releaseHash' | 'noConvertEol' | 'buildArgs' | 'multiDockerignore'> & { enginePlatform: Platform },
): ServiceBuildPlan {
  const names = { service: spec.name, appName: options.appName ?? project.name, ...(options.releaseHash ? { releaseHash: options.releaseHash } : {}) };
  let dockerfile = resolveDockerfile(build.context, build.dockerfile, target, project.dir, names);
  if (!options.noConvertEol && dockerfile.contents.includes('\r\n')) {
    dockerfile = { ...dockerfile, contents: dockerfile.contents.replace(/\r\n/g, '\n'), processed: true };
  }
  const userArgs = buildArgsFor(spec.name, settings, build.args, options.buildArgs ?? {});
  const buildArgs = { ...automaticPlatformArgs(target.platform, options.enginePlatform), ...userArgs };
  const quietBuildArgs = AUTOMATIC_PLATFORM_ARGS.filter((name) => !(name in userArgs));
  const warnings: string[] = [];
  let ignoreDir = project.dir;
  const ownIgnore = path.join(build.context, '.dockerignore');
  // A context outside the project folder has its own .dockerignore, as with docker compose.
  if (path.relative(project.dir, build.context).startsWith('..')) ignoreDir = build.context;
  // With --multi-dockerignore a service's context uses its own .dockerignore, or none, as balena-cli does.
  else if (build.context !== project.dir && options.multiDockerignore) ignoreDir = build.context;
  else if (build.context !== project.dir && existsSync(ownIgnore)) {
    warnings.push(`${path.relative(project.dir, ownIgnore)} is not used; the project's root .dockerignore applies to every service unless you pass --multi-dockerignore`);
  }
  return { dockerfile, userArgs, buildArgs, quietBuildArgs, ignoreDir, warnings };
}

export async function buildRelease(options: ReleaseBuildOptions): Promise<ReleaseManifest> {
  const started = Date.now();
  const { project, target, engine } = options;
  const emit = options.onEvent ?? (() => {});
  const tag = options.tag ?? 'latest';
  const platform = platformString(target.platform);
  const settings = await loadBuildSettings(project.dir);
  for (const w of settings.warnings) emit({ kind: 'warning', message: warningLine(w) });
  const environment = options.environment ?? process.env;

  // BuildKit's automatic platform args, which Dockerfiles written for buildx read; BUILD* is the engine.
  const enginePlatform = options.engine.arch ? ARCHES[options.engine.arch].platform : target.platform;
  const rulesByDir = new Map<string, Promise<IgnoreRules>>();
  // First what each service's Dockerfile needs, then the builder, then the checks against it.
  const planned: Array<{ spec: ServiceSpec; plan: ServiceBuildPlan; rules: IgnoreRules; where: string; scan: DockerfileScan; cut: number | undefined; hidden: boolean }> = [];
  for (const spec of project.services) {
    if (!spec.build) continue;
    const plan = planServiceBuild(project, spec, spec.build, target, settings, { ...options, enginePlatform });
    for (const message of plan.warnings) emit({ kind: 'warning', message });
    const rules = rulesByDir.get(plan.ignoreDir) ?? loadIgnoreRules(plan.ignoreDir);
    rulesByDir.set(plan.ignoreDir, rules);
    const where = path.relative(project.dir, path.join(spec.build.context, plan.dockerfile.pathRel)) || plan.dockerfile.pathRel;
    const loaded = await rules;
    const cut = spec.build.target ? stageEnd(plan.dockerfile.contents, spec.build.target) : undefined;
    planned.push({ spec, plan, rules: loaded, where, scan: scanForTarget(plan.dockerfile.contents, where, cut), cut, hidden: loaded.ignores(path.join(spec.build.context, plan.dockerfile.pathRel)) });
  }
  const flags = options.secrets ?? [];
  const needsBuildkit = planned.some((p) => p.scan.buildkitOnly.length > 0 || hasSecrets(settings, p.spec.name, flags));
  const hidden = planned.find((p) => p.hidden);
  // BuildKit lets COPY see every file of a context sent as a tar: where .dockerignore hides a
  // Dockerfile and nothing needs BuildKit, the classic builder keeps it hidden, as docker would.
  const preferClassic = hidden && !needsBuildkit ? `.dockerignore lists ${hidden.where}, which BuildKit would let COPY see` : undefined;
  const choice = chooseBuilder(engine, options.builder ?? 'auto', { squash: options.squash, env: environment, ...(preferClassic ? { preferClassic } : {}) });

  let given: Record<string, Buffer> | undefined;
  const flagSecrets = (): Record<string, Buffer> => (given ??= readSecretFlags(flags, environment));
  const prepared: PreparedService[] = [];
  // Said after the builder line, which they are about.
  const notes: string[] = [];
  for (const spec of project.services) {
    const p = planned.find((x) => x.spec === spec);
    if (!spec.build || !p) {
      prepared.push({ spec, image: spec.image ?? '', buildArgs: {}, quietBuildArgs: [] });
      continue;
    }
    const { dockerfile, secrets, renames } = checkForBuilder(p.plan.dockerfile, p.where, p.scan, choice, { project, spec, settings, options, notes, engine, flagSecrets });
    if (p.hidden && choice.builder === 'buildkit') {
      emit({ kind: 'warning', message: `${p.where}: .dockerignore lists it, but with BuildKit a COPY of the whole context copies it too (Skiff sends the context as a tar, where BuildKit applies no .dockerignore)` });
    }
    prepared.push({
      spec,
      image: imageName(project.name, spec.name, tag),
      dockerfile,
      // Stages after the build's target are never built: their base images are not needed.
      facts: dockerfileFacts(p.cut ? withoutLinesFrom(dockerfile.contents, p.cut) : dockerfile.contents, p.plan.buildArgs, choice.builder === 'buildkit' ? automaticArgsOf(p.plan.buildArgs) : {}),
      rules: p.rules,
      buildArgs: p.plan.buildArgs,
      quietBuildArgs: p.plan.quietBuildArgs,
      ...(secrets ? { secrets } : {}),
      ...(renames ? { renames } : {}),
      where: p.where,
    });
  }

  emit({ kind: 'plan', services: prepared.map((p) => p.spec.name), deviceType: target.deviceType.slug, arch: target.arch, platform, engine: engine.address });
  if (prepared.some((p) => p.spec.build)) emit({ kind: 'builder', builder: choice.builder, message: choice.message });
  for (const message of notes) emit({ kind: 'info', message });
  checkEmulation(prepared, options, emit);
  await checkBaseImages(prepared, options, platform);

  const controller = new AbortController();
  const onOuterAbort = () => controller.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });
  if (options.signal?.aborted) controller.abort();

  const results = new Map<string, ServiceImage>();
  let firstFailure: { service: string; error: unknown } | undefined;
  const queue = [...prepared];
  // Builds mostly wait on the engine (I/O, layer commits), so run more than one per core.
  const limit = Math.max(1, options.concurrency ?? Math.max(4, engine.cpus));

  const runOne = async (p: PreparedService): Promise<void> => {
    const t0 = Date.now();
    emit({ kind: 'service-start', service: p.spec.name });
    if (!p.spec.build || !p.dockerfile || !p.rules) {
      const info = await ensureImage(engine, p.image, platform, { pull: options.pull, service: p.spec.name, signal: controller.signal });
      const result: ServiceImage = {
        service: p.spec.name, image: p.image, imageId: info.id, size: info.size, architecture: info.architecture,
        ...(info.variant ? { variant: info.variant } : {}), source: 'image', buildSeconds: (Date.now() - t0) / 1000, steps: 0, cachedSteps: 0,
      };
      results.set(p.spec.name, result);
      emit({ kind: 'service-done', service: p.spec.name, result });
      return;
    }
    const labels: Record<string, string> = {
      ...p.spec.build.labels,
      ...(options.labels ?? {}),
      'io.skiff.project': project.name,
      'io.skiff.service': p.spec.name,
      'io.skiff.device-type': target.deviceType.slug,
      'io.skiff.arch': target.arch,
    };
    // The labels ride in a Dockerfile of their own the engine hides from COPY (packContext), so the
    // image holds the user's Dockerfile and an uncached build has no LABEL step per label.
    let contextBytes = 0;
    let warnedSize = false;
    const context = await packContext({
      contextDir: p.spec.build.context,
      rules: p.rules,
      dockerfile: p.dockerfile,
      displayBase: project.dir,
      service: p.spec.name,
      labels,
      ...(p.spec.build.target ? { target: p.spec.build.target } : {}),
      buildkit: choice.builder === 'buildkit',
      // Secret files stay out of a context that holds the project folder (compose `context: ..`).
      exclude: [path.join(project.dir, SECRETS_DIR)],
      onBytes: (n) => {
        contextBytes = n;
        if (!warnedSize && n > GB) {
          warnedSize = true;
          emit({ kind: 'warning', message: `service '${p.spec.name}': the build context is over 1 GB; exclude what the image does not need in .dockerignore` });
        }
      },
    });
    const build = choice.builder === 'buildkit' ? buildImageBuildkit : buildImage;
    const built = await build(engine.docker, {
      context: context.stream,
      tag: p.image,
      dockerfile: context.dockerfile,
      buildArgs: p.buildArgs,
      quietBuildArgs: p.quietBuildArgs,
      platform,
      ...(p.spec.build.target ? { target: p.spec.build.target } : {}),
      labels: context.apiLabels,
      cacheFrom: [...p.spec.build.cacheFrom, ...(options.cacheFrom ?? [])],
      nocache: options.nocache,
      pull: options.pull,
      squash: options.squash,
      ...(options.registryConfig ? { registryConfig: options.registryConfig } : {}),
      signal: controller.signal,
      onLine: (line) => emit({ kind: 'log', service: p.spec.name, line: shownStep(line, p.renames) }),
      ...(p.secrets ? { secrets: p.secrets } : {}),
      onProgress: (progress) => emit({ kind: 'progress', service: p.spec.name, progress: p.renames ? { ...progress, running: progress.running.map((r) => ({ ...r, name: shownStep(r.name, p.renames) })) } : progress }),
    });
    const inspect = await engine.docker.getImage(built.imageId).inspect();
    const result: ServiceImage = {
      service: p.spec.name,
      image: p.image,
      imageId: inspect.Id,
      size: inspect.Size,
      architecture: inspect.Architecture,
      ...((inspect as { Variant?: string }).Variant ? { variant: (inspect as { Variant?: string }).Variant } : {}),
      source: 'build',
      buildSeconds: (Date.now() - t0) / 1000,
      steps: built.steps,
      cachedSteps: built.cachedSteps,
      builder: built.builder,
      stepTimes: p.renames ? built.stepTimes.map((t) => ({ ...t, name: shownStep(t.name, p.renames) })) : built.stepTimes,
      dockerfile: path.relative(project.dir, path.join(p.spec.build.context, p.dockerfile.pathRel)),
      contextBytes,
    };
    if (archFromDocker(inspect.Architecture, (inspect as { Variant?: string }).Variant) !== target.arch && !(target.arch === 'rpi' && inspect.Architecture === 'arm')) {
      emit({ kind: 'warning', message: `service '${p.spec.name}': the image is for ${inspect.Architecture}, not ${target.arch}; the device may not run it` });
    }
    results.set(p.spec.name, result);
    emit({ kind: 'service-done', service: p.spec.name, result });
  };

  const worker = async (): Promise<void> => {
    for (let p = queue.shift(); p; p = queue.shift()) {
      if (controller.signal.aborted) return;
      try {
        await runOne(p);
      } catch (error) {
        // The first failure is the one to report; the rest are the builds it cancelled.
        if (!controller.signal.aborted) {
          firstFailure = { service: p.spec.name, error };
          emit({ kind: 'service-failed', service: p.spec.name, message: (error as Error).message });
          controller.abort(new Error('another service failed'));
        }
        return;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(limit, prepared.length) }, () => worker()));
  } finally {
    options.signal?.removeEventListener('abort', onOuterAbort);
  }

  if (options.signal?.aborted) throw new SkiffError('interrupted', 'build cancelled; no images were tagged for the unfinished services');
  if (firstFailure) throw failureError(firstFailure.service, firstFailure.error, prepared.find((p) => p.spec.name === firstFailure?.service));

  const manifest: ReleaseManifest = {
    project: project.name,
    source: project.dir,
    deviceType: target.deviceType.slug,
    arch: target.arch,
    platform,
    tag,
    engine: { address: engine.address, version: engine.version, arch: engine.machineArch },
    createdAt: new Date().toISOString(),
    buildSeconds: (Date.now() - started) / 1000,
    services: project.services.map((s) => results.get(s.name)).filter((r): r is ServiceImage => r !== undefined),
    volumes: Object.keys(project.volumes),
    networks: Object.keys(project.networks),
  };
  const commit = await gitCommit(project.dir);
  if (commit) manifest.commit = commit;
  return manifest;
}

function failureError(service: string, error: unknown, prepared?: PreparedService): SkiffError {
  if (error instanceof SkiffError) return error;
  if (error instanceof ImageBuildError) {
    // BuildKit's errors come explained; the classic builder's raw text gets the same reading.
    const explained = error.hint !== undefined || error.where !== undefined
      ? { message: error.message, hint: error.hint, where: error.where }
      : explainBuildkitError(error.message, prepared?.where ?? 'Dockerfile');
    // The builder names the Dockerfile by its path in the context; the user knows it from the project.
    if (explained.where !== undefined && prepared?.where !== undefined) explained.where = explained.where.replace(/^[^:]*/, prepared.where);
    // A failed BuildKit step names its instruction, not its line: find the line that says it.
    const line = error.step && prepared?.dockerfile ? stepLine(prepared.dockerfile.contents, error.step) : undefined;
    if (line !== undefined && prepared?.where !== undefined && !/:\d+$/.test(explained.where ?? '')) explained.where = `${prepared.where}:${line}`;
    const details = [
      ...(error.step ? [`[${service}] ${shownStep(error.step, prepared?.renames)}:`] : []),
      ...error.tail.map((l) => `[${service}] ${l}`),
    ];
    return new SkiffError('buildFailed', `service '${service}' failed to build: ${explained.message}`, {
      details,
      ...(explained.where ? { where: explained.where } : {}),
      hint: explained.hint ?? 'the other builds were stopped; fix the error above and build again',
    });
  }
  const e = error as NodeJS.ErrnoException & { statusCode?: number; json?: { message?: string } };
  const message = e.json?.message ?? e.message;
  if (e.code === 'ECONNREFUSED' || e.code === 'ENOENT' || e.code === 'ECONNRESET' || e.code === 'EPIPE') {
    return new SkiffError('dockerUnreachable', `the Docker engine went away while building service '${service}' (${e.code})`, { hint: 'check the engine and build again' });
  }
  return new SkiffError('buildFailed', `service '${service}' failed to build: ${message}`, { hint: 'fix the error and build again' });
}

/**
 * The scan a build's checks use: the whole file for what breaks its parsing (a heredoc, the
 * syntax line), but only up to the end of the target stage for what a step needs (a secret
 * mount, BuildKit-only flags), since later stages never build.
 */
function scanForTarget(contents: string, where: string, cut: number | undefined): DockerfileScan {
  const whole = scanDockerfile(contents, where);
  if (cut === undefined) return whole;
  const built = scanDockerfile(withoutLinesFrom(contents, cut), where);
  const heredocs = whole.buildkitOnly.filter((u) => u.line >= cut && /heredoc/.test(u.what));
  return { ...whole, buildkitOnly: [...built.buildkitOnly, ...heredocs], secretMounts: built.secretMounts };
}

/** The automatic platform args among a build's args (BuildKit declares them for FROM lines). */
function automaticArgsOf(buildArgs: Record<string, string>): Record<string, string> {
  return Object.fromEntries(AUTOMATIC_PLATFORM_ARGS.filter((n) => buildArgs[n] !== undefined).map((n) => [n, buildArgs[n] ?? '']));
}

/**
 * The Dockerfile line of a BuildKit step (`[stage-0 4/7] RUN make`): the one instruction whose
 * text is the step's, whitespace aside; undefined when none or several match (build args
 * expanded in the step's name, the same instruction twice).
 */
export function stepLine(contents: string, step: string): number | undefined {
  const norm = (t: string): string => t.replace(/\s+/g, ' ').trim();
  const text = norm(step.replace(/^\[[^\]]*\]\s*/, ''));
  if (text === '') return undefined;
  const hits = logicalLines(contents).filter((l) => norm(l.text) === text);
  return hits.length === 1 ? hits[0]?.line : undefined;
}

interface CheckContext {
  project: ProjectSpec;
  spec: ServiceSpec;
  settings: BuildSettings;
  options: ReleaseBuildOptions;
  /** Lines for the user, said once the builder is announced. */
  notes: string[];
  /** The `--secret` values, read on first use and once per build (a pipe reads only once). */
  flagSecrets: () => Record<string, Buffer>;
  engine: Engine;
}

/**
 * What a service's Dockerfile needs of the chosen builder, checked before anything builds: the
 * classic builder refuses BuildKit-only syntax and build secrets (one line naming the Dockerfile's
 * line and `--buildkit`); BuildKit gets the service's secrets, refuses a secret mount nobody gave,
 * and, on an engine whose built-in frontend predates Dockerfile 1.4, gets heredocs and
 * `COPY --link` lowered to what that frontend reads (never when a `# syntax=` line names another
 * frontend: that frontend parses the file).
 *
 * @throws SkiffError('project') naming `where:line`, SkiffError('usage') for a bad --secret
 */
function checkForBuilder(dockerfile: ResolvedDockerfile, where: string, scan: DockerfileScan, choice: BuilderChoice, c: CheckContext): { dockerfile: ResolvedDockerfile; secrets?: Record<string, Buffer>; renames?: Array<[string, string]> } {
  const flags = c.options.secrets ?? [];
  if (choice.builder === 'classic') {
    // The way out depends on why the build is classic (a flag, a variable, --squash, the engine).
    const refused = classicBuilderError(scan, where, choice.reason, choice.hint);
    if (refused) throw refused;
    if (hasSecrets(c.settings, c.spec.name, flags)) {
      throw new SkiffError('project', `service '${c.spec.name}' has build secrets, which need BuildKit; this build uses the classic builder (${choice.reason})`, {
        hint: choice.hint,
      });
    }
    return { dockerfile };
  }
  const secrets = readServiceSecrets(c.project.dir, c.settings, c.spec.name, c.flagSecrets());
  const missing = missingSecretsError(scan, Object.keys(secrets), where);
  if (missing) throw missing;
  if (scan.syntax || frontendHasHeredocs(c.engine) || (scan.heredocs === 0 && scan.copyLink === 0)) return { dockerfile, secrets };
  const lowered = lowerDockerfile(dockerfile.contents, where, { heredocs: true, copyLink: true });
  if (lowered.changes.length > 0) {
    const count = (n: number, one: string, many: string): string[] => (n === 0 ? [] : [`${n} ${n === 1 ? one : many}`]);
    const what = [...count(scan.heredocs, 'heredoc', 'heredocs'), ...count(scan.copyLink, '--link', '--links')].join(' and ');
    const lines = [...new Set(lowered.changes.map((ch) => ch.line))].join(', ');
    c.notes.push(`${where}: ${what} rewritten for engine ${c.engine.version}'s built-in Dockerfile frontend, which predates Dockerfile 1.4 (line${lines.includes(',') ? 's' : ''} ${lines})`);
  }
  return {
    dockerfile: { ...dockerfile, contents: lowered.contents, processed: lowered.contents !== dockerfile.contents || dockerfile.processed },
    secrets,
    renames: loweredNames(dockerfile.contents, lowered.contents, lowered.changes.map((ch) => ch.line)),
  };
}

/**
 * Each rewritten instruction's text (what BuildKit names its step) → the first line of the
 * instruction the user wrote (`RUN <<EOF`), so output, the live view and step times show that.
 * `changes` are the 1-based lines the rewrite changed.
 */
export function loweredNames(original: string, lowered: string, changes: readonly number[]): Array<[string, string]> {
  const originalLines = original.split('\n');
  const before = new Map(logicalLines(original).map((l) => [l.line, l.text]));
  const out: Array<[string, string]> = [];
  for (const l of logicalLines(lowered)) {
    if (before.get(l.line) === l.text) continue;
    const from = changes.filter((c) => c <= l.line).reduce((a, b) => Math.max(a, b), 0);
    const shown = (originalLines[from - 1] ?? '').replace(/\r$/, '').trim();
    if (from > 0 && shown !== '' && l.text.trim() !== shown) out.push([l.text.trim(), shown]);
  }
  return out;
}

/** A step name or output line with rewritten instructions shown as the user wrote them. */
export function shownStep(text: string, renames: ReadonlyArray<[string, string]> | undefined): string {
  for (const [from, to] of renames ?? []) if (text.includes(from)) return text.replace(from, to);
  return text;
}

function checkEmulation(prepared: PreparedService[], options: ReleaseBuildOptions, emit: (e: BuildEvent) => void): void {
  const needsRun = prepared.filter((p) => p.facts?.hasRun);
  if (needsRun.length === 0) return;
  const status = emulationStatus(options.engine.arch, options.target.arch, options.engine.local);
  if (status.state === 'native' || status.state === 'ready') return;
  if (status.state === 'unknown') {
    emit({ kind: 'info', message: `cannot check emulation for ${options.target.arch} (${status.reason}); RUN steps need the engine to run ${options.target.arch} binaries` });
    return;
  }
  if (options.emulated) {
    const interpreter = registerEmulation(status.qemu);
    emit({ kind: 'info', message: `registered ${interpreter} for ${options.target.arch} binaries (binfmt_misc, flag F)` });
    return;
  }
  throw new SkiffError('emulation', `building for ${options.target.arch} on this ${options.engine.machineArch} engine needs qemu emulation for RUN steps: ${status.reason}`, {
    hint: emulationHint(status.qemu),
  });
}

async function checkBaseImages(prepared: PreparedService[], options: ReleaseBuildOptions, platform: string): Promise<void> {
  if (options.pull) return; // the engine pulls every base itself
  const checks = new Map<string, Promise<unknown>>();
  for (const p of prepared) {
    for (const base of p.facts?.baseImages ?? []) {
      const key = `${base.image}@${base.platform ?? platform}`;
      if (checks.has(key)) continue;
      checks.set(key, ensureImage(options.engine, base.image, base.platform ?? platform, {
        service: p.spec.name,
        where: p.dockerfile ? `${path.relative(options.project.dir, path.join(p.spec.build?.context ?? '', p.dockerfile.pathRel))}:${base.line}` : undefined,
        signal: options.signal,
      }));
    }
  }
  const settled = await Promise.allSettled(checks.values());
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
}

async function gitCommit(dir: string): Promise<string | undefined> {
  if (!existsSync(path.join(dir, '.git'))) return undefined;
  try {
    const { simpleGit } = await import('simple-git');
    return (await simpleGit(dir).revparse(['HEAD'])).trim() || undefined;
  } catch {
    return undefined;
  }
}
