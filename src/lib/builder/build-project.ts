/**
 * `skiff build` as one function: read the project, pick the target, connect to the engine, build.
 */
import { readFileSync } from 'node:fs';
import { SkiffError } from '../errors/errors.js';
import { resolveTarget } from '../device-types/device-types.js';
import { connectEngine, type EngineFlags } from '../docker/engine.js';
import { loadProject } from '../project/project.js';
import { buildRelease, type BuildEvent, type ReleaseManifest } from './release.js';

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
  for (const w of project.warnings) emit({ kind: 'warning', message: w.where ? `${w.where}: ${w.message}` : w.message });
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
