/**
 * The agent's delta decisions as tables: which image a delta starts from, how long to wait for a
 * delta the server is making, how many applies run at once, and how the report says what came.
 */
import assert from 'node:assert/strict';
import type { LocalTargetStateJson } from '../../src/lib/device-api/wire.js';
import { chooseDeltaSource, deltaRetryMs, MAX_DELTA_WAIT_MS, remoteOfLocal, Slots, updateDownloadOf } from '../../src/lib/agent/cloud/delta.js';
import { PullPercent } from '../../src/lib/agent/cloud/images.js';
import { buildReport, reportChanges, type ReportInputs } from '../../src/lib/agent/cloud/report.js';
import { localImageName, type CloudApp, type CloudImage } from '../../src/lib/agent/cloud/target.js';
import { describeUpdateDownload } from '../../src/ui/update-download.js';

const HOST = 'cloud.example.com:8443';
const FLEET = 'f1ee7';
const hex = (c: string): string => c.repeat(64);
const remote = (service: string, c: string): string => `${HOST}/${FLEET}/${service}@sha256:${hex(c)}`;
const image = (service: string, c: string, services = [`${FLEET}/${service}`]): CloudImage => ({
  remote: remote(service, c), local: localImageName(remote(service, c)), host: HOST, repository: `${FLEET}/${service}`, digest: `sha256:${hex(c)}`, services,
});
const apps: CloudApp[] = [{ uuid: FLEET, appId: 7, commit: 'B', services: ['web', 'db'] }];
const running = (services: Record<string, string>): LocalTargetStateJson => ({
  local: {
    name: 'dev', config: {},
    apps: { 7: { name: 'app', commit: 'A', services: Object.fromEntries(Object.entries(services).map(([name, img], i) => [String(i + 1), { serviceName: name, serviceId: i + 1, imageId: i + 1, image: img, running: true }])), volumes: {}, networks: {} } },
  },
  dependent: { apps: {}, devices: {} },
});

describe('agent delta: the source image', () => {
  it('reverses localImageName on the target image\'s registry host', () => {
    assert.equal(remoteOfLocal(localImageName(remote('web', 'a')), HOST), remote('web', 'a'));
    assert.equal(remoteOfLocal('nginx:latest', HOST), undefined);
    assert.equal(remoteOfLocal('skiff-cloud/x/web:latest', HOST), undefined);
  });

  const old = image('web', 'a').local;
  const cases: Array<[string, CloudImage, LocalTargetStateJson, Record<string, string> | undefined, ReturnType<typeof chooseDeltaSource>]> = [
    ['the service runs an older cloud image the engine has', image('web', 'b'), running({ web: old }), { [old]: 'sha256:1' }, { local: old, remote: remote('web', 'a') }],
    ['engine images not known yet: tried (the apply checks)', image('web', 'b'), running({ web: old }), undefined, { local: old, remote: remote('web', 'a') }],
    ['the engine lost the old image', image('web', 'b'), running({ web: old }), {}, { gone: old }],
    ['same image: nothing to do', image('web', 'a'), running({ web: old }), { [old]: 'sha256:1' }, undefined],
    ['a new service', image('api', 'b'), running({ web: old }), { [old]: 'sha256:1' }, undefined],
    ['the old image is not a cloud image (local mode before)', image('web', 'b'), running({ web: 'local_web' }), { local_web: 'sha256:1' }, undefined],
    ['no release running yet', image('web', 'b'), { local: { name: 'dev', config: {}, apps: {} }, dependent: { apps: {}, devices: {} } }, {}, undefined],
    ['another app\'s service of that name does not count', image('web', 'b', ['other/web']), running({ web: old }), { [old]: 'sha256:1' }, undefined],
    ['an image two services share: the first that has a source', image('web', 'b', [`${FLEET}/db`, `${FLEET}/web`]), running({ web: old, db: 'postgres:16' }), { [old]: 'sha256:1', 'postgres:16': 'sha256:2' }, { local: old, remote: remote('web', 'a') }],
    ['an image without a digest', { ...image('web', 'b'), digest: undefined }, running({ web: old }), { [old]: 'sha256:1' }, undefined],
  ];
  for (const [name, target, current, engine, expected] of cases) {
    it(name, () => assert.deepEqual(chooseDeltaSource(target, apps, current, engine, [HOST]), expected));
  }
  it('an image of another registry: pulled as it is, no delta asked', () => {
    const other = { ...image('web', 'b'), host: 'ghcr.io' };
    assert.equal(chooseDeltaSource(other, apps, running({ web: old }), { [old]: 'sha256:1' }, [HOST]), undefined);
  });
});

describe('agent delta: waiting for the server to make it', () => {
  const cases: Array<[string, number, number, number, number | undefined]> = [
    ['the server\'s Retry-After, no jitter', 5000, 0, 0, 5000],
    ['up to 20 % jitter', 5000, 0, 0.5, 5500],
    ['at least 1 s', 0, 0, 0, 1000],
    ['at most 60 s whatever the server says', 3_600_000, 0, 0, 60_000],
    ['still inside the bound', 30_000, MAX_DELTA_WAIT_MS - 30_000, 0, 30_000],
    ['past the bound: pull instead', 30_000, MAX_DELTA_WAIT_MS - 29_999, 0, undefined],
  ];
  for (const [name, retryAfter, waited, random, expected] of cases) {
    it(name, () => assert.equal(deltaRetryMs(retryAfter, waited, random), expected));
  }
  it('a smaller bound when given', () => assert.equal(deltaRetryMs(5000, 0, 0, 4000), undefined));
});

