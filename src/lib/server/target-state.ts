/**
 * A device's target state, assembled from its release, variables and pins: pure and synchronous,
 * like the agent's planner, so the rules are tested by tables (test/unit/server-target-state.test.ts).
 * The shape is balena's v3 (src/lib/api/device-state.ts, BALENA-CLOUD-PROTOCOL.md).
 */
import type { DeviceTargetV3, TargetServiceV3, TargetStateV3 } from '../api/device-state.js';
import { DEFAULT_POLL_INTERVAL_MS } from './device-status.js';

/** A variable as stored: on the fleet or the device, for every service (null) or one. */
export interface ScopedVariable {
  level: 'fleet' | 'device';
  service: string | null;
  name: string;
  value: string;
}

/** A release's composition, as CreateReleaseRequest carries it. */
export interface Composition {
  services: Record<string, Record<string, unknown>>;
  volumes?: Record<string, Record<string, unknown>>;
  networks?: Record<string, Record<string, unknown>>;
}

export interface TargetRelease {
  id: number;
  commit: string;
  composition: Composition;
  /** One per service, pushed (digest set): only such a release reaches a device. */
  images: Array<{ id: number; service: string; repository: string; digest: string }>;
}

export interface TargetInput {
  device: { uuid: string; name: string };
  fleet: { id: number; uuid: string; name: string };
  /** The release the device should run ({@link chooseRelease}), or undefined: no app release. */
  release: TargetRelease | undefined;
  variables: readonly ScopedVariable[];
  /** `host:port` of the registry as devices reach it (the server's public address). */
  registryHost: string;
}

/** Names that configure the agent rather than the containers (balena's rule, plus ours). */
export function isConfigVariable(name: string): boolean {
  return /^(BALENA|RESIN|SKIFF)_/.test(name);
}

/** Poll-interval config variables, ours first; values are milliseconds. */
export const POLL_INTERVAL_VARIABLES = ['SKIFF_AGENT_POLL_INTERVAL', 'BALENA_SUPERVISOR_POLL_INTERVAL'] as const;

/** The poll interval (ms) a device's config gives, else the default; a malformed value counts as unset. */
export function pollIntervalOf(config: Readonly<Record<string, string>>): number {
  for (const name of POLL_INTERVAL_VARIABLES) {
    const v = config[name];
    if (v !== undefined && /^\d{1,10}$/.test(v) && Number(v) >= 1000) return Number(v);
  }
  return DEFAULT_POLL_INTERVAL_MS;
}

/** Config variables: fleet < device; a service scope does not apply to config. */
export function configOf(variables: readonly ScopedVariable[]): Record<string, string> {
  const config: Record<string, string> = {};
  for (const level of ['fleet', 'device'] as const) {
    for (const v of variables) if (v.level === level && v.service === null && isConfigVariable(v.name)) config[v.name] = v.value;
  }
  return config;
}

/**
 * A service's environment: the composition's (the image's own ENV stays in the image and the
 * engine puts it below) < fleet < fleet+service < device < device+service.
 */
export function environmentOf(service: string, composition: Record<string, unknown>, variables: readonly ScopedVariable[]): Record<string, string> {
  const env: Record<string, string> = { ...stringRecord(composition.environment) };
  const layers: Array<(v: ScopedVariable) => boolean> = [
    (v) => v.level === 'fleet' && v.service === null,
    (v) => v.level === 'fleet' && v.service === service,
    (v) => v.level === 'device' && v.service === null,
    (v) => v.level === 'device' && v.service === service,
  ];
  for (const layer of layers) {
    for (const v of variables) if (layer(v) && !isConfigVariable(v.name)) env[v.name] = v.value;
  }
  return env;
}

function stringRecord(value: unknown): Record<string, string> {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out[k] = v;
  return out;
}

/**
 * The release a device runs: its own pin, else its fleet's pin, else the fleet's latest final,
 * successful, not invalidated release (the caller finds that one). Ids, or undefined for none.
 */
export function chooseRelease(pins: { device: number | null; fleet: number | null; latest: number | null }): number | undefined {
  return pins.device ?? pins.fleet ?? pins.latest ?? undefined;
}

/** Assembles a device's v3 target state, keyed by its uuid. */
export function assembleTarget(input: TargetInput): TargetStateV3 {
  const { device, fleet, release, variables, registryHost } = input;
  const releases: DeviceTargetV3['apps'][string]['releases'] = {};
  if (release) {
    const services: Record<string, TargetServiceV3> = {};
    for (const [name, composition] of Object.entries(release.composition.services).sort(([a], [b]) => a.localeCompare(b))) {
      const image = release.images.find((i) => i.service === name);
      if (!image) throw new Error(`release ${release.commit} has no image for service ${name}`);
      const { build: _build, ...rest } = composition;
      services[name] = {
        id: image.id,
        image_id: image.id,
        image: `${registryHost}/${image.repository}@${image.digest}`,
        environment: environmentOf(name, composition, variables),
        labels: stringRecord(composition.labels),
        composition: rest,
      };
    }
    releases[release.commit] = { id: release.id, services, volumes: release.composition.volumes ?? {}, networks: release.composition.networks ?? {} };
  }
  return {
    [device.uuid]: {
      name: device.name,
      config: configOf(variables),
      apps: { [fleet.uuid]: { id: fleet.id, name: fleet.name, class: 'fleet', releases } },
    },
  };
}
