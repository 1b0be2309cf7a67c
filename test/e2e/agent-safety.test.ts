/**
 * Agent safety with real parts: the agent binary as a subprocess, the real engine behind it (reached
 * directly or through a socket that is not there yet, or that loses chosen calls).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { cleanupAgent, eventually, freePort, startAgent, status, type TestAgent } from '../support/agent.js';
import { BASE_AMD64, docker, ensureBaseImages, TEST_LABEL } from '../support/engine.js';
import { engineProxy, type EngineProxy } from '../support/engine-proxy.js';
import { scratchDir } from '../support/tmp.js';

const RUN = randomBytes(3).toString('hex');
const MiB = 1024 * 1024;

/** A service that stops at once on SIGTERM (sh as PID 1 ignores it unless trapped). */
function service(id: number, name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    serviceName: name, serviceId: id, imageId: id, image: BASE_AMD64,
    command: ['sh', '-c', `trap 'exit 0' TERM; echo ${name} up; while :; do sleep 1 & wait $!; done`],
    ...extra,
  };
}

/** A local-mode target with one app of these services. */
function release(commit: string, services: Array<Record<string, unknown>>): unknown {
  return {
    local: { name: `safety-${RUN}`, config: {}, apps: { 1: { name: `safety${RUN}`, commit, releaseId: commit, services: Object.fromEntries(services.map((s) => [String(s.serviceId), s])) } } },
    dependent: { apps: {}, devices: {} },
  };
}

async function postTarget(agent: TestAgent, target: unknown): Promise<void> {
  const res = await fetch(`${agent.url}/v2/local/target-state`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(target) });
  assert.equal(res.status, 200, await res.text());
}

async function applied(agent: TestAgent, commit: string, services: number): Promise<void> {
  await eventually(async () => {
    const s = await status(agent.url);
    return s.appState === 'applied' && s.release === commit && s.containers.filter((c) => c.status === 'Running').length === services;
  }, 60_000, `release ${commit} applied`);
}

/** Each of the agent's containers: id → when it started (a restart changes it). */
async function startedAt(uuid: string): Promise<Record<string, string>> {
  const list = await docker.listContainers({ all: true, filters: { label: [`io.skiff.agent=${uuid}`] } });
  const out: Record<string, string> = {};
  for (const c of list) out[c.Id] = (await docker.getContainer(c.Id).inspect()).State.StartedAt;
  return out;
}

/** A host port held by this process, as another program on the device would hold it. */
async function holdPort(port: number): Promise<net.Server> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return server;
}

const failedTries = (agent: TestAgent): number => (agent.output().match(/Failed to apply the target state/g) ?? []).length;
const rollbacks = (agent: TestAgent): number => (agent.output().match(/rolling back to the previous release/g) ?? []).length;

const healthy = async (agent: TestAgent): Promise<number> => (await fetch(`${agent.url}/v1/healthy`)).status;
const modeOf = (file: string): number => statSync(file).mode & 0o777;