describe('agent delta: at most 3 applies at once', () => {
  it('runs a fourth only when one ends, in order', async () => {
    const slots = new Slots(3);
    let active = 0;
    let peak = 0;
    const order: number[] = [];
    const releases: Array<() => void> = [];
    const jobs = [0, 1, 2, 3, 4].map((i) => slots.run(async () => {
      active++;
      peak = Math.max(peak, active);
      order.push(i);
      await new Promise<void>((resolve) => releases.push(resolve));
      active--;
      return i;
    }));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [0, 1, 2]);
    while (releases.length > 0) {
      releases.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    assert.deepEqual(await Promise.all(jobs), [0, 1, 2, 3, 4]);
    assert.deepEqual(order, [0, 1, 2, 3, 4]);
    assert.equal(peak, 3);
  });

  it('a failed apply frees its slot', async () => {
    const slots = new Slots(1);
    await assert.rejects(slots.run(() => Promise.reject(new Error('boom'))), /boom/);
    assert.equal(await slots.run(() => Promise.resolve('next')), 'next');
  });
});

describe('agent delta: what the report says', () => {
  it('keys each service by name, for every service an image runs', () => {
    const u = updateDownloadOf('B', [
      { image: image('web', 'b', [`${FLEET}/web`, `${FLEET}/worker`]), download: { method: 'delta', downloadedBytes: 10, pullBytes: 1000, fallback: null } },
      { image: image('db', 'c'), download: { method: 'pull', downloadedBytes: 500, pullBytes: 500, fallback: 'delta failed: corrupt: layer 0' } },
    ]);
    assert.deepEqual(u, {
      commit: 'B',
      services: {
        web: { method: 'delta', downloadedBytes: 10, pullBytes: 1000, fallback: null },
        worker: { method: 'delta', downloadedBytes: 10, pullBytes: 1000, fallback: null },
        db: { method: 'pull', downloadedBytes: 500, pullBytes: 500, fallback: 'delta failed: corrupt: layer 0' },
      },
    });
  });

  it('bounds a long reason to the wire\'s 2000 characters', () => {
    const u = updateDownloadOf('B', [{ image: image('web', 'b'), download: { method: 'pull', downloadedBytes: 1, pullBytes: 1, fallback: 'x'.repeat(5000) } }]);
    assert.equal(u.services.web?.fallback?.length, 2000);
  });

  const base: ReportInputs = {
    status: 'Idle', apps, agentTargetCommit: 'B', appliedCommit: 'B', containers: [], phase: { kind: 'idle' },
    device: { os_version: 'Debian', supervisor_version: '17.0.0', api_port: 48484, ip_address: '10.0.0.2' },
  };
  it('carries update_download once there is one, and sends it only when it changed', () => {
    assert.equal('update_download' in buildReport(base), false, 'none before the first update');
    const download = updateDownloadOf('B', [{ image: image('web', 'b'), download: { method: 'delta', downloadedBytes: 10, pullBytes: 1000, fallback: null } }]);
    const report = buildReport({ ...base, updateDownload: download });
    assert.deepEqual(report.update_download, download);
    assert.equal('update_download' in reportChanges(report, buildReport({ ...base, updateDownload: download })), false);
  });

  it('counts the bytes a pull downloaded from the engine\'s progress lines', () => {
    const p = new PullPercent();
    p.add({ id: 'aaaaaaaaaaaa', status: 'Already exists' });
    p.add({ id: 'bbbbbbbbbbbb', status: 'Downloading', progressDetail: { current: 10, total: 4000 } });
    p.add({ id: 'bbbbbbbbbbbb', status: 'Download complete' });
    p.add({ id: 'cccccccccccc', status: 'Downloading', progressDetail: { current: 100, total: 300 } });
    p.add({ id: 'cccccccccccc', status: 'Pull complete' });
    p.add({ id: 'sha256:dddd', status: 'Digest' });
    assert.equal(p.downloadedBytes, 4300);
  });
});

describe('device info: the last update', () => {
  const cases: Array<[string, Parameters<typeof describeUpdateDownload>[0]['services'][string], string]> = [
    ['by delta', { method: 'delta', downloadedBytes: 412 * 1024, pullBytes: 39.1 * 1024 * 1024, fallback: null }, 'web by delta: 412 KB of 39.1 MB (97× less)'],
    ['by delta, little saved', { method: 'delta', downloadedBytes: 1000, pullBytes: 1500, fallback: null }, 'web by delta: 1000 B of 1.5 KB (1.5× less)'],
    ['pulled after a failed delta', { method: 'pull', downloadedBytes: 2 * 1024 * 1024, pullBytes: 2 * 1024 * 1024, fallback: 'delta failed: corrupt: layer 1' }, 'web pulled: 2.0 MB (delta failed: corrupt: layer 1)'],
    ['pulled, no delta tried', { method: 'pull', downloadedBytes: 2048, pullBytes: 2048, fallback: null }, 'web pulled: 2.0 KB'],
    ['present', { method: 'present', downloadedBytes: 0, pullBytes: 0, fallback: null }, 'web already on the device'],
  ];
  for (const [name, service, line] of cases) {
    it(name, () => assert.deepEqual(describeUpdateDownload({ commit: 'B', services: { web: service } }), [line]));
  }
});
