import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { Chalk } from 'chalk';
import type { BuildEventEnvelope } from '../../src/lib/api/builds.js';
import type { ReleaseManifest, ServiceImage } from '../../src/lib/builder/release.js';
import { BuildRenderer, slowestStep } from '../../src/ui/build-renderer.js';
import { Output } from '../../src/ui/output.js';
import { RemoteBuildRenderer } from '../../src/ui/remote-build-renderer.js';

function setup(tty: boolean, columns = 100) {
  let err = '';
  let std = '';
  const sink = (into: (s: string) => void) => new Writable({ write(chunk: Buffer, _enc, done) { into(chunk.toString()); done(); } });
  const stderr = sink((s) => { err += s; });
  const out = new Output({
    json: false, terminal: { interactive: tty, stderrIsTTY: tty, colorLevel: 0, columns },
    chalk: new Chalk({ level: 0 }), stderr, stdout: sink((s) => { std += s; }),
  });
  return { out, stderr, err: () => err, std: () => std };
}

const PIP = '[stage-0 4/7] RUN pip install -r requirements.txt';
const web: ServiceImage = {
  service: 'web', image: 'app_web:latest', imageId: 'sha256:1', size: 5 * 1048576, architecture: 'amd64', source: 'build',
  buildSeconds: 12.3, steps: 7, cachedSteps: 3, builder: 'buildkit',
  stepTimes: [
    { name: '[stage-0 2/7] WORKDIR /app', cached: true, seconds: 0 },
    { name: '[stage-0 3/7] COPY requirements.txt .', cached: false, seconds: 0.1 },
    { name: PIP, cached: false, seconds: 9.8 },
    { name: '[stage-0 5/7] COPY . .', cached: false, seconds: 0.2 },
  ],
};
const worker: ServiceImage = {
  ...web, service: 'worker', image: 'app_worker:latest', buildSeconds: 0.9, steps: 5, cachedSteps: 4,
  stepTimes: [{ name: '[stage-0 2/5] RUN true', cached: false, seconds: 0.4 }, { name: '[stage-0 3/5] RUN sleep 30', cached: true, seconds: 0 }],
};
const db: ServiceImage = { service: 'db', image: 'redis:7', imageId: 'sha256:2', size: 1048576, architecture: 'amd64', source: 'image', buildSeconds: 0.1, steps: 0, cachedSteps: 0 };
const manifest = (services: ServiceImage[]): ReleaseManifest => ({
  project: 'app', source: '/tmp/app', deviceType: 'intel-nuc', arch: 'amd64', platform: 'linux/amd64', tag: 'latest',
  engine: { address: 'local', version: '20.10.24', arch: 'x86_64' }, createdAt: new Date(0).toISOString(), buildSeconds: 12.3,
  services, volumes: [], networks: [],
});

describe('build: the summary', () => {
  it('the slowest uncached step, only when it took a second or more', () => {
    assert.equal(slowestStep(web.stepTimes ?? [])?.name, PIP);
    assert.equal(slowestStep(worker.stepTimes ?? []), undefined, 'under a second, and a cached step never counts');
    assert.equal(slowestStep([]), undefined);
  });

  for (const tty of [false, true]) {
    it(`${tty ? 'on a terminal' : 'without a terminal'}: the table, a slowest-step line per service that has one, the builder on the last line`, () => {
      const s = setup(tty);
      new BuildRenderer(s.out, { showLogs: false, live: tty }).summary(manifest([web, worker, db]));
      assert.deepEqual(s.std().trimEnd().split('\n'), [
        'SERVICE  IMAGE              SIZE    ARCH   TIME   CACHED',
        'web      app_web:latest     5.0 MB  amd64  12.3s  3/7',
        'worker   app_worker:latest  5.0 MB  amd64  0.9s   4/5',
        'db       redis:7            1.0 MB  amd64  0.1s   -',
      ]);
      assert.equal(s.err(), [
        `web: slowest step 9.8s  ${PIP}`,
        'Built 3 services for intel-nuc (amd64) with BuildKit in 12.3s.',
        '',
      ].join('\n'));
    });
  }

  it('the slowest-step line is cut to the terminal width', () => {
    const s = setup(true, 40);
    new BuildRenderer(s.out, { showLogs: true }).summary(manifest([web]));
    const line = s.err().split('\n')[0] ?? '';
    assert.equal(line, 'web: slowest step 9.8s  [stage-0 4/7] …');
    assert.equal(line.length, 39);
  });

  it('names the classic builder; says no builder when nothing was built', () => {
    const classic = setup(false);
    new BuildRenderer(classic.out, { showLogs: true }).summary(manifest([{ ...web, builder: 'classic', stepTimes: [] }]));
    assert.equal(classic.err(), 'Built 1 service for intel-nuc (amd64) with the classic builder in 12.3s.\n');
    const pulled = setup(false);
    new BuildRenderer(pulled.out, { showLogs: true }).summary(manifest([db]));
    assert.equal(pulled.err(), 'Built 1 service for intel-nuc (amd64) in 12.3s.\n');
  });

  it('a cloud build prints the builder line and ignores live progress snapshots', () => {
    const s = setup(true);
    const r = new RemoteBuildRenderer(s.out, { showLogs: true }, s.stderr);
    const env = (event: BuildEventEnvelope['event']): BuildEventEnvelope => ({ seq: 1, time: new Date(0).toISOString(), event });
    r.event(env({ kind: 'builder', builder: 'buildkit', message: 'Building with BuildKit (engine 20.10.24)' }));
    r.event(env({ kind: 'progress', service: 'web', progress: { done: 1, cached: 0, total: 3, running: [], lastLines: ['secret?'] } }));
    r.stop();
    assert.equal(s.err(), 'Building with BuildKit (engine 20.10.24)\n');
  });
});
