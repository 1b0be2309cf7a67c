/**
 * `skiff build` as one function: read the project, pick the target, connect to the engine, build.
 * {@link resolveBuild} is the same reading without the engine: what `skiff build --dry-run` shows.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { SkiffError } from '../errors/errors.js';
import { ARCHES, platformString, resolveTarget, type Arch } from '../device-types/device-types.js';
import { connectEngine, type EngineFlags } from '../docker/engine.js';
import { loadBuildSettings } from '../project/balena-yml.js';
import { dockerfileFacts, type ResolvedDockerfile } from '../project/dockerfile.js';
import { loadProject, warningLine } from '../project/project.js';
import type { ServiceJson } from '../service/service-config.js';
import type { BuilderRequest } from './builder-choice.js';
import { buildRelease, imageName, planServiceBuild, type BuildEvent, type ReleaseManifest } from './release.js';
import { readServiceSecrets, type SecretFlag } from './secrets.js';

export interface BuildProjectOptions {
  source: string;
  arch?: string;
  deviceType?: string;
  emulated?: boolean;
  dockerfile?: string;
  multiDockerignore?: boolean;
  noParentCheck?: boolean;
  registrySecrets?: string;
  noConvertEol?: boolean;
  projectName?: string;
  tag?: string;
  buildArgs?: Record<string, string>;
  cacheFrom?: string[];
  nocache?: boolean;
  pull?: boolean;
  squash?: boolean;
  engine: EngineFlags;
  concurrency?: number;
  labels?: Record<string, string>;
  /** `--buildkit` / `--no-buildkit`, or neither. */
  builder?: BuilderRequest;
  /** `--secret` flags, for every service. */
  secrets?: SecretFlag[];
  signal?: AbortSignal;
  onEvent?: (event: BuildEvent) => void;
}

export async function buildProject(options: BuildProjectOptions): Promise<ReleaseManifest> {
  const emit = options.onEvent ?? (() => {});
  const project = await loadProject(options.source, {
    projectName: options.projectName?.toLowerCase(),
    dockerfile: options.dockerfile,
    noParentCheck: options.noParentCheck,
  });
  for (const w of project.warnings) emit({ kind: 'warning', message: warningLine(w) });
  // Check the flags before touching the engine, so a typo fails fast and offline.
  const chosen = options.arch !== undefined || options.deviceType !== undefined ? resolveTarget({ arch: options.arch, deviceType: options.deviceType }) : undefined;
  const registryConfig = options.registrySecrets ? await readRegistrySecrets(options.registrySecrets) : undefined;
  const engine = await connectEngine(options.engine);
  const target = chosen ?? resolveTarget({ defaultArch: engine.arch ?? 'amd64' });
  if (!chosen) emit({ kind: 'info', message: `No --deviceType or --arch given: building for this engine's architecture, ${target.arch} (${target.deviceType.slug})` });
  return buildRelease({
    project,
    target,
    engine,
    tag: options.tag,
    nocache: options.nocache,
    pull: options.pull,
    squash: options.squash,
    buildArgs: options.buildArgs,
    cacheFrom: options.cacheFrom,
    multiDockerignore: options.multiDockerignore,
    emulated: options.emulated,
    noConvertEol: options.noConvertEol,
    ...(registryConfig ? { registryConfig } : {}),
    concurrency: options.concurrency,
    signal: options.signal,
    onEvent: options.onEvent,
    labels: options.labels,
    ...(options.builder ? { builder: options.builder } : {}),
    ...(options.secrets ? { secrets: options.secrets } : {}),
  });
}

