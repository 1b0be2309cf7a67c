/**
 * Reports as tables: what the device says in each phase of an update, which fields change from one
 * report to the next, and when a report is due (10 s for state unless important, 300 s for metrics).
 */
import assert from 'node:assert/strict';
import type { DeviceReportV3 } from '../../src/lib/api/device-state.js';
import type { CurrentContainer } from '../../src/lib/agent/model.js';
import { buildReport, dueReport, isImportant, metricChanges, reportChanges, type ReportInputs } from '../../src/lib/agent/cloud/report.js';
import { PullPercent } from '../../src/lib/agent/cloud/images.js';

const FLEET = 'f1ee';
const container = (serviceName: string, commit: string, state: CurrentContainer['state'] = 'running'): CurrentContainer => ({
  containerId: `${serviceName}-${commit}`, name: serviceName, appId: 7, serviceId: 1, serviceName, commit, releaseId: '1', imageId: 'sha256:x', configHash: 'h', state, createdAt: '2026-11-30T00:00:00Z',
});
const base: ReportInputs = {
  status: 'Idle',
  apps: [{ uuid: FLEET, appId: 7, commit: 'B', services: ['web'] }],
  agentTargetCommit: 'A',
  appliedCommit: 'A',
  containers: [container('web', 'A')],
  phase: { kind: 'idle' },
  device: { os_version: 'Debian', supervisor_version: '17.0.0', api_port: 48484, ip_address: '10.0.0.2' },
};
const release = (r: DeviceReportV3) => r.apps?.[FLEET]?.releases?.B;

