/**
 * The device API's wire formats: the JSON the agent's API (src/lib/agent/api.ts) sends and the
 * CLI's device client (src/lib/device) reads, one type per format, shared by both sides. They
 * follow balena-supervisor's `docs/API.md` (named per type), so balena-cli and a balenaOS device's
 * supervisor speak them too; the fields skiff adds are marked as such. Types only: no runtime code.
 *
 * A reader may be talking to a balena supervisor, which leaves some fields out: the CLI reads these
 * through {@link Received}, the agent writes them whole.
 */

import type { ServiceJson } from '../service/service-config.js';

/** What a reader gets: any field may be missing (an older or foreign device), never of another type. */
export type Received<T> = T extends ReadonlyArray<infer U>
  ? Array<Received<U>>
  : T extends object
    // A map keyed by name (apps, services) keeps its entries; an object's fields may be missing.
    ? string extends keyof T ? { [K in keyof T]: Received<T[K]> } : { [K in keyof T]?: Received<T[K]> }
    : T;

/** An answer that failed (any endpoint, non-2xx): `{ status: 'failed', message }` (docs/API.md, "V2 API"). */
export interface FailedResponse {
  status: 'failed';
  message: string;
}

/** `GET /v2/version` (docs/API.md, "GET /v2/version"). */
export interface VersionResponse {
  status: 'success';
  /** The supervisor API level the device speaks, e.g. `17.0.0`. */
  version: string;
}

/** `GET /v2/local/device-info` (docs/API.md, "GET /v2/local/device-info"): local mode only. */
export interface DeviceInfoResponse {
  status: 'success';
  info: {
    /** balena's architecture name, e.g. `amd64`, `aarch64`. */
    arch: string;
    /** The device type slug, e.g. `intel-nuc`. */
    deviceType: string;
  };
}

/**
 * One line of `GET /v2/local/logs` (docs/API.md, "GET /v2/local/logs"): newline-delimited JSON,
 * the history first, then new lines as they come.
 */
export interface LogLine {
  message: string;
  /** Milliseconds since the epoch. */
  timestamp: number;
  /** The agent's (or supervisor's) own message, not a service's. */
  isSystem?: boolean;
  isStdErr?: boolean;
  serviceName?: string;
  serviceId?: number;
  appId?: number;
}

/** A container in `GET /v2/state/status`; `status` is balena's word: Running, Exited, Installed, … */
export interface StatusContainer {
  status: string;
  serviceName: string;
  appId: number;
  serviceId: number;
  containerId: string;
  /** RFC 3339. */
  createdAt: string;
}

/** `GET /v2/state/status` (docs/API.md, "GET /v2/state/status"). */
export interface StateStatusResponse {
  status: 'success';
  appState: 'applied' | 'applying' | 'failed';
  overallDownloadProgress: number | null;
  containers: StatusContainer[];
  /** The release (commit) applied and confirmed up; null before the first. */
  release: string | null;
  /** skiff: the last release that did not stay up and was rolled back. */
  failedRelease?: { commit: string; reason: string };
  /** skiff: why the device is not applied (the last failure, or what it waits for). */
  error?: string;
}

/** `GET /v2/applications/state` (docs/API.md, "GET /v2/applications/state"), keyed by app name. */
export type ApplicationsStateResponse = Record<string, {
  appId: number;
  commit: string;
  services: Record<string, { status: string; releaseId: string | number | null; downloadProgress: number | null }>;
}>;

/**
 * `GET /v2/containerId` (docs/API.md, "GET /v2/containerId"): one service's container with
 * `?serviceName=`, else every service's.
 */
export type ContainerIdResponse =
  | { status: 'success'; containerId: string }
  | { status: 'success'; services: Record<string, string> };

/**
 * The local-mode target state (docs/API.md, "POST /v2/local/target-state"): what `skiff push` and
 * balena-cli POST, and what GET gives back. The body balena-cli POSTs: `{ local: { name, config, apps: { "<appId>": {...} } }, dependent }`.
 */
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
  services?: Record<string, LocalServiceJson>;
  volumes?: Record<string, Record<string, unknown> | null>;
  networks?: Record<string, Record<string, unknown> | null>;
}

/** One service of a local-mode app: its compose keys inlined, plus what the release says about it. */
export interface LocalServiceJson extends ServiceJson {
  serviceName: string;
  serviceId: number;
  imageId: number;
  /** The image to run: a name on the device's engine (balena-cli: `local_<service>`). */
  image: string;
  running: boolean;
}

/** `GET /v2/local/target-state` (docs/API.md, "GET /v2/local/target-state"): the target as posted. */
export interface TargetStateResponse {
  status: 'success';
  /** The local-mode target, validated by the agent when posted. */
  state: LocalTargetStateJson;
}

/** `POST /v2/local/target-state` and the other v2 actions that succeed with a message. */
export interface SuccessResponse {
  status: 'success';
  message: string;
}

/** `POST /v2/applications/:appId/{restart,stop,start}-service` body (docs/API.md). */
export interface ServiceActionRequest {
  serviceName: string;
  imageId?: number;
}

/** `POST /v1/restart` and `POST /v1/purge` body (docs/API.md, "POST /v1/restart", "POST /v1/purge"). */
export interface AppActionRequest {
  appId: number;
}

/** `POST /v1/purge` (docs/API.md, "POST /v1/purge"). */
export interface PurgeResponse {
  Data: 'OK';
  Error: string;
}

/** `GET /v1/device` (docs/API.md, "GET /v1/device"). */
export interface DeviceV1Response {
  api_port: number;
  commit: string | null;
  status: 'Idle' | 'Installing' | 'Failed';
  download_progress: number | null;
  os_version: string;
  supervisor_version: string;
  update_pending: boolean;
  update_downloaded: boolean;
  update_failed: boolean;
}
