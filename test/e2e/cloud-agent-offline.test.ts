/**
 * The agent in cloud mode while its server cannot be reached (real agent binary, real engine; the
 * server is simply not there, which is what offline looks like to a device): it starts, says why
 * once, keeps trying, and a restart runs the last release it was given without the server.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cleanupAgent, eventually, freePort, startAgent, status, type TestAgent } from '../support/agent.js';
import { runCli } from '../support/cli.js';
import { BASE_AMD64, ensureBaseImages } from '../support/engine.js';
import { scratchDir } from '../support/tmp.js';

const RUN = randomBytes(3).toString('hex');

function readConfig(dir: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
}

describe('agent cloud: the server unreachable', function () {
  const agents: TestAgent[] = [];
  before(async () => {
    await ensureBaseImages();
  });
  afterEach(async () => {
    for (const a of agents.splice(0)) {
      await a.kill();
      await cleanupAgent(a.uuid);
    }
  });

  it('a new device keeps trying to register, says why once, and serves its API meanwhile', async () => {
    const dataDir = scratchDir('skiff-cloud-agent-');
    const closed = await freePort(); // nothing listens there
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ apiEndpoint: `http://127.0.0.1:${closed}`, apiKey: 'p'.repeat(32), applicationId: 1, deviceType: 'genericx86-64-ext' }));
    const agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')] });
    agents.push(agent);
    await eventually(async () => /Cloud: registration: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\); retrying/.test(agent.output()), 15_000, 'the registration failure in the log');
    assert.match(agent.output(), /Cloud mode: server http:\/\/127\.0\.0\.1/);
    assert.equal((await fetch(`${agent.url}/ping`)).status, 200);
    const config = readConfig(dataDir);
    assert.equal(config.apiKey, 'p'.repeat(32), 'the provisioning key is kept until registration succeeds');
    assert.equal(config.registered_at, undefined);
    assert.equal(agent.output().match(/cannot reach/g)?.length, 1, 'said once, not on every retry');
  });

  it('an apiEndpoint that is not a URL: the agent says so and exits (usage), before serving anything', async () => {
    const dataDir = scratchDir('skiff-cloud-agent-');
    const file = path.join(dataDir, 'config.json');
    writeFileSync(file, JSON.stringify({ apiEndpoint: 'cloud.example.com', apiKey: 'p'.repeat(32), deviceType: 'genericx86-64-ext' }));
    const port = await freePort();
    const result = await runCli(['agent', '--data-dir', dataDir, '--config', file, '--listen-address', '127.0.0.1', '--listen-port', String(port), '--engine-port', '0', '--no-advertise']);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /apiEndpoint 'cloud\.example\.com' is not a URL/);
    assert.match(result.stderr, /remove it to run in local mode/);
  });

  it('a registered device restarted while the server is down starts its last release', async () => {
    const dataDir = scratchDir('skiff-cloud-agent-');
    const first = await startAgent({ dataDir });
    agents.push(first);
    const commit = `c${RUN}`;
    const target = {
      local: { name: `cloud-${RUN}`, config: {}, apps: { 1: { name: `cloud${RUN}`, commit, releaseId: commit, services: { 1: { serviceName: 'main', serviceId: 1, imageId: 1, image: BASE_AMD64, command: ['sh', '-c', "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"] } } } } },
      dependent: { apps: {}, devices: {} },
    };
    const res = await fetch(`${first.url}/v2/local/target-state`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(target) });
    assert.equal(res.status, 200, await res.text());
    await eventually(async () => (await status(first.url)).release === commit, 60_000, 'the release applied');
    await first.kill();
    agents.splice(0);
    // The device lost its containers (a new engine data partition, say); it registered long ago and its server is away.
    await cleanupAgent(first.uuid);
    const closed = await freePort();
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...readConfig(dataDir), apiEndpoint: `http://127.0.0.1:${closed}`, registered_at: Date.now(), deviceId: 1 }));
    const again = await startAgent({ dataDir, port: first.port, args: ['--config', path.join(dataDir, 'config.json')] });
    agents.push(again);
    await eventually(async () => {
      const s = await status(again.url);
      return s.appState === 'applied' && s.release === commit && s.containers.some((c) => c.serviceName === 'main' && c.status === 'Running');
    }, 60_000, 'the last release running again without the server');
    await eventually(async () => /Cloud: target state: |Cloud: cannot reach|cannot reach http/.test(again.output()), 15_000, 'the poll failure in the log');
    assert.doesNotMatch(again.output(), /registration/, 'a registered device does not register again');
  });
});
