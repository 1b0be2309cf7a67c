/**
 * When the agent gives up on a new release whose steps keep failing (a container that cannot be
 * created or started), and how it says why. Pure, so the rule is tested without an engine; the
 * loop in agent.ts keeps the count and does the rollback.
 */
import type { StepOf } from './engine-state.js';
import type { Step, StepAction, TargetState } from './model.js';

/**
 * Consecutive failed rounds of steps that roll an unconfirmed release back. With the loop's backoff
 * (0.5 s, then 1 s) that is about 2 s after the first failure: a transient engine error gets two
 * more tries, and `skiff push` hears well within its wait.
 */
export const ROLLBACK_AFTER_STEP_FAILURES = 3;

/** What the loop knows when a round of steps has just failed while the engine answers. */
export interface StepFailureContext {
  /** Steps of the target ran since the last confirmed release. */
  unconfirmed: boolean;
  /** The target's release is not the one last confirmed up (a confirmed release has no older one to go back to). */
  newRelease: boolean;
  /** The previous target, if one is kept: undefined once rolled back (roll back once, never back and forth). */
  previous: TargetState | undefined;
  /** Failed rounds of this target in a row, this one included. */
  consecutive: number;
}

/**
 * Whether a failed step rolls the release back now. A previous target that runs no service (the
 * first release on a device) is nothing to go back to: the loop keeps retrying and reports it.
 *
 * @example
 * rollsBackAfterStepFailure({ unconfirmed: true, newRelease: true, previous: releaseA, consecutive: 3 }) // true
 */
export function rollsBackAfterStepFailure(c: StepFailureContext): boolean {
  const previousRuns = c.previous?.apps.some((a) => a.services.length > 0) ?? false;
  return c.unconfirmed && c.newRelease && previousRuns && c.consecutive >= ROLLBACK_AFTER_STEP_FAILURES;
}

/** What a step of each kind failed to do, in the words `skiff push` shows. */
const FAILED_TO = {
  fetch: (s) => `service '${s.serviceName}' could not get image '${s.image}'`,
  createVolume: (s) => `volume '${s.name}' could not be created`,
  createNetwork: (s) => `network '${s.name}' could not be created`,
  removeVolume: (s) => `volume '${s.name}' could not be removed`,
  removeNetwork: (s) => `network '${s.name}' could not be removed`,
  stop: (s) => `service '${s.container.serviceName}' could not be stopped`,
  kill: (s) => `service '${s.container.serviceName}' could not be stopped`,
  remove: (s) => `the old container of service '${s.container.serviceName}' could not be removed`,
  create: (s) => `service '${s.service.serviceName}' could not be created`,
  start: (s) => `service '${s.container.serviceName}' could not start`,
  noop: (s) => s.reason,
} satisfies { [K in StepAction]: (step: StepOf<K>) => string };

/**
 * A failed step's message: what it was doing, then the engine's own words.
 *
 * @example
 * stepFailureMessage(startStep, new Error('… bind: address already in use'))
 * // "service 'app' could not start: … bind: address already in use"
 */
export function stepFailureMessage(step: Step, err: unknown): string {
  // The table's type is the check; TypeScript cannot correlate the entry with the step's own kind.
  const what = (FAILED_TO[step.action] as (s: Step) => string)(step);
  return `${what}: ${err instanceof Error ? err.message : String(err)}`;
}
