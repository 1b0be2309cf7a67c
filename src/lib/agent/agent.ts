/**
 * The device agent: holds the target, runs the reconciliation loop (snapshot → plan → execute,
 * until the plan is empty), reports status, and keeps the previous release to roll back to when a
 * new one does not come up.
 */
import type { EngineContext } from './engine-state.js';
import { execute, removeAppVolumes, snapshot, stopContainer, targetFromContainers } from './engine-state.js';
import { LogBuffer } from './logs.js';
import type { CurrentState, Step, TargetApp, TargetState } from './model.js';
import { plan, serviceConfigHash } from './plan.js';
import { rollsBackAfterStepFailure, stepFailureMessage } from './rollback.js';
import type { AgentStore } from './store.js';
import { InvalidTargetError, parseLocalTargetState, targetImages, type LocalTargetStateJson } from './target-state.js';

export type AgentStatus = 'Idle' | 'Applying' | 'Failed';

/**
 * Why the agent is Failed, as a kind decided where the failure happened (and by asking the engine
 * whether it answers), so the device API never guesses from an error message.
 */
export type FailureKind =
  /** The engine does not answer: connection refused, socket gone, or no answer in time. */
  | 'engine-unreachable'
  /** The engine answers, but reading what it runs failed. */
  | 'engine-error'
  /** The running containers' labels did not give a target to adopt; retried, nothing is changed meanwhile. */
  | 'adoption-failed'
  /** A step of the plan failed (an image that cannot be pulled, a port in use, …); retried with backoff. */
  | 'step-failed'
  /** The new release did not stay up and was rolled back (or had nothing to roll back to). */
  | 'release-failed';

/** A failure found while adopting containers, where retrying only helps once something changes. */
class AdoptionError extends Error {}

/** A step the engine refused, its message naming what the step was for (the engine's alone names no service). */
class StepFailedError extends Error {
  constructor(step: Step, cause: unknown) {
    super(stepFailureMessage(step, cause), { cause });
  }
}

export interface AgentOptions {
  /** How long a new release must stay up (running, not unhealthy) before it counts as applied. */
  rollbackGraceMs?: number;
  /** Cap for the backoff after a failed step. */
  maxBackoffMs?: number;
}

const EMPTY_TARGET = (name: string): unknown => ({ local: { name, config: {}, apps: {} }, dependent: { apps: {}, devices: {} } });

export class Agent {
  readonly logs = new LogBuffer();
  status: AgentStatus = 'Idle';
  lastError?: string;
  /** What kind of failure `lastError` describes, while the status is Failed. */
  failure?: FailureKind;
  /** The release's commit as last applied (and confirmed up). */
  appliedCommit?: string;
  /** The last release that did not come up and was rolled back. */
  failedRelease?: { commit: string; reason: string };
  private targetJson: unknown;
  private target: TargetState;
  private running?: Promise<void>;
  private again = false;
  private readonly abort = new AbortController();
  private force = false;
  private failures = 0;
  /** Failed rounds of steps of the current target in a row, while the engine answered: what rolls it back. */
  private stepFailures = 0;
  private lastCurrent?: CurrentState;
  private readonly stopped = new Set<string>();
  private endBackoff?: () => void;
  /** Told when the status or the applied release changes (the cloud reporter, so "applied" is said at once). */
  private readonly listeners = new Set<() => void>();
  /** A release was confirmed: its predecessors' images are removed once the status says so. */
  private prunePending = false;
  /** Bumped on every new target, so a confirmation in progress knows it is stale. */
  private targetVersion = 0;
  /** Steps ran since the last confirmed release: watch it before calling it applied. */
  private unconfirmed = false;

  /** No target was stored (new device, or a lost database): adopt what runs before changing anything. */
  private adopting: boolean;
  /** The database had no target but target.json did (a lost or corrupt database): said once at start. */
  private recoveredFromFile: boolean;

  /** Why the stored target could not be read (e.g. a key an older agent accepted): what runs is kept until a new target comes. */
  private storedTargetProblem?: string;

  constructor(readonly ctx: EngineContext, private readonly store: AgentStore, private readonly options: AgentOptions = {}) {
    const stored = store.getTarget();
    this.recoveredFromFile = stored?.from === 'file';
    let parsed: TargetState | undefined;
    try {
      parsed = stored ? normalise(parseLocalTargetState(stored.json, ctx.deviceName)) : undefined;
    } catch (err) {
      if (!(err instanceof InvalidTargetError)) throw err;
      // Starting must not fail, and planning from an empty target would remove what runs: hold.
      this.storedTargetProblem = err.message;
      this.recoveredFromFile = false;
    }
    this.adopting = !parsed;
    this.targetJson = parsed ? stored?.json : EMPTY_TARGET(ctx.deviceName);
    this.target = parsed ?? normalise(parseLocalTargetState(this.targetJson, ctx.deviceName));
    this.appliedCommit = store.getValue('appliedCommit');
  }

