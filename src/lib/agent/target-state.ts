/**
 * balena local-mode target state (the JSON of `GET/POST /v2/local/target-state`) ↔ our model.
 * Validation happens here, before anything changes: a bad target is refused whole.
 */
import { parseServiceConfig, ServiceConfigError } from '../service/service-config.js';
import type { ServiceConfig, TargetApp, TargetService, TargetState } from './model.js';

export type { LocalAppJson, LocalServiceJson, LocalTargetStateJson } from '../device-api/wire.js';

/** A target the agent refuses (HTTP 400), with what is wrong. */
export class InvalidTargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidTargetError';
  }
}

const SERVICE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Keys of a target-state service that describe the release, not the container. */
const SERVICE_META = new Set(['serviceName', 'serviceId', 'imageId', 'running', 'releaseId', 'commit', 'contract', 'composition']);

function serviceFrom(key: string, raw: Record<string, unknown>, appName: string): TargetService {
  const name = raw.serviceName;
  if (typeof name !== 'string' || !SERVICE_NAME.test(name)) throw new InvalidTargetError(`service ${key} of app '${appName}' needs a valid serviceName`);
  const serviceId = Number(raw.serviceId ?? key);
  if (!Number.isInteger(serviceId)) throw new InvalidTargetError(`service '${name}' has a non-numeric serviceId`);
  let config: ServiceConfig;
  try {
    config = parseServiceConfig(raw, name, SERVICE_META);
  } catch (err) {
    if (err instanceof ServiceConfigError) throw new InvalidTargetError(`${err.message}${err.hint ? ` (${err.hint})` : ''}`);
    throw err;
  }
  return {
    serviceId,
    serviceName: name,
    imageId: Number(raw.imageId ?? serviceId),
    running: raw.running !== false,
    config,
    raw,
  };
}

/** Parses and validates a local-mode target state. Throws InvalidTargetError (→ 400) on anything wrong. */
export function parseLocalTargetState(body: unknown, deviceName: string): TargetState {
  if (!isRecord(body) || !isRecord(body.local)) throw new InvalidTargetError("the target state must be an object with a 'local' key");
  const local = body.local;
  const apps: TargetApp[] = [];
  const rawApps = local.apps ?? {};
  if (!isRecord(rawApps)) throw new InvalidTargetError("'local.apps' must be an object keyed by app id");
  for (const [appKey, rawApp] of Object.entries(rawApps)) {
    const appId = Number(appKey);
    if (!Number.isInteger(appId) || appId <= 0) throw new InvalidTargetError(`app id '${appKey}' is not a positive integer`);
    if (!isRecord(rawApp)) throw new InvalidTargetError(`app ${appKey} must be an object`);
    const name = typeof rawApp.name === 'string' ? rawApp.name : `app${appId}`;
    const services: TargetService[] = [];
    const rawServices = rawApp.services ?? {};
    if (!isRecord(rawServices)) throw new InvalidTargetError(`services of app '${name}' must be an object`);
    for (const [key, raw] of Object.entries(rawServices)) {
      if (!isRecord(raw)) throw new InvalidTargetError(`service ${key} of app '${name}' must be an object`);
      const s = serviceFrom(key, raw, name);
      if (services.some((x) => x.serviceName === s.serviceName)) throw new InvalidTargetError(`app '${name}' has two services named '${s.serviceName}'`);
      if (services.some((x) => x.serviceId === s.serviceId)) throw new InvalidTargetError(`app '${name}' has two services with id ${s.serviceId}`);
      services.push(s);
    }
    const volumes = objectOfObjects(rawApp.volumes, `volumes of app '${name}'`);
    const networks = objectOfObjects(rawApp.networks, `networks of app '${name}'`);
    for (const s of services) {
      for (const dep of s.config.dependsOn) {
        if (!services.some((x) => x.serviceName === dep)) throw new InvalidTargetError(`service '${s.serviceName}' depends on '${dep}', which is not in the release`);
      }
      for (const v of s.config.volumes) {
        const vol = v.split(':')[0] ?? '';
        if (v.includes(':') && !(vol in volumes)) throw new InvalidTargetError(`service '${s.serviceName}' uses volume '${vol}', which the release does not declare`);
      }
    }
    apps.push({
      appId,
      name,
      commit: typeof rawApp.commit === 'string' ? rawApp.commit : '',
      releaseId: rawApp.releaseId === undefined ? '' : String(rawApp.releaseId),
      services: services.sort((a, b) => a.serviceId - b.serviceId),
      volumes,
      networks,
    });
  }
  const config = isRecord(local.config) ? Object.fromEntries(Object.entries(local.config).map(([k, v]) => [k, String(v)])) : {};
  return { name: typeof local.name === 'string' ? local.name : deviceName, config, apps: apps.sort((a, b) => a.appId - b.appId) };
}

function objectOfObjects(v: unknown, what: string): Record<string, Record<string, unknown>> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) throw new InvalidTargetError(`${what} must be an object`);
  const out: Record<string, Record<string, unknown>> = {};
  for (const [k, val] of Object.entries(v)) {
    if (!SERVICE_NAME.test(k)) throw new InvalidTargetError(`'${k}' in ${what} is not a valid name`);
    out[k] = isRecord(val) ? val : {};
  }
  return out;
}

/** All images a target needs. */
export function targetImages(target: TargetState): string[] {
  return [...new Set(target.apps.flatMap((a) => a.services.map((s) => s.config.image)))];
}
