/**
 * `skiff push <device>`: check the device, build the project on the device's engine, set the
 * target state, wait until the release runs (or is rolled back).
 */
import { randomBytes } from 'node:crypto';
import type { LocalServiceJson, LocalTargetStateJson, Received, StateStatusResponse, TargetStateResponse } from '../device-api/wire.js';
import { SkiffError } from '../errors/errors.js';
import { resolveTarget, type BuildTarget } from '../device-types/device-types.js';
import { connectEngine, type Engine } from '../docker/engine.js';
import type { BuilderRequest } from '../builder/builder-choice.js';
import { buildRelease, type BuildEvent, type ReleaseManifest } from '../builder/release.js';
import type { SecretFlag } from '../builder/secrets.js';
import { loadProject, warningLine } from '../project/project.js';
import type { ProjectSpec } from '../project/types.js';
import { DeviceClient, parseDeviceAddress, type DeviceInfo } from './client.js';

export interface PushOptions {
  device: string;
  source: string;
  dockerHost?: string;
  dockerPort?: number;
  env?: string[];
  nocache?: boolean;
  pull?: boolean;
  multiDockerignore?: boolean;
  noParentCheck?: boolean;
  projectName?: string;
  /** `--buildkit` / `--no-buildkit` for builds on the device's engine; absent: auto. */
  builder?: BuilderRequest;
  /** `--secret` flags for every service's build. */
  secrets?: SecretFlag[];
  apiKey?: string;
  /** Replace the release even while a service holds an update lock. */
  force?: boolean;
  /** How long to wait for the device to report the release applied. */
  applyTimeoutMs?: number;
  signal?: AbortSignal;
  onEvent?: (e: PushEvent) => void;
}

export type PushEvent = BuildEvent | { kind: 'device'; message: string };

export interface PushResult {
  device: string;
  deviceType: string;
  arch: string;
  commit: string;
  release: ReleaseManifest;
  services: Array<{ service: string; image: string; status: string; containerId?: string }>;
}

/** `--env KEY=VAL` (every service) and `--env service:KEY=VAL` (one service). */
export function parseEnvFlags(values: string[], services: string[]): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = Object.fromEntries(services.map((s) => [s, {}]));
  for (const v of values) {
    const m = /^(?:([a-zA-Z0-9][a-zA-Z0-9_.-]*):)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(v);
    if (!m?.[2]) throw new SkiffError('usage', `--env '${v}' is not KEY=VALUE or service:KEY=VALUE`);
    const targets = m[1] ? [m[1]] : services;
    if (m[1] && !services.includes(m[1])) throw new SkiffError('usage', `--env '${v}' names service '${m[1]}', which the project does not have`, { hint: `services: ${services.join(', ')}` });
    for (const s of targets) (out[s] ??= {})[m[2]] = m[3] ?? '';
  }
  return out;
}

/** The local-mode target state for a built release, in the shape balena-cli sends. */
export function localTargetState(deviceName: string, project: ProjectSpec, release: ReleaseManifest, commit: string, env: Record<string, Record<string, string>>): LocalTargetStateJson {
  const services: Record<string, LocalServiceJson> = {};
  project.services.forEach((s, i) => {
    const built = release.services.find((r) => r.service === s.name);
    services[String(i + 1)] = {
      ...s.config,
      environment: { ...(s.config.environment ?? {}), ...(env[s.name] ?? {}) },
      labels: s.config.labels ?? {},
      imageId: i + 1,
      serviceName: s.name,
      serviceId: i + 1,
      image: built?.image ?? s.image ?? '',
      running: true,
    };
  });
  return {
    local: {
      name: deviceName,
      config: {},
      apps: {
        '1': {
          name: project.name,
          commit,
          releaseId: commit,
          services,
          volumes: project.volumes,
          networks: project.networks,
        },
      },
    },
    dependent: { apps: {}, devices: {} },
  };
}

