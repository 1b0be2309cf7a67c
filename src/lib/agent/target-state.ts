/**
 * balena local-mode target state (the JSON of `GET/POST /v2/local/target-state`) ↔ our model.
 * Validation happens here, before anything changes: a bad target is refused whole.
 */
import type { Healthcheck, ServiceConfig, TargetApp, TargetService, TargetState } from './model.js';

/** The body balena-cli POSTs: `{ local: { name, config, apps: { "<appId>": {...} } }, dependent }`. */
export interface LocalTargetStateJson {
  local: {
    name?: string;
    config?: Record<string, unknown>;
    apps?: Record<string, LocalAppJson>;
  };
  dependent?: unknown;
}

export interface LocalAppJson {
  name?: string;
  commit?: string;
  releaseId?: string | number;
  services?: Record<string, Record<string, unknown>>;
  volumes?: Record<string, Record<string, unknown> | null>;
  networks?: Record<string, Record<string, unknown> | null>;
}

/** A target the agent refuses (HTTP 400), with what is wrong. */
export class InvalidTargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidTargetError';
  }
}

const RESTART = /^(no|always|unless-stopped|on-failure(:\d+)?)$/;
const PORT = /^(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:(\d+)(?:-(\d+))?:)?(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/;
const SERVICE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown, what: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (Array.isArray(v)) {
    const out: Record<string, string> = {};
    for (const item of v) {
      if (typeof item !== 'string') throw new InvalidTargetError(`${what} must be a list of KEY=value strings`);
      const eq = item.indexOf('=');
      if (eq < 0) out[item] = '';
      else out[item.slice(0, eq)] = item.slice(eq + 1);
    }
    return out;
  }
  if (!isRecord(v)) throw new InvalidTargetError(`${what} must be a map`);
  return Object.fromEntries(Object.entries(v).map(([k, val]) => [k, val === null || val === undefined ? '' : String(val)]));
}

function stringList(v: unknown, what: string): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' && typeof x !== 'number')) throw new InvalidTargetError(`${what} must be a list of strings`);
  return v.map(String);
}

function commandList(v: unknown, what: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return ['/bin/sh', '-c', v];
  return stringList(v, what);
}

/** `1m30s`, `10s`, `500ms`, or a number of seconds. */
export function durationSeconds(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') throw new InvalidTargetError(`${what} must be a duration such as 10s`);
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
  let matched = '';
  for (let m = re.exec(v); m; m = re.exec(v)) {
    matched += m[0];
    const n = Number(m[1]);
    const unit = m[2];
    total += unit === 'h' ? n * 3600 : unit === 'm' ? n * 60 : unit === 's' ? n : unit === 'ms' ? n / 1000 : n / 1e6;
  }
  if (matched !== v) throw new InvalidTargetError(`${what} '${v}' is not a duration such as 10s`);
  return total;
}

function healthcheck(v: unknown, service: string): Healthcheck | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v)) throw new InvalidTargetError(`healthcheck of service '${service}' must be a map`);
  if (v.disable === true) return { test: ['NONE'] };
  const test = typeof v.test === 'string' ? ['CMD-SHELL', v.test] : stringList(v.test, `healthcheck.test of service '${service}'`);
  return {
    test,
    intervalSeconds: durationSeconds(v.interval, `healthcheck.interval of service '${service}'`),
    timeoutSeconds: durationSeconds(v.timeout, `healthcheck.timeout of service '${service}'`),
    retries: typeof v.retries === 'number' ? v.retries : undefined,
    startPeriodSeconds: durationSeconds(v.start_period, `healthcheck.start_period of service '${service}'`),
  };
}

const KNOWN = new Set([
  'serviceName', 'serviceId', 'imageId', 'image', 'running', 'environment', 'labels', 'ports', 'volumes', 'tmpfs',
  'networks', 'network_mode', 'restart', 'privileged', 'cap_add', 'cap_drop', 'devices', 'depends_on', 'command',
  'entrypoint', 'working_dir', 'user', 'hostname', 'stop_signal', 'stop_grace_period', 'healthcheck', 'expose',
  'releaseId', 'commit', 'contract', 'composition',
]);

function serviceFrom(key: string, raw: Record<string, unknown>, appName: string): TargetService {
  const name = raw.serviceName;
  if (typeof name !== 'string' || !SERVICE_NAME.test(name)) throw new InvalidTargetError(`service ${key} of app '${appName}' needs a valid serviceName`);
  if (typeof raw.image !== 'string' || raw.image === '') throw new InvalidTargetError(`service '${name}' needs an image`);
  const restart = raw.restart === undefined ? 'always' : String(raw.restart);
  if (!RESTART.test(restart)) throw new InvalidTargetError(`service '${name}' has an invalid restart policy '${restart}' (use no, always, on-failure or unless-stopped)`);
  const ports = stringList(raw.ports, `ports of service '${name}'`);
  for (const p of ports) {
    const m = PORT.exec(p);
    const nums = m ? [m[1], m[2], m[3], m[4]].filter((x): x is string => x !== undefined).map(Number) : [];
    if (!m || nums.some((n) => n < 1 || n > 65535)) throw new InvalidTargetError(`service '${name}' has an invalid port '${p}'`);
  }
  const volumes = stringList(raw.volumes, `volumes of service '${name}'`);
  for (const v of volumes) {
    if (/^[./~]/.test(v) && v.includes(':')) throw new InvalidTargetError(`service '${name}' binds a host path ('${v}'); only named volumes are allowed`);
  }
  const serviceId = Number(raw.serviceId ?? key);
  if (!Number.isInteger(serviceId)) throw new InvalidTargetError(`service '${name}' has a non-numeric serviceId`);
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!KNOWN.has(k)) extra[k] = v;
  const config: ServiceConfig = {
    image: raw.image,
    command: commandList(raw.command, `command of service '${name}'`),
    entrypoint: commandList(raw.entrypoint, `entrypoint of service '${name}'`),
    environment: stringMap(raw.environment, `environment of service '${name}'`),
    labels: stringMap(raw.labels, `labels of service '${name}'`),
    ports,
    volumes,
    tmpfs: stringList(raw.tmpfs, `tmpfs of service '${name}'`),
    networks: Array.isArray(raw.networks) ? stringList(raw.networks, 'networks') : isRecord(raw.networks) ? Object.keys(raw.networks) : [],
    networkMode: typeof raw.network_mode === 'string' ? raw.network_mode : undefined,
    restart,
    privileged: raw.privileged === true,
    capAdd: stringList(raw.cap_add, 'cap_add'),
    capDrop: stringList(raw.cap_drop, 'cap_drop'),
    devices: stringList(raw.devices, 'devices'),
    dependsOn: Array.isArray(raw.depends_on) ? stringList(raw.depends_on, 'depends_on') : isRecord(raw.depends_on) ? Object.keys(raw.depends_on) : [],
    workingDir: typeof raw.working_dir === 'string' ? raw.working_dir : undefined,
    user: raw.user === undefined ? undefined : String(raw.user),
    hostname: typeof raw.hostname === 'string' ? raw.hostname : undefined,
    stopSignal: typeof raw.stop_signal === 'string' ? raw.stop_signal : undefined,
    stopGracePeriodSeconds: durationSeconds(raw.stop_grace_period, `stop_grace_period of service '${name}'`),
    healthcheck: healthcheck(raw.healthcheck, name),
    extra,
  };
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
