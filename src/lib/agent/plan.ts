/**
 * The planner: compares the current state with the target and returns the steps of the next round.
 * It is pure (no I/O, no clock, no randomness) so the agent loop `snapshot → plan → execute` can be
 * tested by simulation: each round only does what is safe given what is already true, and the
 * loop ends when plan() returns [].
 */
import { createHash } from 'node:crypto';
import type {
  CurrentContainer,
  CurrentState,
  Step,
  TargetApp,
  TargetService,
  TargetState,
  UpdateStrategy,
} from './model.js';

/** Options of {@link plan}. */
export interface PlanOptions {
  /** Override update locks (a forced update): disruptive steps go ahead even if the app holds a lock. */
  force?: boolean;
  /**
   * The time (ms since the epoch), for the hand-over timeout. Without it the planner has no clock
   * and a hand-over completes as soon as the new container runs.
   */
  now?: number;
}

/** The label with a hand-over's timeout in milliseconds, as balena's supervisor reads it. */
export const HANDOVER_TIMEOUT_LABEL = 'io.balena.update.handover-timeout';
const DEFAULT_HANDOVER_TIMEOUT_MS = 60_000;

/** A service's hand-over timeout (ms) from its label; missing or invalid gives balena's 60 s. */
export function handoverTimeoutMs(service: TargetService): number {
  const v = Number(service.config.labels[HANDOVER_TIMEOUT_LABEL]);
  return Number.isFinite(v) && v >= 0 ? v : DEFAULT_HANDOVER_TIMEOUT_MS;
}

/** The label that selects a service's {@link UpdateStrategy}. */
export const UPDATE_STRATEGY_LABEL = 'io.balena.update.strategy';

const DEFAULT_STRATEGY: UpdateStrategy = 'download-then-kill';
const STRATEGIES: readonly UpdateStrategy[] = ['download-then-kill', 'kill-then-download', 'delete-then-download', 'hand-over'];

/**
 * The update strategy of a service, from its `io.balena.update.strategy` label.
 * Missing or unknown values give the default, `download-then-kill` (as balena's supervisor does).
 */
export function updateStrategy(service: TargetService): UpdateStrategy {
  const label = service.config.labels[UPDATE_STRATEGY_LABEL];
  return STRATEGIES.find((s) => s === label) ?? DEFAULT_STRATEGY;
}

/** JSON with object keys sorted at every depth, so equal values always hash alike. */
function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    // Like JSON.stringify: an undefined field is the same as an absent one.
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/**
 * Deterministic hash of what a container is created from: the service's ServiceConfig, the engine
 * image id of its image (so a rebuilt image under the same tag counts as a change), its appId and
 * serviceName. Hex sha256 over canonical JSON (sorted keys). `running` is deliberately left out:
 * stopping or starting a service must not recreate its container.
 */