/** A device the project is pushed to: what a push, and the live updates after it, work with. */
export interface PushSession {
  options: PushOptions;
  project: ProjectSpec;
  client: DeviceClient;
  engine: Engine;
  info: DeviceInfo;
  target: BuildTarget;
  env: Record<string, Record<string, string>>;
  deviceName: string;
  /** The release the device runs (set after the first deploy). */
  release?: ReleaseManifest;
  commit?: string;
}

/** Checks the project and the device, and connects to the device's engine. */
export async function openPushSession(options: PushOptions): Promise<PushSession> {
  const emit = options.onEvent ?? (() => {});
  const project = await loadProject(options.source, { projectName: options.projectName?.toLowerCase(), noParentCheck: options.noParentCheck });
  for (const w of project.warnings) emit({ kind: 'warning', message: warningLine(w) });
  const env = parseEnvFlags(options.env ?? [], project.services.map((s) => s.name));
  const address = parseDeviceAddress(options.device);
  const client = new DeviceClient(address, options.apiKey);
  const info = await client.check();
  emit({ kind: 'device', message: `Device ${address.host}: ${info.deviceType} (${info.arch}), device API ${info.version}` });
  const target = resolveTarget({ deviceType: info.deviceType, arch: info.arch });
  let engine;
  try {
    engine = await connectEngine({ dockerHost: options.dockerHost ?? address.host, dockerPort: options.dockerPort ?? 2375 });
  } catch (err) {
    if (err instanceof SkiffError && err.code === 'dockerUnreachable') {
      throw new SkiffError('dockerUnreachable', `${err.message}; the device must expose its engine to build on it`, { hint: 'run the agent in development mode (it serves the engine on port 2375), or pass --dockerHost/--dockerPort' });
    }
    throw err;
  }
  const current = await client.json<{ state?: { local?: { name?: string } } }>('GET', '/v2/local/target-state');
  return { options, project, client, engine, info, target, env, deviceName: current.state?.local?.name ?? address.host };
}

/**
 * Builds `services` (default: all) on the device's engine and makes the device run them, the
 * other services staying on the images they run. Each deploy gets its own commit, and a changed
 * service its own image tag, so the release it replaces keeps its images to roll back to.
 */
export async function deploy(session: PushSession, services?: string[], signal = session.options.signal): Promise<PushResult> {
  const { options, project, client } = session;
  const emit = options.onEvent ?? (() => {});
  const commit = randomBytes(6).toString('hex');
  const only = services ? { ...project, services: project.services.filter((s) => services.includes(s.name)) } : project;
  const built = await buildRelease({
    project: only, target: session.target, engine: session.engine, tag: commit, nocache: options.nocache, pull: options.pull, multiDockerignore: options.multiDockerignore,
    // The label marks images a push built (the agent prunes old ones by it). Its value is the same
    // on every push, so a service whose sources did not change builds to the very same image.
    signal, onEvent: options.onEvent, labels: { 'io.skiff.release': 'local' },
    ...(options.builder ? { builder: options.builder } : {}),
    ...(options.secrets ? { secrets: options.secrets } : {}),
  });
  await keepUnchangedImages(session, built);
  const previous = session.release;
  const release: ReleaseManifest = previous && services
    ? { ...built, services: project.services.map((s) => built.services.find((b) => b.service === s.name) ?? previous.services.find((p) => p.service === s.name)).filter((s) => s !== undefined) }
    : built;
  const state = localTargetState(session.deviceName, project, release, commit, session.env);
  await client.json('POST', `/v2/local/target-state${options.force ? '?force=true' : ''}`, state);
  emit({ kind: 'device', message: `Release ${commit} sent; waiting for the device to apply it` });
  const running = await waitForRelease(client, project, release, commit, options.applyTimeoutMs ?? 120_000, signal);
  session.release = release;
  session.commit = commit;
  return { device: client.address.host, deviceType: session.info.deviceType, arch: session.info.arch, commit, release, services: running };
}