/** balena's registry secrets file: `{ "host": { "username": "...", "password": "..." } }` in YAML or JSON. */
async function readRegistrySecrets(file: string): Promise<Record<string, { username: string; password: string }>> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new SkiffError('usage', `cannot read the registry secrets file '${file}'`, { hint: 'check the --registry-secrets path' });
  }
  const { parse } = await import('yaml');
  let data: unknown;
  try {
    data = parse(text);
  } catch (err) {
    throw new SkiffError('usage', `the registry secrets file '${file}' is not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new SkiffError('usage', `the registry secrets file '${file}' must map registry hosts to {username, password}`);
  }
  const out: Record<string, { username: string; password: string }> = {};
  for (const [host, v] of Object.entries(data as Record<string, unknown>)) {
    const cred = v as { username?: unknown; password?: unknown };
    if (typeof cred?.username !== 'string' || typeof cred.password !== 'string') {
      throw new SkiffError('usage', `registry '${host}' in '${file}' needs a username and a password`);
    }
    out[host] = { username: cred.username, password: cred.password };
  }
  return out;
}

/** What {@link resolveBuild} needs: the build's own options, minus the engine and everything that runs. */
export type ResolveBuildOptions = Pick<BuildProjectOptions, 'source' | 'arch' | 'deviceType' | 'dockerfile' | 'multiDockerignore' | 'noParentCheck' | 'projectName' | 'tag' | 'buildArgs' | 'cacheFrom'> & {
  /** The variables the compose file reads, over the project's .env; defaults to the process environment. */
  environment?: NodeJS.ProcessEnv;
};

/** One service as a build would make it. Paths are relative to the project folder. */
export interface ResolvedService {
  name: string;
  /** The tag a build gives it (`<project>_<service>:<tag>`), or the compose `image` of a service that does not build. */
  image: string;
  source: 'build' | 'image';
  build?: {
    context: string;
    dockerfile: string;
    /** Which of balena's rules chose the Dockerfile (device type, architecture, template, plain, or named in compose). */
    rule: ResolvedDockerfile['kind'];
    /** The rule in words, e.g. "Dockerfile.raspberrypi4-64: the device type's own". */
    chosenBecause: string;
    /** Whether %%BALENA_MACHINE_NAME%% and the other template variables were filled in. */
    template: boolean;
    /** balena.yml build-variables, then compose build.args, then --buildArg. */
    args: Record<string, string>;
    target?: string;
    labels: Record<string, string>;
    cacheFrom: string[];
    /** The base images FROM names, after build args; the engine would need them. */
    baseImages: string[];
    /** The .dockerignore that applies, if any. */
    dockerignore?: string;
    /** Ids of the build secrets balena.yml gives the service (values are never shown); absent when none. */
    secrets?: string[];
  };
  /** The compose settings after substitution and validation: what the device runs. */
  config: ServiceJson;
}

/** The project as `skiff build` reads it, without building: `skiff build --dry-run`. */
export interface ResolvedBuild {
  project: string;
  source: string;
  /** The compose file, relative to the project folder; absent for a single-Dockerfile project. */
  composeFile?: string;
  deviceType: string;
  arch: string;
  platform: string;
  /** 'flags' when --deviceType/--arch chose the target; otherwise this machine's architecture (a build uses the engine's). */
  targetFrom: 'flags' | 'this machine';
  tag: string;
  services: ResolvedService[];
  volumes: Record<string, Record<string, unknown>>;
  networks: Record<string, Record<string, unknown>>;
  warnings: string[];
}

// Node's names for the machine's architecture, as ours.
const HOST_ARCH: Partial<Record<NodeJS.Architecture, Arch>> = { x64: 'amd64', arm64: 'aarch64', arm: 'armv7hf', ia32: 'i386' };

const RULES = {
  'device-type': (file: string) => `${file}: the device type's own`,
  arch: (file: string) => `${file}: the architecture's own (no Dockerfile for the device type)`,
  template: (file: string) => `${file}: no Dockerfile for the device type or the architecture`,
  dockerfile: (file: string) => `${file}: no device type, architecture or template variant`,
  explicit: (file: string) => `${file}: named by build.dockerfile (or --dockerfile)`,
} satisfies Record<ResolvedDockerfile['kind'], (file: string) => string>;

/**
 * Reads the project exactly as {@link buildProject} would — variables substituted, compose
 * validated, balena.yml read, each service's Dockerfile chosen and templated, build args merged —
 * and returns it without connecting to Docker, as `docker compose config` does.
 *
 * @throws SkiffError('project') for what would stop the build before it starts (a required
 *   variable, an invalid compose file, a missing Dockerfile, an unknown %%VAR%%), and 'usage' for bad flags
 */
export async function resolveBuild(options: ResolveBuildOptions): Promise<ResolvedBuild> {
  const project = await loadProject(options.source, {
    projectName: options.projectName?.toLowerCase(),
    dockerfile: options.dockerfile,
    noParentCheck: options.noParentCheck,
    ...(options.environment ? { environment: options.environment } : {}),
  });
  const warnings = project.warnings.map(warningLine);
  const fromFlags = options.arch !== undefined || options.deviceType !== undefined;
  // With no target named, and for the BUILD* args, the engine is taken to be this machine.
  const hostArch = HOST_ARCH[process.arch] ?? 'amd64';
  const target = resolveTarget(fromFlags ? { arch: options.arch, deviceType: options.deviceType } : { defaultArch: hostArch });
  const tag = options.tag ?? 'latest';
  const settings = await loadBuildSettings(project.dir);
  warnings.push(...settings.warnings.map(warningLine));
  const rel = (p: string): string => path.relative(project.dir, p).split(path.sep).join('/') || '.';

  const services = project.services.map((spec): ResolvedService => {
    // Read now only to fail early on a missing file; the values are dropped.
    const secretIds = spec.build ? Object.keys(readServiceSecrets(project.dir, settings, spec.name)) : [];
    if (!spec.build) return { name: spec.name, image: spec.image ?? '', source: 'image', config: spec.config };
    // The very decisions the build makes (Dockerfile, template, args, .dockerignore).
    const plan = planServiceBuild(project, spec, spec.build, target, settings, { ...options, enginePlatform: ARCHES[hostArch].platform });
    warnings.push(...plan.warnings);
    const { dockerfile } = plan;
    const file = rel(path.join(spec.build.context, dockerfile.pathRel));
    const args = plan.userArgs;
    const ignoreFile = path.join(plan.ignoreDir, '.dockerignore');
    const ignore = existsSync(ignoreFile) ? ignoreFile : undefined;
    return {
      name: spec.name,
      image: imageName(project.name, spec.name, tag),
      source: 'build',
      build: {
        context: spec.build.contextRel,
        dockerfile: file,
        rule: dockerfile.kind,
        chosenBecause: RULES[dockerfile.kind](file),
        template: dockerfile.kind === 'explicit' ? dockerfile.pathRel.endsWith('.template') : dockerfile.kind !== 'dockerfile',
        args,
        ...(spec.build.target !== undefined ? { target: spec.build.target } : {}),
        labels: spec.build.labels,
        cacheFrom: [...spec.build.cacheFrom, ...(options.cacheFrom ?? [])],
        baseImages: dockerfileFacts(dockerfile.contents, plan.buildArgs).baseImages.map((b) => b.image),
        ...(ignore ? { dockerignore: rel(ignore) } : {}),
        ...(secretIds.length > 0 ? { secrets: secretIds } : {}),
      },
      config: spec.config,
    };
  });

  return {
    project: project.name,
    source: project.dir,
    ...(project.composeFile ? { composeFile: rel(project.composeFile) } : {}),
    deviceType: target.deviceType.slug,
    arch: target.arch,
    platform: platformString(target.platform),
    targetFrom: fromFlags ? 'flags' : 'this machine',
    tag,
    services,
    volumes: project.volumes,
    networks: project.networks,
    warnings,
  };
}