describe('agent safety', function () {
  const agents: TestAgent[] = [];
  const proxies: EngineProxy[] = [];
  const socketFile = (name: string) => path.join(os.tmpdir(), `skiff-${name}-${RUN}.sock`);

  before(async () => {
    await ensureBaseImages();
  });
  after(async () => {
    for (const a of agents) {
      await a.kill('SIGKILL');
      await cleanupAgent(a.uuid);
    }
    for (const p of proxies) await p.down();
  });

  it('adopts the running release when started with no state while the engine is unreachable, once it answers; nothing restarts', async () => {
    const first = await startAgent();
    agents.push(first);
    const commit = `adopt${RUN}`;
    await postTarget(first, release(commit, [service(1, 'web'), service(2, 'worker')]));
    await applied(first, commit, 2);
    const before = await startedAt(first.uuid);
    assert.equal(Object.keys(before).length, 2);
    await first.kill();

    // Database and target.json gone (config.json, the device's identity, stays): only the containers know the release.
    for (const f of readdirSync(first.dataDir)) if (f.startsWith('agent.sqlite') || f.startsWith('target.json')) rmSync(path.join(first.dataDir, f));
    const engine = engineProxy(socketFile('adopt'));
    proxies.push(engine);
    const second = await startAgent({ dataDir: first.dataDir, env: { DOCKER_HOST: engine.address } });
    agents.push(second);
    assert.equal(second.uuid, first.uuid);
    await eventually(async () => (await healthy(second)) === 500, 30_000, '/v1/healthy to say 500 while the engine does not answer');
    assert.equal((await status(second.url)).appState, 'failed');

    await engine.up();
    await applied(second, commit, 2);
    assert.equal(await healthy(second), 200);
    assert.deepEqual(await startedAt(first.uuid), before, 'the same containers, never restarted');
    assert.match(second.output(), /Recovered the target state from the running containers/);
    assert.equal(modeOf(path.join(first.dataDir, 'target.json')), 0o600);
  });

  it('containers whose labels give no valid target are left alone, retried, until a target is posted', async () => {
    // A device whose database is gone and whose one container carries a target that does not parse.
    const uuid = randomBytes(16).toString('hex');
    const dataDir = scratchDir('skiff-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ uuid, deviceType: 'intel-nuc', listenPort: 48484, developmentMode: true, deviceApiKey: randomBytes(16).toString('hex') }), { mode: 0o600 });
    const bad = { ...service(1, 'web'), restart: 'sometimes' };
    const created = await docker.createContainer({
      Image: BASE_AMD64, Cmd: ['sh', '-c', "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"],
      Labels: {
        [TEST_LABEL]: 'agent-safety', 'io.skiff.agent': uuid, 'io.balena.supervised': 'true', 'io.balena.app-id': '1', 'io.balena.service-id': '1', 'io.balena.service-name': 'web',
        'io.skiff.target': JSON.stringify({ app: { name: `bad${RUN}`, commit: 'bad', releaseId: 'bad', volumes: {}, networks: {}, services: ['web'] }, service: bad }),
      },
    });
    await created.start();
    const before = (await created.inspect()).State.StartedAt;
    const agent = await startAgent({ dataDir });
    agents.push(agent);
    // Twice: the first failure was retried, and still nothing planned from the empty target.
    await eventually(async () => (agent.output().match(/could not recover the target state from the running containers/g) ?? []).length >= 2, 30_000, 'adoption to fail twice');
    const s = await status(agent.url);
    assert.equal(s.appState, 'failed');
    assert.equal(await healthy(agent), 200, 'the agent works; the containers need a target');
    const after = await created.inspect();
    assert.equal(after.State.Running, true);
    assert.equal(after.State.StartedAt, before);

    await postTarget(agent, release(`good${RUN}`, [service(1, 'web')]));
    await applied(agent, `good${RUN}`, 1);
  });

  it('starts with a stored target it can no longer read (a key an older agent took), keeps what runs, and takes a new target', async () => {
    const first = await startAgent();
    agents.push(first);
    await postTarget(first, release(`old${RUN}`, [service(1, 'web')]));
    await applied(first, `old${RUN}`, 1);
    const uuid = first.uuid;
    const before = await startedAt(uuid);
    await first.kill();
    // What an older agent stored: the database loses its copy, target.json keeps one with a key this agent refuses.
    for (const f of readdirSync(first.dataDir)) if (f.startsWith('agent.sqlite')) rmSync(path.join(first.dataDir, f));
    const stored = release(`old${RUN}`, [service(1, 'web', { memswap_limit: '1g' })]);
    writeFileSync(path.join(first.dataDir, 'target.json'), JSON.stringify({ json: stored, updatedAt: new Date().toISOString() }), { mode: 0o600 });
    const second = await startAgent({ dataDir: first.dataDir, port: first.port });
    agents.push(second);
    await eventually(async () => /the stored target state is no longer valid .*memswap_limit/.test(second.output()), 30_000, 'the agent to say why it holds');
    assert.deepEqual(await startedAt(uuid), before, 'nothing was stopped or restarted');
    await postTarget(second, release(`new${RUN}`, [service(1, 'web')]));
    await applied(second, `new${RUN}`, 1);
  });

  it('writes config.json and the database 0600, and tightens a config.json left 0644 at start', async () => {
    const first = await startAgent();
    agents.push(first);
    for (const f of ['config.json', 'agent.sqlite']) assert.equal(modeOf(path.join(first.dataDir, f)).toString(8), '600', f);
    await first.kill();
    chmodSync(path.join(first.dataDir, 'config.json'), 0o644);
    const second = await startAgent({ dataDir: first.dataDir });
    agents.push(second);
    assert.equal(modeOf(path.join(first.dataDir, 'config.json')).toString(8), '600');
    assert.match(second.output(), /config\.json holds the device API key but was open to others \(mode 0644\): made it 0600/);
  });

  it('loses its engine while it watches a new release, and carries on once it is back (the process does not end)', async () => {
    const engine = engineProxy(socketFile('watch'));
    proxies.push(engine);
    await engine.up();
    // A long grace period, so the engine goes away while the release is being watched.
    const agent = await startAgent({ env: { DOCKER_HOST: engine.address }, args: ['--rollback-grace', '600'] });
    agents.push(agent);
    const commit = `watch${RUN}`;
    await postTarget(agent, release(commit, [service(1, 'web')]));
    await eventually(async () => {
      const s = await status(agent.url);
      return s.appState === 'applying' && s.containers.some((c) => c.status === 'Running');
    }, 60_000, 'the release running and watched');
    await engine.down();
    await eventually(async () => (await healthy(agent)) === 500, 60_000, 'the agent to notice');
    assert.equal(agent.child.exitCode, null, `the agent ended: ${agent.output().slice(-2000)}`);
    await engine.up();
    await eventually(async () => (await healthy(agent)) === 200, 60_000, 'the agent to carry on');
    assert.equal((await status(agent.url)).appState, 'applying', 'still watching the release');
  });

  it('a release whose container cannot start (a host port taken) is rolled back within seconds, says why, and a fixed release applies after', async () => {
    const agent = await startAgent();
    agents.push(agent);
    const [a, b, c] = ['A', 'B', 'C'].map((x) => `port${x}${RUN}`) as [string, string, string];
    await postTarget(agent, release(a, [service(1, 'app')]));
    await applied(agent, a, 1);

    const port = await freePort();
    const holder = await holdPort(port);
    try {
      await postTarget(agent, release(b, [service(1, 'app', { ports: [`127.0.0.1:${port}:80`] })]));
      // Three tries with backoff take a few seconds; 30 s is far below push's 120 s wait.
      const failed = await eventually(async () => (await status(agent.url)).failedRelease, 30_000, `release ${b} to be rolled back`);
      assert.equal(failed.commit, b);
      assert.match(failed.reason, new RegExp(`^service 'app' could not start: .*${port}.*(address already in use|port is already allocated)`));
      await applied(agent, a, 1);
      const target = (await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: Record<string, { commit: string }> } } };
      assert.equal(target.state.local.apps['1']?.commit, a, 'the target went back to the previous release');
      const running = await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`] } });
      assert.deepEqual(running.map((x) => x.Labels['io.skiff.commit']), [a], "the previous release's container runs again, alone");
      assert.equal((await status(agent.url)).failedRelease?.commit, b, 'the failure stays reported once the previous release is back');
    } finally {
      holder.close();
    }

    // The port is free again: a release publishing it applies (nothing is left in a rolling-back state).
    await postTarget(agent, release(c, [service(1, 'app', { ports: [`127.0.0.1:${port}:80`] })]));
    await applied(agent, c, 1);
    assert.equal((await status(agent.url)).failedRelease, undefined);
  });

  it('a release whose container needs a device the host lacks is rolled back too', async () => {
    const agent = await startAgent();
    agents.push(agent);
    const [a, b] = [`devA${RUN}`, `devB${RUN}`];
    await postTarget(agent, release(a, [service(1, 'app')]));
    await applied(agent, a, 1);
    const missing = `/dev/skiff-missing-${RUN}`;
    await postTarget(agent, release(b, [service(1, 'app', { devices: [`${missing}:/dev/ttyUSB0`] })]));
    const failed = await eventually(async () => (await status(agent.url)).failedRelease, 30_000, `release ${b} to be rolled back`);
    assert.equal(failed.commit, b);
    assert.match(failed.reason, new RegExp(`^service 'app' could not (be created|start): .*${missing}`));
    await applied(agent, a, 1);
  });

  it('the first release on a device that cannot start has nothing to go back to: it is retried and reported, not rolled back', async () => {
    const agent = await startAgent();
    agents.push(agent);
    const commit = `first${RUN}`;
    const port = await freePort();
    const holder = await holdPort(port);
    try {
      await postTarget(agent, release(commit, [service(1, 'app', { ports: [`127.0.0.1:${port}:80`] })]));
      // Past the tries that roll a release back: still the same release, still trying.
      await eventually(async () => failedTries(agent) > 4, 60_000, 'the start to fail more than four times');
      const s = (await (await fetch(`${agent.url}/v2/state/status`)).json()) as { appState: string; error?: string; failedRelease?: unknown };
      assert.equal(s.appState, 'failed');
      assert.match(s.error ?? '', /^service 'app' could not start: /);
      assert.equal(s.failedRelease, undefined);
      assert.equal(rollbacks(agent), 0);
    } finally {
      holder.close();
    }
    await applied(agent, commit, 1);
  });

  it('a rollback whose previous release cannot start either keeps retrying the previous release, never back and forth', async () => {
    const agent = await startAgent();
    agents.push(agent);
    const [a, b] = [`backA${RUN}`, `backB${RUN}`];
    const [portA, portB] = [await freePort(), await freePort()];
    await postTarget(agent, release(a, [service(1, 'app', { ports: [`127.0.0.1:${portA}:80`] })]));
    await applied(agent, a, 1);
    const holders = [await holdPort(portB)];
    try {
      await postTarget(agent, release(b, [service(1, 'app', { ports: [`127.0.0.1:${portB}:80`] })]));
      // Once A's container is gone (B replaces it), something else takes A's port too.
      await eventually(async () => (await docker.listContainers({ all: true, filters: { label: [`io.skiff.commit=${a}`] } })).length === 0, 30_000, `release ${a}'s container to go`);
      holders.push(await eventually(() => holdPort(portA).catch(() => undefined), 10_000, `port ${portA} to be free`));
      await eventually(async () => (await status(agent.url)).failedRelease?.commit === b, 30_000, `release ${b} to be rolled back`);
      const triesAtRollback = failedTries(agent);
      await eventually(async () => failedTries(agent) > triesAtRollback + 4, 60_000, `release ${a} to be retried past the rollback threshold`);
      assert.equal(rollbacks(agent), 1, 'rolled back once');
      const target = (await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: Record<string, { commit: string }> } } };
      assert.equal(target.state.local.apps['1']?.commit, a, 'the previous release stays the target');
      assert.equal((await status(agent.url)).failedRelease?.commit, b);
    } finally {
      for (const h of holders) h.close();
    }
    await applied(agent, a, 1);
  });

  describe('the device API', () => {
    let agent: TestAgent;
    let engine: EngineProxy;
    before(async () => {
      engine = engineProxy(socketFile('api'));
      proxies.push(engine);
      await engine.up();
      agent = await startAgent({ env: { DOCKER_HOST: engine.address } });
      agents.push(agent);
      await postTarget(agent, release(`api${RUN}`, [service(1, 'web')]));
      await applied(agent, `api${RUN}`, 1);
    });

    it('refuses a body over 1 MiB with 413, declared or streamed, and still reads one under it', async () => {
      const over = JSON.stringify({ local: { apps: {} }, padding: 'x'.repeat(MiB) });
      const declared = await fetch(`${agent.url}/v2/local/target-state`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: over });
      assert.equal(declared.status, 413);
      assert.match(((await declared.json()) as { message: string }).message, /over the API's limit of 1048576 bytes/);

      // Chunked, with no length announced: counted as it arrives.
      const streamed = await new Promise<number>((resolve, reject) => {
        const req = http.request(`${agent.url}/v2/local/target-state`, { method: 'POST', headers: { 'Content-Type': 'application/json' } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        const chunk = Buffer.alloc(64 * 1024, 'x');
        let sent = 0;
        const pump = (): void => {
          while (sent < 2 * MiB) {
            sent += chunk.length;
            if (!req.write(chunk)) return void req.once('drain', pump);
          }
          req.end();
        };
        pump();
      });
      assert.equal(streamed, 413);

      // Under the cap the body is read and judged on what it says.
      const under = await fetch(`${agent.url}/v2/local/target-state`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ local: 'x'.repeat(MiB - 100) }) });
      assert.equal(under.status, 400);
      assert.equal((await status(agent.url)).release, `api${RUN}`, 'the target did not change');
    });

    it('reports a stop-service that fails: an unknown service (404), a stop the engine never got (503); a stop that works stops', async () => {
      const stop = (serviceName: string) => fetch(`${agent.url}/v2/applications/1/stop-service`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ serviceName }) });
      const unknown = await stop('nope');
      assert.equal(unknown.status, 404);
      assert.match(((await unknown.json()) as { message: string }).message, /service 'nope' not found/);

      const [web] = (await status(agent.url)).containers;
      assert.ok(web);
      engine.dropCalls(/^POST \S*\/containers\/[0-9a-f]+\/stop\b/);
      const lost = await stop('web');
      engine.dropCalls(undefined);
      assert.equal(lost.status, 503);
      assert.match(((await lost.json()) as { message: string }).message, /could not stop service 'web'/);
      assert.equal((await docker.getContainer(web.containerId).inspect()).State.Running, true, 'the service still runs');

      const ok = await stop('web');
      assert.equal(ok.status, 200, await ok.text());
      assert.equal((await docker.getContainer(web.containerId).inspect()).State.Running, false);
    });

    it('/v1/healthy: a step that keeps failing is healthy (the agent works on it); an engine that does not answer is not', async () => {
      // A host port something else holds: starting the container fails, again and again.
      const port = await freePort();
      const holder = net.createServer().listen(port, '127.0.0.1');
      await new Promise((r) => holder.once('listening', r));
      try {
        await postTarget(agent, release(`busy${RUN}`, [service(1, 'web'), service(2, 'taken', { ports: [`127.0.0.1:${port}:80`] })]));
        await eventually(async () => (await status(agent.url)).appState === 'failed', 60_000, 'the start to fail');
        assert.equal(await healthy(agent), 200);
      } finally {
        holder.close();
      }
      await engine.down();
      await eventually(async () => (await healthy(agent)) === 500, 60_000, '/v1/healthy to say 500 once the engine is gone');
      await engine.up();
      await eventually(async () => (await healthy(agent)) === 200, 60_000, '/v1/healthy to say 200 once the engine is back');
    });
  });
});
