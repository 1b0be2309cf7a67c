/**
 * The agent's executors: one per step kind, checked by the compiler; and building a container's
 * spec is pure (the create executor makes the lock folder, not containerSpec).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createEngineClient } from '../../src/lib/docker/engine-lite.js';
import { containerSpec, EXECUTORS, serviceLockDir, type EngineContext, type Executor } from '../../src/lib/agent/engine-state.js';
import type { StepAction } from '../../src/lib/agent/model.js';
import { parseLocalTargetState } from '../../src/lib/agent/target-state.js';
import { scratchDir } from '../support/tmp.js';

describe('agent executors', () => {
  it('the table has an executor for every step kind, and the compiler refuses one without', () => {
    const { noop: _noop, ...withoutNoop } = EXECUTORS;
    // @ts-expect-error every kind of the Step union needs an executor
    void (withoutNoop satisfies { [K in StepAction]: Executor<K> });
    const kinds: { [K in StepAction]: true } = {
      fetch: true, createVolume: true, createNetwork: true, removeVolume: true, removeNetwork: true,
      stop: true, kill: true, remove: true, create: true, start: true, noop: true,
    };
    assert.deepEqual(Object.keys(EXECUTORS).sort(), Object.keys(kinds).sort());
  });

  it('containerSpec does no I/O: a lock folder that does not exist is bound, not made', () => {
    const locksDir = path.join(scratchDir('skiff-locks-'), 'not-yet');
    const ctx: EngineContext = {
      // A client does nothing until it is called; containerSpec never calls it.
      docker: createEngineClient({ socketPath: '/var/run/docker.sock' }),
      uuid: '0123456789abcdef0123456789abcdef',
      deviceType: 'intel-nuc',
      arch: 'amd64',
      deviceName: 'spec-test',
      apiAddress: 'http://172.17.0.1:48484',
      apiKey: 'key',
      locksDir,
      engineSocket: '/var/run/docker.sock',
      hostPaths: new Set(),
    };
    const target = parseLocalTargetState({
      local: { name: 'spec-test', config: {}, apps: { 1: { name: 'app', commit: 'c1', releaseId: '1', services: { 1: { serviceName: 'web', image: 'web:1', imageId: 1 } } } } },
    }, 'spec-test');
    const app = target.apps[0];
    const service = app?.services[0];
    assert.ok(app && service);
    const spec = containerSpec(ctx, app, service, 'sha256:web');
    const lockDir = serviceLockDir(ctx, app, service);
    assert.ok(spec.HostConfig?.Binds?.includes(`${lockDir}:/tmp/balena`), 'the lock folder is bound');
    assert.equal(existsSync(locksDir), false, 'containerSpec made the lock folder');
  });
});