describe('agent cloud: reports', () => {
  const phases: Array<[string, Partial<ReportInputs>, { update: string | undefined; web: string; progress?: number | null; running: string | null; failed: boolean; error: string | null }]> = [
    ['downloading', { phase: { kind: 'downloading', progress: { [`${FLEET}/web`]: 42 } } }, { update: 'downloading', web: 'Downloading', progress: 42, running: 'A', failed: false, error: null }],
    ['downloaded, not yet handed over', {}, { update: 'downloaded', web: 'Installing', progress: null, running: 'A', failed: false, error: null }],
    ['applying', { agentTargetCommit: 'B', status: 'Applying' }, { update: 'applying changes', web: 'Installing', progress: null, running: 'A', failed: false, error: null }],
    ['applied', { agentTargetCommit: 'B', appliedCommit: 'B', containers: [container('web', 'B')] }, { update: 'done', web: 'Running', progress: null, running: 'B', failed: false, error: null }],
    ['a crashed service', { agentTargetCommit: 'B', status: 'Applying', containers: [container('web', 'B', 'exited')] }, { update: 'applying changes', web: 'Exited', progress: null, running: 'A', failed: false, error: null }],
    ['rolled back', { agentTargetCommit: 'A', status: 'Failed', lastError: 'release B rolled back: web did not stay up', rolledBackFrom: { commit: 'B', reason: 'web did not stay up' } }, { update: 'aborted', web: 'Installing', progress: null, running: 'A', failed: true, error: 'release B rolled back: web did not stay up' }],
    ['rejected', { phase: { kind: 'rejected', reason: 'invalid target state: x' } }, { update: 'rejected', web: 'Installing', progress: null, running: 'A', failed: true, error: 'invalid target state: x' }],
  ];
  for (const [name, over, want] of phases) {
    it(`phase: ${name}`, () => {
      const r = buildReport({ ...base, ...over });
      assert.equal(release(r)?.update_status, want.update);
      assert.equal(release(r)?.services?.web?.status, want.web);
      assert.equal(release(r)?.services?.web?.download_progress, want.progress);
      assert.equal(r.apps?.[FLEET]?.release_uuid, want.running);
      assert.equal(r.update_failed, want.failed);
      assert.equal(r.update_error, want.error);
    });
  }

  it('once applied, a service the release did not change (its container keeps the old commit) is Running, not Installing', () => {
    const r = buildReport({ ...base, apps: [{ uuid: FLEET, appId: 7, commit: 'B', services: ['web', 'db'] }], agentTargetCommit: 'B', appliedCommit: 'B', containers: [container('web', 'B'), container('db', 'A')] });
    assert.equal(release(r)?.services?.db?.status, 'Running');
    assert.equal(release(r)?.update_status, 'done');
    const applying = buildReport({ ...base, apps: [{ uuid: FLEET, appId: 7, commit: 'B', services: ['web', 'db'] }], agentTargetCommit: 'B', status: 'Applying', containers: [container('web', 'A'), container('db', 'A')] });
    assert.equal(release(applying)?.services?.db?.status, 'Installing');
  });

  it('rolled_back_from names the release and reason, and is null otherwise', () => {
    assert.deepEqual(buildReport({ ...base, rolledBackFrom: { commit: 'B', reason: 'r' } }).rolled_back_from, { commit: 'B', reason: 'r' });
    assert.equal(buildReport(base).rolled_back_from, null);
  });

  it('a fleet without a release reports no release, and nothing running before the first', () => {
    const r = buildReport({ ...base, appliedCommit: undefined, apps: [{ uuid: FLEET, appId: 7, services: [] }] });
    assert.deepEqual(r.apps, { [FLEET]: { release_uuid: null } });
  });

  it('changes: only top-level fields that differ; apps whole when any part changed', () => {
    const a = buildReport(base);
    assert.deepEqual(reportChanges(a, a), {});
    assert.deepEqual(Object.keys(reportChanges({}, a)).sort(), Object.keys(a).sort());
    const b = buildReport({ ...base, phase: { kind: 'downloading', progress: { [`${FLEET}/web`]: 10 } } });
    const changes = reportChanges(a, b);
    assert.deepEqual(Object.keys(changes).sort(), ['apps', 'status', 'update_downloaded', 'update_pending']);
    assert.deepEqual(changes.apps, b.apps);
    assert.deepEqual(reportChanges(a, { ...a, ip_address: '10.0.0.3' }), { ip_address: '10.0.0.3' });
  });

  const important: Array<[string, DeviceReportV3, boolean]> = [
    ['nothing', {}, false],
    ['ip only', { ip_address: 'x' }, false],
    ['progress', { apps: { f: { releases: { B: { update_status: 'downloading', services: { web: { status: 'Downloading', download_progress: 5 } } } } } } }, false],
    ['applying', { apps: { f: { releases: { B: { update_status: 'applying changes' } } } } }, false],
    ['done', { apps: { f: { releases: { B: { update_status: 'done' } } } } }, true],
    ['rejected', { apps: { f: { releases: { B: { update_status: 'rejected' } } } } }, true],
    ['aborted', { apps: { f: { releases: { B: { update_status: 'aborted' } } } } }, true],
    ['an error', { update_error: 'x' }, true],
    ['an error cleared', { update_error: null }, true],
    ['a rollback', { rolled_back_from: { commit: 'B', reason: 'r' } }, true],
    ['failed flag', { update_failed: false }, true],
  ];
  for (const [name, changes, want] of important) {
    it(`important: ${name} → ${want}`, () => assert.equal(isImportant(changes), want));
  }

  const T0 = 1_000_000_000;
  const due: Array<[string, DeviceReportV3, Parameters<typeof metricChanges>[1], Parameters<typeof dueReport>[2], string[] | undefined]> = [
    ['nothing changed', {}, {}, { now: T0, lastStateAt: 0, lastMetricsAt: 0, notBefore: 0 }, undefined],
    ['first report', { status: 'Idle' }, {}, { now: T0, lastStateAt: 0, lastMetricsAt: 0, notBefore: 0 }, ['status']],
    ['state within 10 s: held', { ip_address: 'x' }, {}, { now: T0, lastStateAt: T0 - 9_999, lastMetricsAt: 0, notBefore: 0 }, undefined],
    ['state after 10 s', { ip_address: 'x' }, {}, { now: T0, lastStateAt: T0 - 10_000, lastMetricsAt: 0, notBefore: 0 }, ['ip_address']],
    ['important within 10 s: sent', { update_error: 'x' }, {}, { now: T0, lastStateAt: T0 - 1, lastMetricsAt: 0, notBefore: 0 }, ['update_error']],
    ['backing off: held even if important', { update_error: 'x' }, {}, { now: T0, lastStateAt: 0, lastMetricsAt: 0, notBefore: T0 + 1 }, undefined],
    ['metrics within 300 s: held', {}, { cpu_usage: 5 }, { now: T0, lastStateAt: 0, lastMetricsAt: T0 - 299_999, notBefore: 0 }, undefined],
    ['metrics after 300 s', {}, { cpu_usage: 5 }, { now: T0, lastStateAt: 0, lastMetricsAt: T0 - 300_000, notBefore: 0 }, ['cpu_usage']],
    ['state due, metrics not: state only', { status: 'Idle' }, { cpu_usage: 5 }, { now: T0, lastStateAt: 0, lastMetricsAt: T0 - 1, notBefore: 0 }, ['status']],
    ['both due', { status: 'Idle' }, { cpu_usage: 5 }, { now: T0, lastStateAt: 0, lastMetricsAt: 0, notBefore: 0 }, ['cpu_usage', 'status']],
  ];
  for (const [name, state, metrics, timing, want] of due) {
    it(`due: ${name}`, () => {
      const body = dueReport(state, metrics, timing);
      assert.deepEqual(body && Object.keys(body).sort(), want);
    });
  }

  it('metric changes: only metrics that differ', () => {
    assert.deepEqual(metricChanges({ cpu_usage: 5, memory_total: 10 }, { cpu_usage: 6, memory_total: 10 }), { cpu_usage: 6 });
    assert.deepEqual(metricChanges({}, {}), {});
  });

  it('download percent: bytes over sizes, layers already there count whole', () => {
    const p = new PullPercent();
    assert.equal(p.percent, 0);
    p.add({ status: 'Pulling from x', id: 'sha256:abc' });
    p.add({ status: 'Already exists', id: 'aaaaaaaaaaaa' });
    p.add({ status: 'Downloading', id: 'bbbbbbbbbbbb', progressDetail: { current: 0, total: 99 } });
    assert.equal(p.percent, 1);
    p.add({ status: 'Downloading', id: 'bbbbbbbbbbbb', progressDetail: { current: 49, total: 99 } });
    assert.equal(p.percent, 50);
    p.add({ status: 'Download complete', id: 'bbbbbbbbbbbb' });
    assert.equal(p.percent, 100);
    p.add({ status: 'Pull complete', id: 'bbbbbbbbbbbb' });
    assert.deepEqual(p.layerCounts, { total: 2, downloaded: 1 });
  });
});

describe('agent cloud: report bounds', () => {
  it('a long error is clipped to what the server accepts', () => {
    const r = buildReport({ ...base, status: 'Failed', lastError: 'x'.repeat(5000), rolledBackFrom: { commit: 'B', reason: 'y'.repeat(5000) } });
    assert.equal(r.update_error?.length, 2000);
    assert.equal(r.rolled_back_from?.reason.length, 2000);
  });
});
