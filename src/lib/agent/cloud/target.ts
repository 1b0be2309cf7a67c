/**
 * The cloud's target state (balena's v3 shape, `GET /device/v3/:uuid/state`) → the agent's
 * local-mode target JSON, which the agent parses with the one parser local mode uses
 * (`parseLocalTargetState`, and through it `parseServiceConfig`). This file is the one mapping
 * between the two shapes: what v3 calls a release keyed by commit with services keyed by name is,
 * in local mode, an app keyed by id with a commit and services keyed by id. Nothing here decides
 * whether a service's settings are valid; the parser does, so a setting is honoured or refused the
 * same way whichever way the target came.
 */
import type { DeviceTargetV3, TargetStateV3 } from '../../api/device-state.js';
import type { LocalAppJson, LocalServiceJson, LocalTargetStateJson } from '../../device-api/wire.js';
import { ServiceConfigError, stringMap, type ServiceJson } from '../../service/service-config.js';
import { InvalidTargetError, parseLocalTargetState } from '../target-state.js';
import type { TargetState } from '../model.js';

/** One image a cloud target needs: where it is pulled from, and the stable name the engine tags it with. */
export interface CloudImage {
  /** The reference in the target, e.g. `cloud.example.com/<fleet uuid>/web@sha256:…`. */
  remote: string;
  /** The name the agent's target uses: {@link localImageName} of `remote`. */
  local: string;
  /** Registry host (with port) of `remote`; undefined for a Docker Hub short name. */
  host?: string;
  /** Repository path without the host, e.g. `<fleet uuid>/web`. */
  repository: string;
  /** `sha256:<hex>` when the reference is by digest. */
  digest?: string;
  /** Services (`<app uuid>/<name>`) that run it. */
  services: string[];
}

/** An app of a cloud target, as the reports name it. */
export interface CloudApp {
  /** The fleet's uuid: the key of `apps` in both the target and the report. */
  uuid: string;
  /** The local-mode app id (the v3 app's `id`). */
  appId: number;
  /** The release to run (its commit), or undefined when the fleet has none. */
  commit?: string;
  /** Service names of that release. */
  services: string[];
}

export interface ConvertedTarget {
  /** The target as the agent stores and applies it (`POST /v2/local/target-state`'s shape). */
  json: LocalTargetStateJson;
  /** `json` parsed: proof that the agent accepts it. */
  parsed: TargetState;
  /** Config variables of the device (poll interval and the like). */
  config: Record<string, string>;
  apps: CloudApp[];
  images: CloudImage[];
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * Splits an image reference into host, repository, tag and digest (distribution's reference
 * grammar, simplified: the first part is a host when it has a dot, a colon, or is `localhost`).
 * @throws InvalidTargetError when the reference is empty or its digest is not `sha256:<64 hex>`
 */
export function splitImageReference(reference: string): { host?: string; repository: string; tag?: string; digest?: string } {
  let rest = reference.trim();
  if (rest === '' || /\s/.test(rest)) throw new InvalidTargetError(`image reference '${reference}' is not valid`);
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new InvalidTargetError(`image reference '${reference}' has a digest that is not sha256:<64 hex digits>`);
  }
  let host: string | undefined;
  const slash = rest.indexOf('/');
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      host = first;
      rest = rest.slice(slash + 1);
    }
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  if (!/^[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*$/.test(rest)) throw new InvalidTargetError(`image reference '${reference}' has an invalid repository '${rest}'`);
  return { host, repository: rest, tag, digest };
}

/**
 * The stable name an image pulled by digest gets on the device's engine: `skiff-cloud/<repository>`
 * tagged `sha256-<hex>`. The pull itself goes through an ephemeral loopback port, so the engine's
 * own name for it changes from run to run; this one does not, and the planner compares it as it
 * compares any image name. A reference without a digest is its own name.
 * @example localImageName('cloud.example.com/abc/web@sha256:0f…') // 'skiff-cloud/abc/web:sha256-0f…'
 */