/**
 * A service whose new image is the image the device runs already keeps its current image name, so
 * the agent leaves its container alone (only changed services restart, as with balena push). The
 * new tag is dropped again (the image stays under its old name).
 */
async function keepUnchangedImages(session: PushSession, built: ReleaseManifest): Promise<void> {
  const target = await session.client.json<Received<TargetStateResponse>>('GET', '/v2/local/target-state');
  const running = new Map<string, string>();
  for (const app of Object.values(target.state?.local?.apps ?? {})) {
    for (const s of Object.values(app.services ?? {})) if (s.serviceName && s.image) running.set(s.serviceName, s.image);
  }
  const docker = session.engine.docker;
  built.services = await Promise.all(built.services.map(async (s) => {
    const current = running.get(s.service);
    if (s.source !== 'build' || !current || current === s.image) return s;
    const id = await docker.getImage(current).inspect().then((i) => i.Id, () => undefined);
    if (id !== s.imageId) return s;
    await docker.getImage(s.image).remove({ noprune: true }).catch(() => {}); // only the new tag goes
    return { ...s, image: current };
  }));
}

export async function push(options: PushOptions): Promise<PushResult> {
  return deploy(await openPushSession(options));
}

type StatusJson = Received<StateStatusResponse>;

async function waitForRelease(client: DeviceClient, project: ProjectSpec, release: ReleaseManifest, commit: string, timeoutMs: number, signal?: AbortSignal): Promise<PushResult['services']> {
  const deadline = Date.now() + timeoutMs;
  let last: StatusJson = {};
  while (Date.now() < deadline && !signal?.aborted) {
    last = await client.json<StatusJson>('GET', '/v2/state/status');
    // Two pushes at once: the device runs the newer one only, and this push says so.
    const target = await client.json<Received<TargetStateResponse>>('GET', '/v2/local/target-state');
    const now = Object.values(target.state?.local?.apps ?? {})[0]?.commit;
    if (now !== undefined && now !== commit) {
      // Either our release was rolled back (the target went back to the previous one) or another push replaced it.
      const again = await client.json<StatusJson>('GET', '/v2/state/status');
      if (again.failedRelease?.commit === commit) {
        throw new SkiffError('releaseFailed', `the device could not run release ${commit}: ${again.failedRelease.reason}; it went back to the previous release`, { hint: "see 'skiff logs <device>' for why" });
      }
      throw new SkiffError('releaseFailed', `release ${commit} was replaced by release ${now}, pushed to the device meanwhile`, { hint: 'the device runs the newer release; push again if yours should win' });
    }
    if (last.failedRelease?.commit === commit) {
      throw new SkiffError('releaseFailed', `the device could not run release ${commit}: ${last.failedRelease.reason}; it went back to the previous release`, { hint: "see 'skiff logs <device>' for why" });
    }
    if (last.appState === 'applied' && last.release === commit) break;
    // A balena supervisor reports no release id in local mode: running containers for every service will do.
    if (last.release === undefined && last.appState === 'applied' && project.services.every((s) => last.containers?.some((c) => c.serviceName === s.name && c.status === 'Running'))) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  if (signal?.aborted) throw new SkiffError('interrupted', 'push cancelled; the device may still be applying the release');
  if (!(last.appState === 'applied')) throw new SkiffError('releaseFailed', `the device did not apply release ${commit} within ${Math.round(timeoutMs / 1000)} s (state: ${last.appState ?? 'unknown'}${last.error ? `, ${last.error}` : ''})`);
  return project.services.map((s) => {
    const c = last.containers?.find((x) => x.serviceName === s.name);
    return { service: s.name, image: release.services.find((r) => r.service === s.name)?.image ?? '', status: c?.status ?? 'missing', ...(c ? { containerId: c.containerId } : {}) };
  });
}