export function serviceConfigHash(app: TargetApp, service: TargetService, engineImageId: string): string {
  const input = canonicalJson({ appId: app.appId, serviceName: service.serviceName, imageId: engineImageId, config: service.config });
  return createHash('sha256').update(input).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Container states

/** States in which a container holds its process and must be killed/stopped before removal. */
function isActive(c: CurrentContainer): boolean {
  return c.state === 'running' || c.state === 'paused' || c.state === 'restarting';
}

/** States from which `start` works. */
function isStartable(c: CurrentContainer): boolean {
  return c.state === 'created' || c.state === 'exited';
}

/** A container that can serve as the service's current one (dead or half-removed ones cannot). */
function isUsable(c: CurrentContainer): boolean {
  return c.state !== 'dead' && c.state !== 'removing';
}

/** Deterministic preference among up-to-date duplicates: running first, then oldest, then by id. */
function keepOrder(a: CurrentContainer, b: CurrentContainer): number {
  const run = Number(b.state === 'running') - Number(a.state === 'running');
  if (run !== 0) return run;
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? -1 : 1;
  return a.containerId < b.containerId ? -1 : a.containerId > b.containerId ? 1 : 0;
}

/** Step to get rid of a container this round: kill it if active, remove it if stopped; nothing while the engine removes it. */
function retire(c: CurrentContainer, deleteImage = false): Step | undefined {
  if (isActive(c)) return { action: 'kill', container: c };
  if (c.state === 'removing') return undefined;
  return { action: 'remove', container: c, ...(deleteImage ? { deleteImage: true } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Per-app analysis

/** What the planner knows about one target service in the current state. */
interface ServiceView {
  service: TargetService;
  strategy: UpdateStrategy;
  /** Engine image id of the target image, if present. */
  engineImageId: string | undefined;
  /** The one up-to-date container the service keeps, if any. */
  keep: CurrentContainer | undefined;
  /** Every other container of the service: outdated, duplicate, dead. */
  old: CurrentContainer[];
}

function viewService(app: TargetApp, service: TargetService, current: CurrentState): ServiceView {
  const engineImageId = current.images[service.config.image];
  const mine = current.containers.filter((c) => c.appId === app.appId && c.serviceName === service.serviceName);
  // Without the image nothing can be up to date: the hash needs its engine id.
  const hash = engineImageId === undefined ? undefined : serviceConfigHash(app, service, engineImageId);
  const matching = mine.filter((c) => c.configHash === hash && isUsable(c)).sort(keepOrder);
  const keep = matching[0];
  return { service, strategy: updateStrategy(service), engineImageId, keep, old: mine.filter((c) => c !== keep) };
}

/** depends_on is met when every dependency has a running, up-to-date container. */
function dependenciesMet(view: ServiceView, views: ReadonlyMap<string, ServiceView>): boolean {
  return view.service.config.dependsOn.every((name) => views.get(name)?.keep?.state === 'running');
}

function missingVolumes(app: TargetApp, current: CurrentState): string[] {
  return Object.keys(app.volumes).filter((name) => !current.volumes.some((v) => v.appId === app.appId && v.name === name)).sort();
}

function missingNetworks(app: TargetApp, current: CurrentState): string[] {
  return Object.keys(app.networks).filter((name) => !current.networks.some((n) => n.appId === app.appId && n.name === name)).sort();
}

/** createVolume/createNetwork for what the app declares and the engine lacks. */
function resourceSteps(app: TargetApp, current: CurrentState): Step[] {
  return [
    ...missingVolumes(app, current).map((name): Step => ({ action: 'createVolume', appId: app.appId, name, config: app.volumes[name] ?? {} })),
    ...missingNetworks(app, current).map((name): Step => ({ action: 'createNetwork', appId: app.appId, name, config: app.networks[name] ?? {} })),
  ];
}

/** Steps for an up-to-date container: bring its run state in line with `running`. */
function runStateSteps(view: ServiceView, keep: CurrentContainer, canStart: boolean): Step[] {
  if (view.service.running) {
    return isStartable(keep) && canStart ? [{ action: 'start', container: keep }] : [];
  }
  return isActive(keep) ? [{ action: 'stop', container: keep }] : [];
}

/**
 * Steps for a service with no up-to-date container, per update strategy:
 * when to fetch, when the old containers go, when the new one is created.
 */
function replaceSteps(app: TargetApp, view: ServiceView, canCreate: boolean): Step[] {
  const { service, strategy, engineImageId, old } = view;
  const fetch: Step = { action: 'fetch', appId: app.appId, serviceName: service.serviceName, image: service.config.image };
  const create: Step = { action: 'create', app, service };
  // delete-then-download also deletes the old image (when nothing else uses it) before the download: for devices short of space.
  const retireOld = old.map((c) => retire(c, strategy === 'delete-then-download' && c.imageId !== engineImageId)).filter((s): s is Step => s !== undefined);
  const hasImage = engineImageId !== undefined;
  switch (strategy) {
    case 'kill-then-download':
    case 'delete-then-download':
      // Old containers go first (frees disk/memory on small devices); only then download.
      if (old.length > 0) return retireOld;
      if (!hasImage) return [fetch];
      return canCreate ? [create] : [];
    case 'hand-over':
      // The new container starts while the old one still runs; the old one is killed later (see keptSteps).
      if (!hasImage) return [fetch];
      return canCreate ? [create] : [];
    case 'download-then-kill':
      // The old container keeps running until the new image is on the device.
      if (!hasImage) return [fetch];
      if (old.length > 0) return retireOld;
      return canCreate ? [create] : [];
  }
}

/**
 * hand-over: the old container serves until the new one runs and says it has taken over (writes
 * `handover-complete` in its lock folder) or the service's hand-over timeout has passed since it
 * started; or at once when the service is not meant to run.
 */
function handedOver(app: TargetApp, view: ServiceView, keep: CurrentContainer, current: CurrentState, now: number | undefined): boolean {
  if (view.strategy !== 'hand-over' || !view.service.running) return true;
  if (keep.state !== 'running') return false;
  if (now === undefined) return true;
  if (current.handoverComplete?.includes(`${app.appId}/${view.service.serviceName}`)) return true;
  const started = keep.startedAt ? Date.parse(keep.startedAt) : NaN;
  return Number.isFinite(started) && now - started >= handoverTimeoutMs(view.service);
}

/** Steps for a service that has its up-to-date container: run state, and retiring the rest. */
function keptSteps(view: ServiceView, keep: CurrentContainer, canStart: boolean, handedOver: boolean): Step[] {
  const steps = runStateSteps(view, keep, canStart);
  if (!handedOver && keep.state === 'running' && view.old.some(isActive)) {
    steps.push({ action: 'noop', reason: `waiting for service '${view.service.serviceName}' to take over from its old container (hand-over)` });
  }
  for (const c of view.old) {
    // Stopped leftovers can always go; active ones wait for the hand-over.
    if (!isActive(c) || handedOver) {
      const step = retire(c);
      if (step) steps.push(step);
    }
  }
  return steps;
}

/** All steps for one target app (locks not yet applied). */
function appSteps(app: TargetApp, current: CurrentState, now: number | undefined): Step[] {
  const steps = resourceSteps(app, current);
  const resourcesReady = steps.length === 0;
  const views = new Map(app.services.map((s) => [s.serviceName, viewService(app, s, current)] as const));
  for (const view of views.values()) {
    // A container is neither created nor started while its app's volumes/networks are missing.
    const ready = resourcesReady && dependenciesMet(view, views);
    if (view.keep) steps.push(...keptSteps(view, view.keep, ready, handedOver(app, view, view.keep, current, now)));
    else steps.push(...replaceSteps(app, view, ready));
  }
  // Containers of services the release no longer has.
  const names = new Set(app.services.map((s) => s.serviceName));
  for (const c of current.containers) {
    if (c.appId !== app.appId || names.has(c.serviceName)) continue;
    const step = retire(c);
    if (step) steps.push(step);
  }
  return steps;
}

/**
 * Steps for an app that is no longer in the target: its containers go, then its networks and
 * volumes (the engine refuses to remove them while containers use them).
 */
function removedAppSteps(appId: number, current: CurrentState): Step[] {
  const containers = current.containers.filter((c) => c.appId === appId);
  if (containers.length > 0) return containers.map((c) => retire(c)).filter((s): s is Step => s !== undefined);
  return [
    ...current.networks.filter((n) => n.appId === appId).map((n): Step => ({ action: 'removeNetwork', appId, name: n.name })),
    ...current.volumes.filter((v) => v.appId === appId).map((v): Step => ({ action: 'removeVolume', appId, name: v.name })),
  ];
}

// ---------------------------------------------------------------------------------------------
// Locks and ordering

function isDisruptive(step: Step): boolean {
  return step.action === 'kill' || step.action === 'stop' || step.action === 'remove';
}

/**
 * A locked app keeps its containers as they are: its disruptive steps become one noop, the rest
 * (downloads, volumes, creating beside a running container) still go ahead.
 */
function applyLock(appId: number, steps: Step[], current: CurrentState, options: PlanOptions): Step[] {
  if (options.force || !current.locked.includes(appId) || !steps.some(isDisruptive)) return steps;
  return [...steps.filter((s) => !isDisruptive(s)), { action: 'noop', reason: `update lock held by app ${appId}` }];
}

const RANK: Record<Step['action'], number> = {
  createVolume: 0,
  createNetwork: 1,
  removeVolume: 2,
  removeNetwork: 3,
  fetch: 4,
  noop: 5,
  kill: 6,
  stop: 6,
  remove: 7,
  create: 8,
  start: 9,
};

/** A step with the app it belongs to, so every kind (noop included) sorts by appId. */
interface AppStep {
  appId: number;
  step: Step;
}

/** Sort key within a kind and app: serviceId (or resource name), then a tie-break. */
function subKey(step: Step, serviceIds: ReadonlyMap<string, number>): [number | string, string] {
  switch (step.action) {
    case 'createVolume':
    case 'createNetwork':
    case 'removeVolume':
    case 'removeNetwork':
      return [step.name, ''];
    case 'fetch':
      return [serviceIds.get(`${step.appId}/${step.serviceName}`) ?? 0, step.serviceName];
    case 'kill':
    case 'stop':
    case 'remove':
    case 'start':
      return [step.container.serviceId, step.container.containerId];
    case 'create':
      return [step.service.serviceId, step.service.serviceName];
    case 'noop':
      return [0, step.reason];
  }
}

function compare(a: number | string, b: number | string): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  const sa = String(a);
  const sb = String(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

function sortSteps(steps: AppStep[], target: TargetState): Step[] {
  const serviceIds = new Map(target.apps.flatMap((a) => a.services.map((s) => [`${a.appId}/${s.serviceName}`, s.serviceId] as const)));
  const keyed = steps.map(({ appId, step }) => ({ step, key: [RANK[step.action], appId, ...subKey(step, serviceIds)] }));
  keyed.sort((x, y) => {
    for (let i = 0; i < x.key.length; i++) {
      const c = compare(x.key[i] ?? 0, y.key[i] ?? 0);
      if (c !== 0) return c;
    }
    return 0;
  });
  return keyed.map((k) => k.step);
}

/** One download per image per round, even if several services share it. */
function dedupeFetches(steps: Step[]): Step[] {
  const seen = new Set<string>();
  return steps.filter((s) => {
    if (s.action !== 'fetch') return true;
    if (seen.has(s.image)) return false;
    seen.add(s.image);
    return true;
  });
}

/**
 * The steps of the next round, to be executed in parallel; the agent then snapshots and plans
 * again until this returns []. Pure and synchronous: the inputs are not mutated.
 *
 * Rules (balena supervisor, simplified): create missing volumes/networks before any container of
 * their app; fetch missing images; replace outdated containers per the service's update strategy;
 * start/stop up-to-date containers per `running`, honouring depends_on; remove what the target
 * no longer has (an app's networks and volumes only after its containers, and never the volumes
 * of an app that is still in the target); locked apps get a noop instead of kill/stop/remove
 * unless `options.force`.
 *
 * Output order: volumes/networks, fetch, noop, kill/stop, remove, create, start; within a kind by
 * appId then serviceId.
 */
export function plan(current: CurrentState, target: TargetState, options: PlanOptions = {}): Step[] {
  const targetIds = new Set(target.apps.map((a) => a.appId));
  const steps: AppStep[] = [];
  const add = (appId: number, appStepList: Step[]): void => {
    for (const step of applyLock(appId, appStepList, current, options)) steps.push({ appId, step });
  };
  for (const app of target.apps) add(app.appId, appSteps(app, current, options.now));
  const goneIds = new Set([...current.containers, ...current.volumes, ...current.networks].map((x) => x.appId).filter((id) => !targetIds.has(id)));
  for (const appId of goneIds) add(appId, removedAppSteps(appId, current));
  return dedupeFetches(sortSteps(steps, target));
}
