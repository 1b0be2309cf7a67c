/**
 * The agent's safety rules that need no engine: secret files are the owner's alone, and
 * `/v1/healthy` decides from the failure's kind.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { AgentStatus, FailureKind } from '../../src/lib/agent/agent.js';
import { isHealthy } from '../../src/lib/agent/api.js';
import { loadDeviceConfig, tightenSecretFile, writeAtomically } from '../../src/lib/agent/config.js';
import { scratchDir } from '../support/tmp.js';

const modeOf = (file: string): number => statSync(file).mode & 0o777;

describe('agent: secret files', () => {
  let oldUmask: number;
  // The widest umask a device could run with: 0600 must not depend on it.
  before(() => (oldUmask = process.umask(0)));
  after(() => process.umask(oldUmask));

  it('config.json is created 0600', () => {
    const file = path.join(scratchDir('skiff-config-'), 'config.json');
    const config = loadDeviceConfig(file, { deviceType: () => 'intel-nuc' });
    assert.equal(modeOf(file), 0o600);
    assert.equal((JSON.parse(readFileSync(file, 'utf8')) as { deviceApiKey: string }).deviceApiKey, config.deviceApiKey);
  });

  it('a rewrite is 0600 even over a stale temp file that was world-readable', () => {
    const file = path.join(scratchDir('skiff-config-'), 'config.json');
    writeFileSync(`${file}.tmp-${process.pid}`, 'left by a crash', { mode: 0o644 });
    writeAtomically(file, '{}\n');
    assert.equal(modeOf(file), 0o600);
  });

  it('an existing file with group or other bits is tightened to 0600, and says what it was', () => {
    const file = path.join(scratchDir('skiff-config-'), 'config.json');
    loadDeviceConfig(file, { deviceType: () => 'intel-nuc' });
    chmodSync(file, 0o644);
    assert.deepEqual(tightenSecretFile(file), { done: true, from: 0o644 });
    assert.equal(modeOf(file), 0o600);
    assert.equal(tightenSecretFile(file), undefined, 'a 0600 file is left alone');
    assert.equal(tightenSecretFile(path.join(path.dirname(file), 'missing.json')), undefined);
  });

  it('the default device type is only asked for when config.json has none', () => {
    const file = path.join(scratchDir('skiff-config-'), 'config.json');
    loadDeviceConfig(file, { deviceType: () => 'intel-nuc' });
    const again = loadDeviceConfig(file, { deviceType: () => assert.fail('asked for a device type config.json has') });
    assert.equal(again.deviceType, 'intel-nuc');
  });
});

describe('agent: /v1/healthy decision', () => {
  // Every kind, keyed by the kind (a new kind must be listed), and those a restart could cure.
  const kinds = { 'engine-unreachable': 1, 'engine-error': 1, 'adoption-failed': 1, 'step-failed': 1, 'release-failed': 1 } satisfies { [K in FailureKind]: 1 };
  const curedByRestart = new Set<FailureKind>(['engine-unreachable', 'engine-error']);
  const statuses: AgentStatus[] = ['Idle', 'Applying', 'Failed'];
  for (const kind of Object.keys(kinds) as FailureKind[]) {
    for (const status of statuses) {
      const expected = !(status === 'Failed' && curedByRestart.has(kind));
      it(`${status} with a '${kind}' failure → ${expected ? 'healthy' : 'unhealthy'}`, () => {
        assert.equal(isHealthy(status, kind), expected);
      });
    }
  }
  it('no failure is healthy, whatever the status', () => {
    for (const status of statuses) assert.equal(isHealthy(status, undefined), true);
  });
  it('does not read the message: an engine word in a step failure is still healthy', () => {
    // The old rule matched /engine/ in the last error: "image 'x' is not on the engine …" made the agent unhealthy.
    assert.equal(isHealthy('Failed', 'step-failed'), true);
  });
});
