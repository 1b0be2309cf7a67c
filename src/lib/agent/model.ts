/**
 * The agent's one typed model of what should run (target) and what runs (current).
 * The balena local-mode JSON (`/v2/local/target-state`) is parsed into it by target-state.ts;
 * snapshot.ts reads the current state from the engine; plan.ts compares the two.
 */
import type { ServiceConfig } from '../service/service-config.js';

/** `io.balena.update.strategy` values. */
export type UpdateStrategy = 'download-then-kill' | 'kill-then-download' | 'delete-then-download' | 'hand-over';

/** A service's container settings: one type from the project model to the container (src/lib/service). */
export type { Healthcheck, ServiceConfig } from '../service/service-config.js';

export interface TargetService {
  serviceId: number;
  serviceName: string;
  imageId: number;
  /** Whether the service should be running (false: created but stopped). */
  running: boolean;
  config: ServiceConfig;
  /** The service's JSON as the target state carried it; kept on the container so a lost database can be rebuilt exactly. */
  raw?: Record<string, unknown>;
}

export interface TargetApp {
  appId: number;
  name: string;
  commit: string;
  releaseId: string;
  services: TargetService[];
  volumes: Record<string, Record<string, unknown>>;
  networks: Record<string, Record<string, unknown>>;
}

export interface TargetState {
  /** The device name. */
  name: string;
  config: Record<string, string>;
  apps: TargetApp[];
}

/** A container the agent manages, as read from the engine (labels say which agent, app and service). */
export interface CurrentContainer {
  containerId: string;
  name: string;
  appId: number;
  serviceId: number;
  serviceName: string;
  commit: string;
  releaseId: string;
  /** The engine's image id (sha256:...). */
  imageId: string;
  /** Hash of the ServiceConfig the container was created from (a label), to detect changes. */
  configHash: string;
  state: 'created' | 'running' | 'paused' | 'restarting' | 'removing' | 'exited' | 'dead';
  health?: 'starting' | 'healthy' | 'unhealthy';
  createdAt: string;
  startedAt?: string;
  exitCode?: number;
}

export interface CurrentState {
  containers: CurrentContainer[];
  /** Images on the engine, by name (tags) → engine image id. */
  images: Record<string, string>;
  /** Volumes this agent made: `<appId>_<name>`. */
  volumes: Array<{ appId: number; name: string }>;
  networks: Array<{ appId: number; name: string }>;
  /** appIds whose services hold an update lock file. */
  locked: number[];
  /** `<appId>/<serviceName>` of services whose new container wrote `handover-complete` in its lock folder. */
  handoverComplete?: string[];
}

/**
 * One thing to do. The planner returns these; engine-state.ts has one executor per action, and
 * `noop` (a wait the planner reports, e.g. for an update lock) is never executed. Only what the
 * planner emits belongs here: an executor table is checked against this union, so a kind nobody
 * plans would be dead code the compiler insists on.
 */
export type Step =
  | { action: 'fetch'; appId: number; serviceName: string; image: string }
  | { action: 'createVolume'; appId: number; name: string; config: Record<string, unknown> }
  | { action: 'createNetwork'; appId: number; name: string; config: Record<string, unknown> }
  | { action: 'removeVolume'; appId: number; name: string }
  | { action: 'removeNetwork'; appId: number; name: string }
  | { action: 'stop'; container: CurrentContainer }
  | { action: 'kill'; container: CurrentContainer }
  /** `deleteImage`: also delete the container's image unless another container uses it (delete-then-download). */
  | { action: 'remove'; container: CurrentContainer; deleteImage?: boolean }
  | { action: 'create'; app: TargetApp; service: TargetService }
  | { action: 'start'; container: CurrentContainer }
  | { action: 'noop'; reason: string };

export type StepAction = Step['action'];
