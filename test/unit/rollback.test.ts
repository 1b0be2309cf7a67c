/**
 * The rule that rolls back a release whose steps keep failing, and the reason it gives: no engine.
 */
import assert from 'node:assert/strict';
import type { CurrentContainer, Step } from '../../src/lib/agent/model.js';
import { ROLLBACK_AFTER_STEP_FAILURES, rollsBackAfterStepFailure, stepFailureMessage, type StepFailureContext } from '../../src/lib/agent/rollback.js';
import { parseLocalTargetState } from '../../src/lib/agent/target-state.js';

const releaseA = parseLocalTargetState({
  local: { name: 'd', config: {}, apps: { 1: { name: 'app', commit: 'A', releaseId: 'A', services: { 1: { serviceName: 'app', image: 'app:A', imageId: 1 } } } } },
}, 'd');
/** What a new device stores as the previous target before its first release. */
const nothing = parseLocalTargetState({ local: { name: 'd', config: {}, apps: {} } }, 'd');

const failing: StepFailureContext = { unconfirmed: true, newRelease: true, previous: releaseA, consecutive: ROLLBACK_AFTER_STEP_FAILURES };

describe('agent: rolling back a release whose steps keep failing', () => {
  it('rolls back an unconfirmed new release after a few failures in a row, with a release to go back to', () => {
    assert.equal(rollsBackAfterStepFailure(failing), true);
    assert.equal(rollsBackAfterStepFailure({ ...failing, consecutive: ROLLBACK_AFTER_STEP_FAILURES + 5 }), true);
  });

  it('a transient failure is retried, not rolled back at once', () => {
    assert.ok(ROLLBACK_AFTER_STEP_FAILURES > 1);
    for (let n = 1; n < ROLLBACK_AFTER_STEP_FAILURES; n++) assert.equal(rollsBackAfterStepFailure({ ...failing, consecutive: n }), false, `${n} failures`);
  });

  it('the first release on a device has nothing to go back to: retried', () => {
    assert.equal(rollsBackAfterStepFailure({ ...failing, previous: nothing }), false);
    const emptyApp = parseLocalTargetState({ local: { name: 'd', config: {}, apps: { 1: { name: 'app', commit: 'Z', releaseId: 'Z', services: {} } } } }, 'd');
    assert.equal(rollsBackAfterStepFailure({ ...failing, previous: emptyApp }), false);
  });

  it('once rolled back (no previous target kept), the previous release is retried, never rolled back and forth', () => {
    assert.equal(rollsBackAfterStepFailure({ ...failing, previous: undefined }), false);
  });

  it('a confirmed release, or one whose steps have not run, is not rolled back', () => {
    assert.equal(rollsBackAfterStepFailure({ ...failing, newRelease: false }), false);
    assert.equal(rollsBackAfterStepFailure({ ...failing, unconfirmed: false }), false);
  });

  it('the reason names the service and what failed, then the engine\'s words', () => {
    const container: CurrentContainer = {
      containerId: 'c1', name: 'app_1', appId: 1, serviceId: 1, serviceName: 'app', commit: 'B', releaseId: 'B',
      imageId: 'sha256:b', configHash: 'h', state: 'created', createdAt: '2026-11-30T00:00:00Z',
    };
    const app = releaseA.apps[0];
    const service = app?.services[0];
    assert.ok(app && service);
    const engine = new Error('driver failed programming external connectivity on endpoint app_1: listen tcp4 127.0.0.1:4600: bind: address already in use');
    const cases: Array<[Step, string]> = [
      [{ action: 'start', container }, `service 'app' could not start: ${engine.message}`],
      [{ action: 'create', app, service }, `service 'app' could not be created: ${engine.message}`],
      [{ action: 'kill', container }, `service 'app' could not be stopped: ${engine.message}`],
      [{ action: 'remove', container }, `the old container of service 'app' could not be removed: ${engine.message}`],
      [{ action: 'fetch', appId: 1, serviceName: 'app', image: 'app:B' }, `service 'app' could not get image 'app:B': ${engine.message}`],
      [{ action: 'createNetwork', appId: 1, name: 'default', config: {} }, `network 'default' could not be created: ${engine.message}`],
    ];
    for (const [step, expected] of cases) assert.equal(stepFailureMessage(step, engine), expected, step.action);
    assert.equal(stepFailureMessage({ action: 'start', container }, 'not an Error'), "service 'app' could not start: not an Error");
  });
});
