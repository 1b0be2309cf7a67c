/**
 * The device loop with real parts: `skiff agent` as a subprocess on 127.0.0.1 with its engine proxy,
 * `skiff push` and `skiff logs` as subprocesses, the real engine underneath.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { runCli, startCli } from '../support/cli.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, makeProject } from '../support/engine.js';
import { cleanupAgent, eventually, freePort, startAgent, status, type TestAgent } from '../support/agent.js';
import { isRoot, requireOrSkip } from '../support/prerequisites.js';

const RUN = randomBytes(3).toString('hex');

// Services that stop at once on SIGTERM (sh as PID 1 ignores it unless trapped).
const LOOP = (body: string) => `trap 'exit 0' TERM; ${body}; while :; do sleep 1 & wait $!; done`;

function fixture(version: string, extra: Record<string, string> = {}): string {
  return makeProject(
    {
      'docker-compose.yml': [
        "version: '2.1'",
        'volumes:',
        '  counter: {}',
        'services:',
        '  web:',
        '    build: ./web',
        '    ports: ["PORT:80"]',
        '  worker:',
        '    build: ./worker',
        '    volumes: ["counter:/data"]',
        '    stop_grace_period: 2s',
        '    environment:',
        `      VERSION: "${version}"`,
        '  cfg:',
        '    build: ./cfg',
        '    depends_on: [web]',
        '',
      ].join('\n'),
      'web/Dockerfile': `FROM ${BASE_AMD64}\nCOPY index.html /www/index.html\nCMD ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait $!"]\n`,
      'web/index.html': `web ${version}\n`,
      'worker/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo worker $VERSION run $n')}"]\n`,
      'cfg/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo cfg up')}"]\n`,
      ...extra,
    },
    `dev${RUN}`,
  );
}

describe('device: agent, push, logs', function () {
  let agent: TestAgent;
  let webPort: number;
  let project: string;
  const agents: TestAgent[] = [];

  before(async () => {
    await ensureBaseImages();
    agent = await startAgent();
    agents.push(agent);
    webPort = await freePort();
  });
  after(async () => {
    for (const a of agents) {
      await a.kill('SIGKILL');
      await cleanupAgent(a.uuid);
    }
    await cleanupImages({ label: `io.skiff.project=dev${RUN}` });
  });

  function withPort(dir: string): string {
    const file = path.join(dir, 'docker-compose.yml');
    writeFileSync(file, (require_text(file)).replace('PORT', String(webPort)));
    return dir;
  }

  const pushArgs = (dir: string, ...extra: string[]) => ['push', `127.0.0.1:${agent.port}`, '--source', dir, '--dockerPort', String(agent.enginePort), '--detached', ...extra];

  it('answers the balena local-mode endpoints', async () => {
    assert.equal(await (await fetch(`${agent.url}/ping`)).text(), 'OK');
    const version = (await (await fetch(`${agent.url}/v2/version`)).json()) as { status: string; version: string };
    assert.equal(version.status, 'success');
    const info = (await (await fetch(`${agent.url}/v2/local/device-info`)).json()) as { info: { arch: string; deviceType: string } };
    assert.deepEqual(info.info, { arch: 'amd64', deviceType: 'intel-nuc' });
    const target = (await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: object } } };
    assert.deepEqual(target.state.local.apps, {});
  });

  it('push builds on the device engine, runs every service, and the web port answers', async () => {
    project = withPort(fixture('v1'));
    const r = await runCli([...pushArgs(project), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { result: { services: Array<{ service: string; status: string }>; commit: string } };
    assert.deepEqual(doc.result.services.map((s) => [s.service, s.status]), [['web', 'Running'], ['worker', 'Running'], ['cfg', 'Running']]);
    assert.equal(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), 'web v1\n');
    const containers = await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`] } });
    assert.equal(containers.length, 3);
    const worker = containers.find((c) => c.Labels['io.balena.service-name'] === 'worker');
    const workerInfo = await docker.getContainer(worker!.Id).inspect();
    assert.equal((workerInfo.Config as { StopTimeout?: number }).StopTimeout, 2, 'stop_grace_period becomes the engine stop timeout');
    const env = workerInfo.Config.Env;
    assert.ok(env.includes('VERSION=v1'));
    assert.ok(env.includes(`BALENA_DEVICE_UUID=${agent.uuid}`));
    assert.ok(env.includes('BALENA_SERVICE_NAME=worker'));
  });

  it('logs shows the worker output (history, then --tail follows)', async () => {
    const r = await runCli(['logs', `127.0.0.1:${agent.port}`, '--service', 'worker']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\[worker\] worker v1 run 1/);
    const { child, done } = startCli(['logs', `127.0.0.1:${agent.port}`, '--tail', '--json']);
    let seen = '';
    await new Promise<void>((resolve) => {
      child.stdout?.on('data', (d: Buffer) => {
        seen += d.toString();
        if (/"serviceName":"worker"/.test(seen)) resolve();
      });
    });
    child.kill('SIGINT');
    const res = await done;
    assert.equal(res.code, 0, res.stderr);
    const first = JSON.parse(seen.split('\n')[0] ?? '{}') as { message?: string; timestamp?: number };
    assert.equal(typeof first.timestamp, 'number');
  });

  it('a second version replaces the changed services\' containers only, and keeps the volume data', async () => {
    const before = await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`] } });
    writeFileSync(path.join(project, 'web/index.html'), 'web v2\n');
    writeFileSync(path.join(project, 'docker-compose.yml'), require_text(path.join(project, 'docker-compose.yml')).replace('VERSION: "v1"', 'VERSION: "v2"'));
    const r = await runCli(pushArgs(project));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /web\s+dev\w+_web:[0-9a-f]{12}\s+Running/);
    assert.equal(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), 'web v2\n');
    const after = await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`] } });
    const ids = (list: typeof before, s: string) => list.find((c) => c.Labels['io.balena.service-name'] === s)?.Id;
    assert.notEqual(ids(after, 'web'), ids(before, 'web'));
    assert.notEqual(ids(after, 'worker'), ids(before, 'worker'));
    assert.equal(ids(after, 'cfg'), ids(before, 'cfg'), 'cfg did not change: its container keeps running');
    assert.match(r.stdout, /cfg\s+dev\w+_cfg:[0-9a-f]{12}\s+Running/);
    // The agent attaches to a new container's output a moment after starting it (with its whole log).
    await eventually(async () => /worker v2 run 2/.test((await runCli(['logs', `127.0.0.1:${agent.port}`, '--service', 'worker'])).stdout), 20_000, 'the counter in the named volume to have survived the release (worker v2 run 2)');
  });

  const badTargets: Array<[string, (t: Record<string, unknown>) => void, RegExp]> = [
    ['an unknown image', (s) => { s.image = 'skiff-test/nope:1'; }, /not on the device's engine/],
    ['a bad restart policy', (s) => { s.restart = 'sometimes'; }, /invalid restart policy 'sometimes'/],
    ['an invalid port', (s) => { s.ports = ['99999:80']; }, /invalid port '99999:80'/],
  ];
  for (const [name, mutate, message] of badTargets) {
    it(`refuses a target state with ${name} (400) and changes nothing`, async () => {
      const current = ((await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: Record<string, { services: Record<string, Record<string, unknown>> }> } } }).state;
      const next = structuredClone(current) as typeof current;
      const svc = next.local.apps['1']!.services['1']!;
      mutate(svc);
      const res = await fetch(`${agent.url}/v2/local/target-state`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(next) });
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { message: string }).message, message);
      const after = ((await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: unknown }).state;
      assert.deepEqual(after, current);
    });
  }

  it('refuses a target with a duplicate service name (400)', async () => {
    const current = ((await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: Record<string, { services: Record<string, Record<string, unknown>> }> } } }).state;
    const next = structuredClone(current);
    const services = next.local.apps['1']!.services;
    services['9'] = { ...services['1']!, serviceId: 9 };
    const res = await fetch(`${agent.url}/v2/local/target-state`, { method: 'POST', body: JSON.stringify(next) });
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { message: string }).message, /two services named 'web'/);
  });

  it('a release whose service exits at once is rolled back; the previous one keeps running', async () => {
    const before = await status(agent.url);
    const dir = makeProject({ 'docker-compose.yml': readCompose(project), 'web/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "exit 3"]\n`, 'worker/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo broken worker')}"]\n`, 'cfg/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo cfg')}"]\n` }, `dev${RUN}`);
    const r = await runCli(pushArgs(dir));
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /Error: the device could not run release \w+: service 'web' did not stay up; it went back to the previous release/);
    await eventually(async () => (await status(agent.url)).appState === 'applied', 60_000, 'the previous release to be back');
    assert.equal((await status(agent.url)).release, before.release);
    assert.equal(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), 'web v2\n');
    rmSync(dir, { recursive: true, force: true });
  });

  it('a release whose service fails its healthcheck is rolled back; the previous one keeps running', async () => {
    const before = await status(agent.url);
    const compose = readCompose(project).replace('    build: ./web\n', '    build: ./web\n    healthcheck:\n      test: ["CMD", "false"]\n      interval: 200ms\n      timeout: 1s\n      retries: 1\n');
    assert.match(compose, /healthcheck/);
    const dir = makeProject({ 'docker-compose.yml': compose, 'web/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo unhealthy web')}"]\n`, 'worker/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo worker')}"]\n`, 'cfg/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo cfg')}"]\n` }, `dev${RUN}`);
    const r = await runCli(pushArgs(dir));
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /Error: the device could not run release \w+: service 'web' turned unhealthy \(its healthcheck failed\); it went back to the previous release/);
    await eventually(async () => (await status(agent.url)).appState === 'applied', 60_000, 'the previous release to be back');
    assert.equal((await status(agent.url)).release, before.release);
    assert.equal(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), 'web v2\n');
    rmSync(dir, { recursive: true, force: true });
  });

  it('a release whose service cannot start (its host port is taken) is rolled back; the previous one keeps running (exit 10)', async () => {
    const before = await status(agent.url);
    const held = await freePort();
    const holder = net.createServer();
    await new Promise<void>((resolve, reject) => holder.once('error', reject).listen(held, '127.0.0.1', resolve));
    try {
      const compose = readCompose(project).replace('    build: ./worker\n', `    build: ./worker\n    ports: ["127.0.0.1:${held}:80"]\n`);
      assert.match(compose, new RegExp(`${held}:80`));
      const dir = makeProject({ 'docker-compose.yml': compose, 'web/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo web')}"]\n`, 'worker/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo worker')}"]\n`, 'cfg/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo cfg')}"]\n` }, `dev${RUN}`);
      const r = await runCli(pushArgs(dir));
      assert.equal(r.code, 10, r.stderr);
      assert.match(r.stderr, new RegExp(`Error: the device could not run release \\w+: service 'worker' could not start: .*${held}.*; it went back to the previous release`));
      await eventually(async () => (await status(agent.url)).appState === 'applied', 60_000, 'the previous release to be back');
      assert.equal((await status(agent.url)).release, before.release);
      assert.equal(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), 'web v2\n');
      rmSync(dir, { recursive: true, force: true });
    } finally {
      holder.close();
    }
  });

  it('a build that fails on the device sends nothing: the device keeps its release (exit 5)', async () => {
    const before = await status(agent.url);
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\nRUN exit 7\n` }, `dev${RUN}`);
    const r = await runCli(pushArgs(dir));
    assert.equal(r.code, 5, r.stderr);
    const after = await status(agent.url);
    assert.equal(after.release, before.release);
    assert.equal(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), 'web v2\n');
  });

  it('waits while an update lock is held, and applies once it is released', async () => {
    const lock = path.join(agent.dataDir, 'locks', '1', 'worker', 'updates.lock');
    mkdirSync(path.dirname(lock), { recursive: true });
    writeFileSync(lock, '');
    writeFileSync(path.join(project, 'web/index.html'), 'web v3\n');
    const { done } = startCli(pushArgs(project));
    await eventually(async () => /update lock held/.test(JSON.stringify(await (await fetch(`${agent.url}/v2/state/status`)).json())), 60_000, 'the agent to report the lock');
    assert.equal(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), 'web v2\n', 'the old release still runs while locked');
    rmSync(lock);
    const r = await done;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), 'web v3\n');
  });

  it('an agent killed with kill -9 mid-apply converges after a restart, with volume data intact', async () => {
    writeFileSync(path.join(project, 'web/index.html'), 'web v4\n');
    const mark = agent.output().length;
    const { done } = startCli(pushArgs(project));
    await eventually(async () => /Killing service 'web'|Installing service 'web'/.test(agent.output().slice(mark)), 60_000, 'the apply to start');
    await agent.kill('SIGKILL');
    await done;
    const restarted = await startAgent({ dataDir: agent.dataDir, port: agent.port, enginePort: agent.enginePort });
    agents.push(restarted);
    agent = restarted;
    await eventually(async () => (await fetch(`http://127.0.0.1:${webPort}/`).then((r) => r.text()).catch(() => '')) === 'web v4\n', 60_000, 'v4 to serve');
    await eventually(async () => (await status(agent.url)).containers.filter((c) => c.status === 'Running').length === 3, 30_000, 'three running services');
    const logs = await eventually(async () => {
      const r = await runCli(['logs', `127.0.0.1:${agent.port}`, '--service', 'worker']);
      return /worker v2 run [3-9]/.test(r.stdout) ? r.stdout : undefined;
    }, 30_000, 'the worker counter to go on');
    assert.match(logs, /run [3-9]/);
  });

  it('push --force replaces a release while an update lock is held', async () => {
    const lock = path.join(agent.dataDir, 'locks', '1', 'web', 'updates.lock');
    mkdirSync(path.dirname(lock), { recursive: true });
    writeFileSync(lock, '');
    try {
      writeFileSync(path.join(project, 'web/index.html'), 'web v5\n');
      const r = await runCli([...pushArgs(project), '--force']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), 'web v5\n');
    } finally {
      rmSync(lock, { force: true });
    }
  });

  it('device info, restart and the service endpoints work over the API', async () => {
    const info = JSON.parse((await runCli(['device', 'info', `127.0.0.1:${agent.port}`, '--json'])).stdout) as { result: { deviceType: string; services: Array<{ service: string; status: string }> } };
    assert.equal(info.result.deviceType, 'intel-nuc');
    assert.deepEqual(info.result.services.map((x) => [x.service, x.status]), [['cfg', 'Running'], ['web', 'Running'], ['worker', 'Running']]);
    const id = ((await (await fetch(`${agent.url}/v2/containerId?serviceName=worker`)).json()) as { containerId: string }).containerId;
    const started = (await docker.getContainer(id).inspect()).State.StartedAt;
    const r = await runCli(['device', 'restart', `127.0.0.1:${agent.port}`, '--service', 'worker']);
    assert.equal(r.code, 0, r.stderr);
    const after = await docker.getContainer(id).inspect();
    assert.notEqual(after.State.StartedAt, started, 'the same container was restarted');
    const apps = (await (await fetch(`${agent.url}/v2/applications/state`)).json()) as Record<string, { appId: number; services: Record<string, { status: string }> }>;
    const app = Object.values(apps)[0]!;
    assert.equal(app.appId, 1);
    assert.equal(app.services.web?.status, 'Running');
    const device = (await (await fetch(`${agent.url}/v1/device`)).json()) as { api_port: number; status: string };
    assert.equal(device.api_port, agent.port);
    assert.equal((await fetch(`${agent.url}/v1/healthy`)).status, 200);
    // stop-service keeps the service stopped (the loop does not start it again) until start-service.
    const stop = await fetch(`${agent.url}/v2/applications/1/stop-service`, { method: 'POST', body: JSON.stringify({ serviceName: 'cfg' }) });
    assert.equal(stop.status, 200);
    await eventually(async () => (await status(agent.url)).containers.find((c) => c.serviceName === 'cfg')?.status === 'Exited', 20_000, 'cfg to stop');
    // Make the loop run a round after the stop, and see it end: take web away; once the agent has
    // put it back, that round also planned cfg (and would have started it).
    const webId = (await status(agent.url)).containers.find((c) => c.serviceName === 'web')?.containerId ?? '';
    await docker.getContainer(webId).remove({ force: true });
    await eventually(async () => {
      const s = await status(agent.url);
      const w = s.containers.find((c) => c.serviceName === 'web');
      return s.appState === 'applied' && w?.status === 'Running' && w.containerId !== webId;
    }, 30_000, 'the agent to put web back');
    assert.equal((await status(agent.url)).containers.find((c) => c.serviceName === 'cfg')?.status, 'Exited');
    await fetch(`${agent.url}/v2/applications/1/start-service`, { method: 'POST', body: JSON.stringify({ serviceName: 'cfg' }) });
    await eventually(async () => (await status(agent.url)).containers.find((c) => c.serviceName === 'cfg')?.status === 'Running', 20_000, 'cfg to run again');
    const missing = await fetch(`${agent.url}/v2/applications/1/restart-service`, { method: 'POST', body: JSON.stringify({ serviceName: 'nope' }) });
    assert.equal(missing.status, 404);
  });

  it('device purge needs --yes without a terminal (exit 6), and then empties the volumes', async () => {
    const refused = await runCli(['device', 'purge', `127.0.0.1:${agent.port}`]);
    assert.equal(refused.code, 6, refused.stderr);
    assert.match(refused.stderr, /Error: purging .* deletes its data and needs confirmation\. Pass --yes/);
    const r = await runCli(['device', 'purge', `127.0.0.1:${agent.port}`, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    await eventually(async () => {
      const logs = await runCli(['logs', `127.0.0.1:${agent.port}`, '--service', 'worker']);
      return logs.stdout.split('\n').filter(Boolean).at(-1)?.endsWith('run 1');
    }, 30_000, 'the worker to start counting from 1 on an empty volume');
  });

  it('a lost database is rebuilt from the containers, which keep running untouched', async () => {
    await eventually(async () => (await status(agent.url)).appState === 'applied' && (await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`] } })).length === 3, 30_000, 'a settled device');
    const before = (await docker.listContainers({ all: true, filters: { label: [`io.skiff.agent=${agent.uuid}`] } })).map((c) => c.Id).sort();
    await agent.kill('SIGTERM');
    // The database and its target.json copy: only the containers are left to tell.
    for (const f of ['agent.sqlite', 'agent.sqlite-wal', 'agent.sqlite-shm', 'target.json']) rmSync(path.join(agent.dataDir, f), { force: true });
    agent = await startAgent({ dataDir: agent.dataDir, port: agent.port, enginePort: agent.enginePort });
    agents.push(agent);
    await eventually(async () => /Recovered the target state from the running containers/.test(agent.output()), 20_000, 'recovery');
    // The database had no applied release: the loop's first round over the recovered target sets it.
    await eventually(async () => { const s = await status(agent.url); return s.appState === 'applied' && s.release !== null; }, 30_000, 'the first round over the recovered target');
    const after = (await docker.listContainers({ all: true, filters: { label: [`io.skiff.agent=${agent.uuid}`] } })).map((c) => c.Id).sort();
    assert.deepEqual(after, before);
    const target = (await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: Record<string, { services: Record<string, { serviceName: string }> }> } } };
    assert.deepEqual(Object.values(target.state.local.apps['1']!.services).map((x) => x.serviceName).sort(), ['cfg', 'web', 'worker']);
  });

  it('logs --tail reconnects when the stream drops (agent restarted)', async () => {
    const { child, done } = startCli(['logs', `127.0.0.1:${agent.port}`, '--tail', '--service', 'worker']);
    let out = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    await eventually(async () => out.length > 0, 20_000, 'first lines');
    await agent.kill('SIGTERM');
    agent = await startAgent({ dataDir: agent.dataDir, port: agent.port, enginePort: agent.enginePort });
    agents.push(agent);
    const mark = out.length;
    // The worker prints only at start: restart it so new lines flow after the reconnect.
    await runCli(['device', 'restart', `127.0.0.1:${agent.port}`, '--service', 'worker']);
    await eventually(async () => /reconnecting/.test(err) && /worker v2 run \d+/.test(out.slice(mark)), 30_000, 'lines after the reconnect');
    child.kill('SIGINT');
    assert.equal((await done).code, 0);
  });

  it('two pushes at once: the device ends up on one release, and the other push says so', async () => {
    writeFileSync(path.join(project, 'web/index.html'), 'web v6\n');
    const first = startCli(pushArgs(project));
    const other = makeProject({ 'docker-compose.yml': readCompose(project), 'web/Dockerfile': require_text(path.join(project, 'web/Dockerfile')), 'web/index.html': 'web v7\n', 'worker/Dockerfile': require_text(path.join(project, 'worker/Dockerfile')), 'cfg/Dockerfile': require_text(path.join(project, 'cfg/Dockerfile')) }, `dev${RUN}`);
    const second = startCli(pushArgs(other));
    const [a, b] = await Promise.all([first.done, second.done]);
    // Usually the later push replaces the earlier one before it is confirmed (exit 10 for it);
    // if the first finished before the second was sent, both succeed. Never a mix.
    assert.ok([a.code, b.code].includes(0), `${a.stderr}\n${b.stderr}`);
    for (const r of [a, b]) {
      if (r.code !== 0) {
        assert.equal(r.code, 10, r.stderr);
        assert.match(r.stderr, /was replaced by release \w+, pushed to the device meanwhile/);
      }
    }
    await eventually(async () => (await status(agent.url)).appState === 'applied', 30_000, 'a settled device');
    const containers = await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`] } });
    assert.equal(containers.length, 3);
    // Exactly one push's release: every container runs the image that release names for its service
    // (a service whose image did not change keeps its container, so commits on containers may differ).
    const target = (await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: Record<string, { services: Record<string, { serviceName: string; image: string }> }> } } };
    const images = new Map(Object.values(Object.values(target.state.local.apps)[0]!.services).map((s) => [s.serviceName, s.image]));
    for (const c of containers) assert.equal(c.Image, images.get(c.Labels['io.balena.service-name'] ?? ''), 'all services from one release');
    assert.match(await (await fetch(`http://127.0.0.1:${webPort}/`)).text(), /^web v[67]\n$/);
  });

  it('device ssh runs a command in a service (exit status kept) and a script piped in', async () => {
    const r = await runCli(['device', 'ssh', `127.0.0.1:${agent.port}`, 'worker', '--dockerPort', String(agent.enginePort), '--command', 'echo in $BALENA_SERVICE_NAME; echo oops >&2; exit 3']);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, 'in worker\n');
    assert.match(r.stderr, /oops/);
    const piped = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const { child, done } = startCli(['device', 'ssh', `127.0.0.1:${agent.port}`, 'web', '--dockerPort', String(agent.enginePort)], { stdin: 'pipe' });
      child.stdin?.end('cat /www/index.html; exit 5\n');
      void done.then((x) => resolve({ code: x.code, stdout: x.stdout }));
    });
    assert.equal(piped.code, 5);
    assert.match(piped.stdout, /^web v/);
    const noService = await runCli(['device', 'ssh', `127.0.0.1:${agent.port}`, '--dockerPort', String(agent.enginePort), '--command', 'true']);
    assert.equal(noService.code, 2);
    assert.match(noService.stderr, /name the service to open a shell in\. Services: /);
  });

  it('push says clearly when the device is unreachable (exit 8) or not a device (exit 9)', async () => {
    const closed = await freePort();
    const r = await runCli(['push', `127.0.0.1:${closed}`, '--source', project, '--detached']);
    assert.equal(r.code, 8, r.stderr);
    assert.match(r.stderr, /Error: cannot reach the device at 127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    const notAgent = await runCli(['push', `127.0.0.1:${agent.enginePort}`, '--source', project, '--detached']);
    assert.equal(notAgent.code, 9, notAgent.stderr);
    assert.match(notAgent.stderr, /is not a skiff agent or balena supervisor/);
  });

  it('push says how to fix a closed engine port (exit 4)', async () => {
    const closed = await freePort();
    const r = await runCli(['push', `127.0.0.1:${agent.port}`, '--source', project, '--dockerPort', String(closed), '--detached']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /the device must expose its engine to build on it\. Run the agent in development mode/);
  });

  it('survives a restart of the engine: the release runs again and the agent reports it applied', async function () {
    requireOrSkip(this, isRoot(), 'root (restarting dockerd)');
    await eventually(async () => (await status(agent.url)).appState === 'applied', 30_000, 'a settled device');
    execFileSync('pkill', ['-x', 'dockerd']);
    // Gone, not only silent: a dockerd still stopping its containers holds the pid file a new one needs.
    await eventually(async () => !(await docker.ping().then(() => true).catch(() => false)) && !processRuns('dockerd'), 60_000, 'the engine to stop');
    execFileSync('bash', ['scripts/setup-host.sh'], { stdio: 'ignore' });
    await eventually(async () => (await fetch(`http://127.0.0.1:${webPort}/`).then((r) => r.text()).catch(() => '')).startsWith('web v'), 60_000, 'the web service after the restart');
    await eventually(async () => (await status(agent.url)).appState === 'applied', 60_000, 'the agent to report applied again');
    assert.match(agent.output(), /Lost the engine event stream; reconnecting/);
  });

  it('outside development mode every call but /ping needs the API key', async () => {
    const locked = await startAgent({ args: ['--no-development-mode'] });
    agents.push(locked);
    assert.equal((await fetch(`${locked.url}/ping`)).status, 200);
    assert.equal((await fetch(`${locked.url}/v2/version`)).status, 401);
    const key = (JSON.parse(require_text(path.join(locked.dataDir, 'config.json'))) as { deviceApiKey: string }).deviceApiKey;
    assert.equal((await fetch(`${locked.url}/v2/version`, { headers: { Authorization: `Bearer ${key}` } })).status, 200);
    assert.equal((await fetch(`${locked.url}/v2/version?apikey=${key}`)).status, 200);
  });

  it('prints start-up problems: an engine port in use is named on the agent\'s output, and the API still serves', async () => {
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    try {
      const port = (busy.address() as net.AddressInfo).port;
      const a = await startAgent({ enginePort: port });
      agents.push(a);
      const lines = a.output().split('\n');
      const starting = lines.findIndex((l) => /Agent starting \(device /.test(l));
      const problem = lines.findIndex((l) => l.includes(`Engine API not exposed on port ${port}: EADDRINUSE`));
      assert.ok(starting >= 0 && problem > starting, `the start-up messages, in order, on the agent's output:\n${a.output()}`);
      assert.equal((await fetch(`${a.url}/ping`)).status, 200);
    } finally {
      busy.close();
    }
  });

  it('delete-then-download deletes the old release\'s image once its container is gone', async () => {
    const project1 = (version: string) => makeProject({
      'docker-compose.yml': "version: '2.1'\nservices:\n  lean:\n    build: .\n    labels:\n      io.balena.update.strategy: delete-then-download\n",
      Dockerfile: `FROM ${BASE_AMD64}\nENV V=${version}\nCMD ["sh", "-c", "${LOOP('echo lean')}"]\n`,
    }, `dev${RUN}`);
    assert.equal((await runCli(pushArgs(project1('v1')))).code, 0);
    const [first] = await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`, 'io.balena.service-name=lean'] } });
    assert.ok(first);
    const r = await runCli(pushArgs(project1('v2')));
    assert.equal(r.code, 0, r.stderr);
    await assert.rejects(docker.getImage(first.ImageID).inspect(), /no such image/i);
    assert.match(agent.output(), /Deleted the old image of service 'lean'/);
  });

  it('a lost database mid-apply: target.json still knows the release removed a service, so it stays removed', async () => {
    const pair = (services: string[]) => makeProject({
      'docker-compose.yml': `version: '2.1'\nservices:\n${services.map((s) => `  ${s}:\n    build: ./${s}\n`).join('')}`,
      ...Object.fromEntries(services.map((s) => [`${s}/Dockerfile`, `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP(`echo ${s}`)}"]\n`])),
    }, `dev${RUN}`);
    const named = async (name: string) => docker.listContainers({ all: true, filters: { label: [`io.skiff.agent=${agent.uuid}`, `io.balena.service-name=${name}`] } });
    assert.equal((await runCli(pushArgs(pair(['keep', 'gone'])))).code, 0);
    // The next release only removes 'gone' (keep's container stays); a lock holds the removal.
    const lock = path.join(agent.dataDir, 'locks', '1', 'gone', 'updates.lock');
    mkdirSync(path.dirname(lock), { recursive: true });
    writeFileSync(lock, '');
    try {
      const push = startCli(pushArgs(pair(['keep'])));
      await eventually(async () => /update lock held/.test(JSON.stringify(await status(agent.url))), 60_000, 'the removal to wait on the lock');
      await agent.kill('SIGKILL');
      await push.done;
      for (const f of ['agent.sqlite', 'agent.sqlite-wal', 'agent.sqlite-shm']) rmSync(path.join(agent.dataDir, f), { force: true });
      agent = await startAgent({ dataDir: agent.dataDir, port: agent.port, enginePort: agent.enginePort });
      agents.push(agent);
      await eventually(async () => /Recovered the target state from target\.json/.test(agent.output()), 20_000, 'recovery from target.json');
      const target = (await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: Record<string, { services: Record<string, { serviceName: string }> }> } } };
      assert.deepEqual(Object.values(target.state.local.apps['1']!.services).map((x) => x.serviceName), ['keep']);
      assert.equal((await named('gone')).length, 1, 'still there while the lock is held');
    } finally {
      rmSync(lock, { force: true });
    }
    await eventually(async () => (await named('gone')).length === 0, 60_000, "'gone' to be removed once the lock is released");
    assert.equal((await named('keep')).length, 1);
  });

  it('hand-over: the new container runs beside the old one until it writes handover-complete', async () => {
    const relay = (version: string, takeOver: boolean) => makeProject({
      'docker-compose.yml': [
        "version: '2.1'",
        'services:',
        '  relay:',
        '    build: .',
        '    labels:',
        '      io.balena.update.strategy: hand-over',
        '      io.balena.update.handover-timeout: "60000"',
        '',
      ].join('\n'),
      Dockerfile: `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP(`echo relay ${version}${takeOver ? '; sleep 3; touch /tmp/balena/handover-complete' : ''}`)}"]\n`,
    }, `dev${RUN}`);
    const relays = async () => (await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`, 'io.balena.service-name=relay'] } })).map((c) => c.Id);
    const running = async () => (await relays()).length;
    const v1 = relay('v1', false);
    assert.equal((await runCli(pushArgs(v1))).code, 0);
    const [old] = await relays();
    const v2 = startCli(pushArgs(relay('v2', true)));
    await eventually(async () => (await running()) === 2, 60_000, 'old and new relay running side by side');
    const r = await v2.done;
    assert.equal(r.code, 0, r.stderr);
    const left = await relays();
    assert.equal(left.length, 1);
    assert.notEqual(left[0], old, 'the old container is the one that went');
  });
});

/** Whether a process named exactly `name` runs (pgrep -x). */
function processRuns(name: string): boolean {
  try {
    execFileSync('pgrep', ['-x', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function require_text(file: string): string {
  return readFileSync(file, 'utf8');
}

function readCompose(dir: string): string {
  return require_text(path.join(dir, 'docker-compose.yml'));
}