export function localImageName(reference: string): string {
  const ref = splitImageReference(reference);
  if (!ref.digest) return reference;
  return `skiff-cloud/${ref.repository}:${ref.digest.replace(':', '-')}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringRecord(v: unknown, what: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) throw new InvalidTargetError(`${what} must be an object of strings`);
  for (const [k, val] of Object.entries(v)) if (typeof val !== 'string') throw new InvalidTargetError(`${what}: '${k}' must be a string`);
  return v as Record<string, string>;
}

/**
 * Converts the body of `GET /device/v3/:uuid/state` for device `uuid` into the agent's target.
 * Every service's `composition` (the ServiceJson wire form) is taken as it is, with the target's
 * own fields over it: `image` (pulled by digest, run under {@link localImageName}), `environment`
 * (the server's merged variables over the compose file's), `labels` (the target's over the
 * composition's), `running`.
 * @throws InvalidTargetError naming what is wrong: not this device's target, a malformed app or
 *   release, more than one release for an app, or anything the agent's parser refuses
 */
export function convertTargetV3(body: unknown, uuid: string, deviceName: string): ConvertedTarget {
  if (!isRecord(body)) throw new InvalidTargetError('the target state must be an object keyed by the device uuid');
  const device = body[uuid];
  if (!isRecord(device)) throw new InvalidTargetError(`the target state has no entry for this device (${uuid})`);
  const typed = device as Partial<DeviceTargetV3>;
  const config = stringRecord(typed.config, 'config');
  if (!isRecord(typed.apps)) throw new InvalidTargetError("the target state's 'apps' must be an object keyed by app uuid");
  const localApps: Record<string, LocalAppJson> = {};
  const apps: CloudApp[] = [];
  const images = new Map<string, CloudImage>();
  for (const [appUuid, rawApp] of Object.entries(typed.apps as Record<string, unknown>)) {
    if (!isRecord(rawApp)) throw new InvalidTargetError(`app ${appUuid} must be an object`);
    const appId = rawApp.id;
    if (typeof appId !== 'number' || !Number.isInteger(appId) || appId <= 0) throw new InvalidTargetError(`app ${appUuid} needs a positive integer id`);
    if (rawApp.class !== 'fleet') throw new InvalidTargetError(`app ${appUuid} is of class '${String(rawApp.class)}'; only fleet apps are supported`);
    if (String(appId) in localApps) throw new InvalidTargetError(`two apps have the id ${appId}`);
    const name = typeof rawApp.name === 'string' && rawApp.name !== '' ? rawApp.name : `app${appId}`;
    const releases = rawApp.releases ?? {};
    if (!isRecord(releases)) throw new InvalidTargetError(`releases of app '${name}' must be an object keyed by commit`);
    const entries = Object.entries(releases);
    if (entries.length > 1) throw new InvalidTargetError(`app '${name}' has ${entries.length} releases; a device runs one`);
    const [commit, rawRelease] = entries[0] ?? [];
    const localServices: Record<string, LocalServiceJson> = {};
    const local: LocalAppJson = { name, services: localServices, volumes: {}, networks: {} };
    const app: CloudApp = { uuid: appUuid, appId, commit, services: [] };
    if (commit !== undefined) {
      if (!isRecord(rawRelease)) throw new InvalidTargetError(`release ${commit} of app '${name}' must be an object`);
      local.commit = commit;
      local.releaseId = typeof rawRelease.id === 'number' ? rawRelease.id : commit;
      const services = rawRelease.services ?? {};
      if (!isRecord(services)) throw new InvalidTargetError(`services of release ${commit} must be an object keyed by name`);
      for (const [serviceName, raw] of Object.entries(services)) {
        if (!isRecord(raw)) throw new InvalidTargetError(`service '${serviceName}' of release ${commit} must be an object`);
        const service = serviceFrom(serviceName, raw, commit);
        const image = typeof raw.image === 'string' ? raw.image : '';
        const ref = splitImageReference(image);
        const localName = localImageName(image);
        const known = images.get(image) ?? { remote: image, local: localName, host: ref.host, repository: ref.repository, digest: ref.digest, services: [] };
        known.services.push(`${appUuid}/${serviceName}`);
        images.set(image, known);
        localServices[String(service.serviceId)] = { ...service, image: localName };
        app.services.push(serviceName);
      }
      local.volumes = objectOf(rawRelease.volumes, `volumes of release ${commit}`);
      local.networks = objectOf(rawRelease.networks, `networks of release ${commit}`);
    }
    localApps[String(appId)] = local;
    apps.push(app);
  }
  const json: LocalTargetStateJson = { local: { name: typeof typed.name === 'string' && typed.name !== '' ? typed.name : deviceName, config, apps: localApps }, dependent: { apps: {}, devices: {} } };
  const parsed = parseLocalTargetState(json, deviceName);
  return { json, parsed, config, apps, images: [...images.values()] };
}

/** A v3 service → a local-mode service, before its image is renamed. */
function serviceFrom(serviceName: string, raw: Record<string, unknown>, commit: string): Omit<LocalServiceJson, 'image'> {
  const where = `service '${serviceName}' of release ${commit}`;
  if (typeof raw.id !== 'number' || !Number.isInteger(raw.id) || raw.id <= 0) throw new InvalidTargetError(`${where} needs a positive integer id`);
  if (typeof raw.image !== 'string' || raw.image === '') throw new InvalidTargetError(`${where} needs an image`);
  if (raw.composition !== undefined && !isRecord(raw.composition)) throw new InvalidTargetError(`${where}: composition must be an object`);
  const composition = (raw.composition ?? {}) as ServiceJson & Record<string, unknown>;
  const environment = stringRecord(raw.environment, `${where}: environment`);
  const labels = stringRecord(raw.labels, `${where}: labels`);
  const imageId = typeof raw.image_id === 'number' && Number.isInteger(raw.image_id) ? raw.image_id : raw.id;
  // The composition's own maps are read with the service parser's rule (a mapping or NAME=value
  // list), so a compose file's list form merges too instead of hiding the target's variables.
  const merged = (key: 'environment' | 'labels', over: Record<string, string>): Record<string, string> => {
    const own = composition[key];
    if (own === undefined || own === null) return over;
    try {
      return { ...stringMap(own, { key, service: serviceName }, { namesRequired: key === 'environment' }), ...over };
    } catch (err) {
      if (err instanceof ServiceConfigError) throw new InvalidTargetError(err.message);
      throw err;
    }
  };
  return {
    ...composition,
    environment: merged('environment', environment),
    labels: merged('labels', labels),
    serviceName,
    serviceId: raw.id,
    imageId,
    running: raw.running !== false,
  };
}

function objectOf(v: unknown, what: string): Record<string, Record<string, unknown>> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) throw new InvalidTargetError(`${what} must be an object`);
  return v as Record<string, Record<string, unknown>>;
}

/** The type of a v3 body, for callers that hold one already checked by the server's schema. */
export type { TargetStateV3 };