  /** The target as posted; only a target that parsed is ever kept, so it has the wire shape. */
  get targetState(): LocalTargetStateJson {
    return this.targetJson as LocalTargetStateJson;
  }

  get currentState(): CurrentState | undefined {
    return this.lastCurrent;
  }

  /** A fresh look at the engine (the loop's last snapshot can be seconds old). */
  async freshState(): Promise<CurrentState> {
    this.lastCurrent = await snapshot(this.ctx, 10_000);
    return this.lastCurrent;
  }

  /** Validates and stores a new target, then applies it. Throws InvalidTargetError (nothing changes). */
  async setTarget(json: unknown, options: { force?: boolean } = {}): Promise<void> {
    const parsed = normalise(parseLocalTargetState(json, this.ctx.deviceName));
    const current = await snapshot(this.ctx);
    const missing = targetImages(parsed).filter((img) => !current.images[img]);
    if (missing.length > 0) throw new InvalidTargetError(`image${missing.length > 1 ? 's' : ''} ${missing.map((m) => `'${m}'`).join(', ')} not on the device's engine; build or pull ${missing.length > 1 ? 'them' : 'it'} first`);
    this.store.setValue('previousTarget', JSON.stringify(this.targetJson));
    this.store.setTarget(json);
    this.targetJson = json;
    this.target = parsed;
    this.force = Boolean(options.force);
    this.adopting = false;
    this.storedTargetProblem = undefined;
    this.targetVersion++;
    this.failedRelease = undefined;
    this.failures = 0;
    this.stepFailures = 0;
    this.stopped.clear();
    this.wake();
  }

  /** The target's release, as the device reports it (apps' commits, comma-separated). */
  private get targetCommit(): string {
    return this.target.apps.map((a) => a.commit).join(',');
  }

  /**
   * Starts (or re-runs) the loop; one runner at a time. `retryNow` cuts a failure's backoff short:
   * for a new target, a user's action, or the engine coming back, not for every engine event (an
   * engine going down sends a burst of them).
   */
  wake(retryNow = true): void {
    if (this.running) {
      this.again = true;
      if (retryNow) this.endBackoff?.();
      return;
    }
    this.running = this.loop().finally(() => {
      this.running = undefined;
      if (this.again && !this.abort.signal.aborted) {
        this.again = false;
        this.wake();
      }
    });
  }

  /**
   * Calls `listener` (synchronously, without arguments) after the status or the applied release
   * changed; returns the unsubscribe function. A listener that throws is ignored.
   */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const l of this.listeners) {
      try {
        l();
      } catch {
        // A listener's bug must not stop the loop.
      }
    }
  }

  /** Resolves when the loop has nothing left to do (for tests and `push`). */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  stop(): void {
    this.abort.abort();
    this.logs.close();
  }

  private async loop(): Promise<void> {
    const signal = this.abort.signal;
    if (this.recoveredFromFile) {
      this.recoveredFromFile = false;
      this.store.setTarget(this.targetJson);
      this.logs.system('Recovered the target state from target.json (the database had none)');
    }
    while (!signal.aborted) {
      this.again = false;
      let current: CurrentState;
      let steps: Step[];
      try {
        // Until what runs is adopted, the target is empty: planning from it would remove everything.
        if (this.adopting) await this.adopt();
        current = await snapshot(this.ctx);
        this.lastCurrent = current;
        this.followLogs(current); // never let a slow log attach hold up the loop
        // A new release whose service keeps crashing never settles: roll back instead of retrying forever.
        const broken = this.unconfirmed ? this.brokenServices(current) : [];
        if (broken.length > 0) {
          await this.rollback(broken.join(', '));
          continue;
        }
        steps = plan(current, this.withStopped(this.target), { force: this.force, now: Date.now() });
      } catch (err) {
        await this.failed(err, err instanceof AdoptionError ? 'adoption-failed' : await this.engineFailure());
        continue;
      }
      const work = steps.filter((s) => s.action !== 'noop');
      if (work.length === 0) {
        const waiting = steps.find((s) => s.action === 'noop');
        if (waiting?.action === 'noop') {
          this.status = 'Applying';
          this.failure = undefined;
          this.lastError = waiting.reason;
          await sleep(1000, signal);
          continue;
        }
        try {
          if (this.unconfirmed) {
            this.status = 'Applying'; // watching the new release (again, after a failure) is applying it
            this.failure = undefined;
            await this.confirmRelease();
          }
          // A new target that changed no container (same images and settings, a new commit) is
          // applied as it stands: nothing new has to prove it stays up.
          else if (this.targetCommit !== (this.appliedCommit ?? '')) await this.confirmRelease(0);
        } catch (err) {
          // The engine went away while the release was watched: a rejection here would end the process.
          await this.failed(err, await this.engineFailure());
          continue;
        }
        // Nothing left to do: whatever failed before (an engine restart, a rolled-back release,
        // reported in failedRelease) is behind us.
        this.status = 'Idle';
        this.lastError = undefined;
        this.failure = undefined;
        this.changed();
        // After the status says applied: removing old images takes the engine a while, and
        // nothing waits on it (the loop still holds, so no new target runs meanwhile).
        if (this.prunePending) {
          this.prunePending = false;
          await this.pruneImages().catch((err: Error) => this.logs.system(`Could not remove old release images: ${err.message}`, true));
        }
        return;
      }
      this.unconfirmed = true;
      this.status = 'Applying';
      this.failure = undefined;
      this.changed();
      const version = this.targetVersion;
      try {
        await Promise.all(work.map((s) => execute(this.ctx, s, current, (m) => this.logs.system(m)).catch((err: unknown) => {
          throw new StepFailedError(s, err);
        })));
        this.failures = 0;
        this.stepFailures = 0;
      } catch (err) {
        const answers = await this.engineAnswers();
        // Only the engine refusing this target's steps counts: an engine that is away, or a target
        // replaced meanwhile, says nothing about whether the release can run.
        if (answers && this.targetVersion === version && this.stepFailureRollsBack()) {
          await this.rollback((err as Error).message);
          continue;
        }
        await this.failed(err, answers ? 'step-failed' : 'engine-unreachable');
      }
    }
  }

  /**
   * Takes the target from the containers this agent runs (no database, no target.json). Throws
   * while the engine cannot list them, or their labels do not parse: the loop retries with
   * backoff, and never plans from the empty target meanwhile.
   */
  private async adopt(): Promise<void> {
    if (this.storedTargetProblem) {
      throw new AdoptionError(`the stored target state is no longer valid (${this.storedTargetProblem}); the containers are kept as they run until a new target is posted`);
    }
    const version = this.targetVersion;
    const recovered = await withDeadline(targetFromContainers(this.ctx), 20_000, 'the engine did not answer within 20 s');
    if (this.targetVersion !== version) return; // a target was posted meanwhile: it wins
    if (recovered) {
      let target: TargetState;
      try {
        target = normalise(parseLocalTargetState(recovered, this.ctx.deviceName));
      } catch (err) {
        throw new AdoptionError(`could not recover the target state from the running containers: ${(err as Error).message}`);
      }
      this.target = target;
      this.targetJson = recovered;
      this.store.setTarget(recovered);
      this.logs.system('Recovered the target state from the running containers');
    }
    this.adopting = false;
  }

  /** Whether the engine answers a ping within 5 s: what tells an unreachable engine from a failing call. */
  private async engineAnswers(): Promise<boolean> {
    return this.ctx.docker.ping({ signal: AbortSignal.timeout(5000) }).then(() => true, () => false);
  }

  /** The kind of a failure to read the engine's state. */
  private async engineFailure(): Promise<FailureKind> {
    return (await this.engineAnswers()) ? 'engine-error' : 'engine-unreachable';
  }

  /** Restarts every container of an app (`POST /v1/restart`). */
  async restartApp(appId: number): Promise<void> {
    const current = await snapshot(this.ctx);
    await Promise.all(current.containers.filter((c) => c.appId === appId).map((c) => this.ctx.docker.getContainer(c.containerId).restart()));
    this.logs.system(`Restarted app ${appId}`);
  }

  /** Removes an app's containers and volumes, then installs it again with empty volumes (`POST /v1/purge`). */
  async purgeApp(appId: number): Promise<void> {
    const current = await snapshot(this.ctx);
    this.logs.system(`Purging data for app ${appId}`);
    await Promise.all(current.containers.filter((c) => c.appId === appId).map((c) => this.ctx.docker.getContainer(c.containerId).remove({ force: true })));
    await removeAppVolumes(this.ctx, current, appId);
    this.logs.system(`Purged data for app ${appId}`);
    this.wake();
  }

  /**
   * restart-service / stop-service / start-service. A stopped service stays stopped until it is
   * started again or a new target arrives, as with balena's supervisor.
   */
  async serviceAction(appId: number, serviceName: string, action: 'restart-service' | 'stop-service' | 'start-service'): Promise<boolean> {
    const app = this.target.apps.find((a) => a.appId === appId);
    if (!app?.services.some((s) => s.serviceName === serviceName)) return false;
    const key = `${appId}/${serviceName}`;
    const find = async () => (await snapshot(this.ctx)).containers.find((c) => c.appId === appId && c.serviceName === serviceName);
    const container = await find();
    if (action === 'stop-service') {
      // A stop the engine refused is the caller's failure to see (the service still runs), not a
      // stopped service: it is only marked stopped once the container is. A start the loop planned
      // before the mark can still land: stop again until the container stays down (the loop's next
      // round would stop it too, but the caller is told it is stopped now).
      const wasStopped = this.stopped.has(key);
      try {
        if (container) await stopContainer(this.ctx, container);
        this.stopped.add(key);
        for (let round = 0, c = await find(); round < 3 && c && (c.state === 'running' || c.state === 'restarting'); round++, c = await find()) {
          await stopContainer(this.ctx, c);
        }
      } catch (err) {
        if (!wasStopped) this.stopped.delete(key);
        this.logs.system(`Could not stop service '${serviceName}': ${(err as Error).message}`, true);
        throw new Error(`could not stop service '${serviceName}': ${(err as Error).message}`);
      }
      this.logs.system(`Stopped service '${serviceName}'`);
    } else if (action === 'start-service') {
      this.stopped.delete(key);
      this.wake();
    } else {
      this.stopped.delete(key);
      if (container) await this.ctx.docker.getContainer(container.containerId).restart();
      this.logs.system(`Restarted service '${serviceName}'`);
    }
    return true;
  }

  private withStopped(target: TargetState): TargetState {
    if (this.stopped.size === 0) return target;
    return {
      ...target,
      apps: target.apps.map((a) => ({ ...a, services: a.services.map((s) => (this.stopped.has(`${a.appId}/${s.serviceName}`) ? { ...s, running: false } : s)) })),
    };
  }

  private async failed(err: unknown, kind: FailureKind): Promise<void> {
    this.failures++;
    this.status = 'Failed';
    this.failure = kind;
    this.lastError = (err as Error).message;
    this.logs.system(`Failed to apply the target state: ${this.lastError}`, true);
    this.changed();
    const delay = Math.min(this.options.maxBackoffMs ?? 30_000, 250 * 2 ** Math.min(this.failures, 10));
    await new Promise<void>((resolve) => {
      this.endBackoff = resolve;
      void sleep(delay, this.abort.signal).then(resolve);
    });
    this.endBackoff = undefined;
  }

  /**
   * After the containers are in place: watch them for the grace period. A service that exits or
   * turns unhealthy means the release failed: bring the previous one back.
   */
  private async confirmRelease(grace = this.options.rollbackGraceMs ?? 10_000): Promise<void> {
    const commit = this.targetCommit;
    const deadline = Date.now() + grace;
    const version = this.targetVersion;
    while (Date.now() < deadline && !this.abort.signal.aborted) {
      const current = await snapshot(this.ctx);
      const broken = this.brokenServices(current);
      if (broken.length > 0) {
        await this.rollback(broken.join(', '));
        return;
      }
      if (this.targetVersion !== version) return; // a newer target arrived
      // Every half second, but not past the deadline: the grace is watched whole, not overshot.
      await sleep(Math.max(0, Math.min(500, deadline - Date.now())), this.abort.signal);
    }
    if (this.abort.signal.aborted) return;
    this.unconfirmed = false;
    this.appliedCommit = commit;
    this.store.setValue('appliedCommit', commit);
    this.store.recordApplied(commit, 'applied', '');
    this.prunePending = true;
  }

  /**
   * Removes the images of this agent's older releases (only images it ran itself, and only those
   * built by a push: `io.skiff.release` label), keeping the running release's and the previous
   * one's, so a device's disk does not fill up push after push. Another agent's images or a
   * developer's own builds on the same engine are never touched.
   */
  private async pruneImages(): Promise<void> {
    const keep = new Set<string>();
    const previous = this.store.getValue('previousTarget');
    for (const json of [this.targetJson, previous ? (JSON.parse(previous) as unknown) : undefined]) {
      if (!json) continue;
      for (const img of targetImages(parseLocalTargetState(json, this.ctx.deviceName))) keep.add(img.includes(':') ? img : `${img}:latest`);
    }
    const known = new Set<string>(JSON.parse(this.store.getValue('knownImages') ?? '[]') as string[]);
    for (const img of keep) known.add(img);
    const images = await this.ctx.docker.listImages({ filters: { label: ['io.skiff.release'] } });
    for (const img of images) {
      const tags = img.RepoTags ?? [];
      if (tags.length === 0 || tags.some((t) => keep.has(t)) || !tags.every((t) => known.has(t))) continue;
      await this.ctx.docker.getImage(img.Id).remove({ force: false }).catch(() => {}); // still in use: leave it
      for (const t of tags) known.delete(t);
    }
    this.store.setValue('knownImages', JSON.stringify([...known]));
  }

  private brokenServices(current: CurrentState): string[] {
    const out: string[] = [];
    for (const app of this.target.apps) {
      for (const s of app.services) {
        if (!s.running) continue;
        // Only the new release's container counts: the old one it replaced exits non-zero when killed.
        const image = current.images[s.config.image];
        if (!image) continue;
        const hash = serviceConfigHash(app, s, image);
        const c = current.containers.find((x) => x.appId === app.appId && x.serviceName === s.serviceName && x.configHash === hash);
        if (!c) continue;
        const exitedBadly = (c.state === 'exited' || c.state === 'dead') && (c.exitCode ?? 0) !== 0;
        const restarting = c.state === 'restarting';
        if (c.health === 'unhealthy') out.push(`service '${s.serviceName}' turned unhealthy (its healthcheck failed)`);
        else if (exitedBadly || restarting) out.push(`service '${s.serviceName}' did not stay up`);
      }
    }
    return out;
  }

  /** Counts a failed round of steps; true when the release should give way to the previous one. */
  private stepFailureRollsBack(): boolean {
    this.stepFailures++;
    let previous: TargetState | undefined;
    try {
      const json = this.store.getValue('previousTarget');
      previous = json ? normalise(parseLocalTargetState(JSON.parse(json), this.ctx.deviceName)) : undefined;
    } catch {
      previous = undefined; // a previous target this agent can no longer read is nothing to go back to
    }
    return rollsBackAfterStepFailure({
      unconfirmed: this.unconfirmed,
      newRelease: this.targetCommit !== (this.appliedCommit ?? ''),
      previous,
      consecutive: this.stepFailures,
    });
  }

  private async rollback(reason: string): Promise<void> {
    const previous = this.store.getValue('previousTarget');
    const commit = this.targetCommit;
    this.store.recordApplied(commit, 'rolled-back', reason);
    this.failedRelease = { commit, reason };
    this.logs.system(`Release ${commit || '(none)'} failed: ${reason}; rolling back to the previous release`, true);
    if (!previous) {
      this.status = 'Failed';
      this.failure = 'release-failed';
      this.lastError = `${reason}; no previous release to roll back to`;
      return;
    }
    const json = JSON.parse(previous) as unknown;
    this.store.setTarget(json);
    this.store.setValue('previousTarget', ''); // roll back once, never in a loop
    this.targetJson = json;
    this.target = normalise(parseLocalTargetState(json, this.ctx.deviceName));
    this.targetVersion++;
    this.failures = 0;
    this.stepFailures = 0;
    this.status = 'Failed';
    this.failure = 'release-failed';
    this.lastError = `release ${commit} rolled back: ${reason}`;
    this.again = true;
  }

  private followLogs(current: CurrentState): void {
    const live = new Set<string>();
    for (const c of current.containers) {
      if (c.state !== 'running') continue;
      live.add(c.containerId);
      void this.logs.follow(this.ctx.docker, c).catch(() => {});
    }
    this.logs.prune(live);
  }
}

/** Every app gets a `default` network that services without network settings join. */
function normalise(target: TargetState): TargetState {
  return {
    ...target,
    apps: target.apps.map((app): TargetApp => {
      const usesDefault = app.services.some((s) => !s.config.networkMode && s.config.networks.length === 0);
      return {
        ...app,
        networks: usesDefault && !app.networks.default ? { ...app.networks, default: {} } : app.networks,
        services: app.services.map((s) => (!s.config.networkMode && s.config.networks.length === 0 ? { ...s, config: { ...s.config, networks: ['default'] } } : s)),
      };
    }),
  };
}

/** `work`, or a rejection with `message` once `ms` have passed (an engine that accepts connections but does not answer yet). */
function withDeadline<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
    timer.unref();
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const onAbort = () => { clearTimeout(t); resolve(); };
    const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(); }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
