/**
 * The agent in cloud mode end to end, with every part real: `skiff server` (SQLite, its own
 * registry), two `skiff agent`s as separate devices (own data dirs, ports and uuids) on this
 * machine's engine, and the server's API driven as the CLI drives it. They register with a
 * provisioning key, get a release deployed through the API, run it and report it; the server is
 * killed while they run (they keep running and report when it is back); an agent restarted while
 * the server is down starts its last release.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cleanupAgent, stopAgents, eventually, startAgent, status, type TestAgent } from '../support/agent.js';
import { BASE_AMD64, buildAndPush, cleanupImages, docker, ensureBaseImages, TEST_LABEL } from '../support/engine.js';
import { ADMIN, dropPostgresDatabase, freshPostgresDatabase, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `cloud-agent-${RUN}`;
for (const dialect of ['sqlite', 'postgres'] as const) describe(`agent cloud: end to end with the real server (${dialect})`, function () {
  let database: string | undefined;
  let server: StartedServer | undefined;
  let token = '';
  const fleet = `cloud${RUN}`;
  const agents: TestAgent[] = [];
  let commit = '';

  const api = async <T>(method: string, route: string, body?: unknown): Promise<T> => {
    if (!server) throw new Error('no server');
    const res = await fetch(`${server.url}${route}`, { method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };

  /** Builds the service's image (the busybox base and one file of its own), pushes it to the server's registry, and returns its digest. */
  const pushImage = async (repository: string, tag: string, content: string): Promise<string> => {
    const dir = scratchDir('skiff-cloud-img-');
    writeFileSync(path.join(dir, 'file.txt'), content);
    writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE_AMD64}\nCOPY file.txt /file.txt\nLABEL ${TEST_LABEL}=${LABEL_VALUE}\n`);
    return (await buildAndPush(dir, repository, tag, { username: ADMIN.email, password: token })).digest; // the devices must pull it
  };

  /** Creates a release of one service `main` through the API, pushes its image and finalizes it. */
  const deploy = async (greeting: string, settings: Record<string, unknown> = {}): Promise<string> => {
    const created = await api<{ release: { commit: string }; repositories: Record<string, string> }>('POST', `/fleets/${fleet}/releases`, {
      composition: { services: { main: { command: ['sh', '-c', "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"], environment: { GREETING: greeting }, labels: { [TEST_LABEL]: LABEL_VALUE }, ...settings } } },
    });
    const repository = created.repositories.main;
    assert.ok(repository);
    // Content of its own each time: the builder's cache would otherwise give two deploys (or the two dialects' runs) one layer.
    const digest = await pushImage(repository, created.release.commit, `${greeting} ${randomBytes(8).toString('hex')}`);
    await api('PATCH', `/releases/${created.release.commit}`, { status: 'success', images: { main: digest }, isFinal: true });
    return created.release.commit;
  };

  const device = (uuid: string) => api<{ runningRelease: string | null; updateStatus: string | null; updateError: string | null; rolledBackFrom: { commit: string; reason: string } | null; status: string; lastSeen: string | null; services: Array<{ name: string; status: string }> }>('GET', `/devices/${uuid}`);

  /** Waits for the server's view of a device to satisfy `check`; on timeout, says what the server and the agent last showed. */
  const deviceShows = async (agent: TestAgent, check: (d: Awaited<ReturnType<typeof device>>) => boolean, what: string, timeoutMs = 60_000): Promise<void> => {
    let last: unknown;
    await eventually(async () => {
      last = await device(agent.uuid);
      return check(last as Awaited<ReturnType<typeof device>>);
    }, timeoutMs, what).catch((err: Error) => {
      throw new Error(`${err.message}\nserver shows: ${JSON.stringify(last)}\nagent printed: ${agent.output().slice(-3000)}`);
    });
  };

  const startCloudAgent = async (dataDir: string, agentPort?: number): Promise<TestAgent> => {
    const agent = await startAgent({ dataDir, port: agentPort, args: ['--config', path.join(dataDir, 'config.json')] });
    agents.push(agent);
    return agent;
  };

  const running = (agent: TestAgent, release: string) => eventually(async () => {
    const s = await status(agent.url);
    return s.release === release && s.containers.some((c) => c.serviceName === 'main' && c.status === 'Running');
  }, 90_000, `agent ${agent.uuid.slice(0, 7)} running ${release}`);

  before(async function () {
    await ensureBaseImages();
    database = dialect === 'postgres' ? freshPostgresDatabase() : undefined;
    server = await startServer({ database });
    token = (await api<{ token: string }>('POST', '/auth/login', ADMIN)).token;
    await api('POST', '/fleets', { name: fleet, deviceType: 'genericx86-64-ext' });
    await api('PUT', '/variables', { fleet, name: 'SKIFF_AGENT_POLL_INTERVAL', value: '1000' });
  });

  after(async () => {
    await stopAgents(agents);
    await server?.kill('SIGTERM');
    if (database) dropPostgresDatabase(database);
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('two devices register with a provisioning key, run the release deployed through the API, and report it', async () => {
    for (let i = 0; i < 2; i++) {
      const config = await api<Record<string, unknown>>('POST', `/fleets/${fleet}/config`, { developmentMode: true });
      assert.equal(typeof config.apiKey, 'string');
      const dataDir = scratchDir('skiff-cloud-agent-');
      writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, appUpdatePollInterval: 1000 }));
      await startCloudAgent(dataDir);
    }
    for (const agent of agents) {
      await eventually(async () => {
        const config = JSON.parse(readFileSync(path.join(agent.dataDir, 'config.json'), 'utf8')) as Record<string, unknown>;
        return config.registered_at !== undefined && config.apiKey === undefined && typeof config.deviceId === 'number';
      }, 30_000, `agent ${agent.uuid.slice(0, 7)} registered (deviceId and registered_at written, provisioning key removed)`);
    }
    commit = await deploy('v1');
    for (const agent of agents) await running(agent, commit);
    for (const agent of agents) {
      await eventually(async () => {
        const d = await device(agent.uuid);
        return d.runningRelease === commit && d.updateStatus === 'done' && d.services.some((s) => s.name === 'main' && s.status === 'Running');
      }, 30_000, `the server to show ${agent.uuid.slice(0, 7)} running ${commit}`);
    }
  });

  it('the server killed: devices keep running; one restarted meanwhile starts its last release; they report when it is back', async () => {
    await server?.kill('SIGKILL');
    const [a, b] = agents;
    assert.ok(a && b);
    await eventually(async () => /cannot reach/.test(a.output()) && /cannot reach/.test(b.output()), 30_000, 'both agents noticing the server is gone');
    for (const agent of agents) await running(agent, commit);
    // A restarted while the server is down (its containers gone too): it starts the release it had.
    await a.kill();
    agents.splice(agents.indexOf(a), 1);
    await cleanupAgent(a.uuid);
    const a2 = await startCloudAgent(a.dataDir, a.port);
    await running(a2, commit);
    // B's state changes while offline: its service stopped through the local API.
    const stop = await fetch(`${b.url}/v2/applications/${(await api0(b)).appId}/stop-service`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ serviceName: 'main' }) });
    assert.equal(stop.status, 200, await stop.text());
    const back = Date.now();
    assert.ok(server);
    server = await startServer({ database, dataDir: server.dataDir, port: server.port });
    token = (await api<{ token: string }>('POST', '/auth/login', ADMIN)).token;
    await eventually(async () => {
      const d = await device(b.uuid);
      return d.services.some((s) => s.name === 'main' && s.status === 'Exited') && d.lastSeen !== null && Date.parse(d.lastSeen) >= back - 1000;
    }, 60_000, 'B reporting its stopped service once the server is back');
    await eventually(async () => {
      const d = await device(a2.uuid);
      return d.runningRelease === commit && d.status === 'online' && d.lastSeen !== null && Date.parse(d.lastSeen) >= back - 1000;
    }, 60_000, 'the restarted A polling and reporting once the server is back');
  });

  /** The environment of the agent's running `main` container. */
  const mainEnv = async (agent: TestAgent): Promise<string[]> => {
    const [c] = await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`], status: ['running'] } });
    return c ? (await docker.getContainer(c.Id).inspect()).Config.Env : [];
  };

  it('a fleet variable set through the API reaches every device\'s container', async () => {
    await api('PUT', '/variables', { fleet, name: 'GREETING', value: `changed-${RUN}` });
    for (const agent of agents) {
      await eventually(async () => (await mainEnv(agent)).includes(`GREETING=changed-${RUN}`), 60_000, `agent ${agent.uuid.slice(0, 7)} running with the new variable`);
      await running(agent, commit);
    }
  });

  it('a release whose service does not stay up is rolled back on the devices, reported, and not tried again', async () => {
    const bad = await deploy('v3', { command: ['sh', '-c', 'exit 3'] });
    for (const agent of agents) {
      await deviceShows(agent, (d) => d.rolledBackFrom?.commit === bad && d.runningRelease === commit && d.updateStatus === 'aborted', `the server to show ${agent.uuid.slice(0, 7)} rolled back from ${bad}`, 90_000);
      await running(agent, commit);
      assert.ok((await mainEnv(agent)).includes(`GREETING=changed-${RUN}`), 'back on the release as it ran, variable and all');
    }
    // Polls keep answering with the failed release: the device stays on the one that works. The
    // server's last-seen moving 3 s past the rollback means at least a few 1 s polls came meanwhile.
    const a = agents[0];
    assert.ok(a);
    const after = Date.now() + 3000;
    await deviceShows(a, (d) => d.lastSeen !== null && Date.parse(d.lastSeen) > after, 'polls after the rollback', 30_000);
    await running(a, commit);
    assert.equal(a.output().match(new RegExp(`Release ${bad} failed`, 'g'))?.length, 1, 'rolled back once, not in a loop');
  });

  it('a target the agent refuses is reported with the reason, and nothing changes', async () => {
    const refused = await deploy('v4', { mem_limit: 'lots' });
    for (const agent of agents) {
      await deviceShows(agent, (d) => d.updateStatus === 'rejected' && /mem_limit/.test(d.updateError ?? '') && d.runningRelease === commit, `the server to show ${agent.uuid.slice(0, 7)} refusing ${refused}`);
      await running(agent, commit);
      assert.match(agent.output(), /Cloud: refused the target state \(nothing changed\): .*mem_limit/);
    }
  });

  it('a new release downloads only the layer that changed, and replaces the rolled-back one', async () => {
    const devices = agents.slice(0, 2);
    const from = devices.map((agent) => agent.output().length);
    const next = await deploy('v5');
    for (const agent of devices) {
      await running(agent, next);
      await deviceShows(agent, (d) => d.runningRelease === next && d.updateStatus === 'done' && d.rolledBackFrom === null, `the server to show ${agent.uuid.slice(0, 7)} running ${next}`);
    }
    // The devices share one engine: the one that pulls second may find the image there already.
    // The first may have it by delta (issue 12; cloud-delta.test.ts): then nothing is pulled at all.
    const pulled = devices.flatMap((agent, i) => agent.output().slice(from[i]).match(/Cloud: pulled main \([^)]*\)/g) ?? []);
    const byDelta = devices.some((agent, i) => /Cloud: main updated by delta/.test(agent.output().slice(from[i])));
    assert.ok(byDelta || pulled.includes('Cloud: pulled main (1 of 2 layers downloaded)'), `a device downloaded the new layer alone: ${pulled.join('; ')}`);
    // The other may have pulled at the same moment, waiting on the first's download of the same
    // layer (0 of 2 of its own): never may the base layer be downloaded again.
    for (const line of pulled) assert.match(line, /^Cloud: pulled main \(([01] of 2 layers downloaded|the engine had it already)\)$/, 'the base layer was there already');
    commit = next;
  });

  it('a newer target cancels a download in progress', async () => {
    const [a, b] = agents;
    assert.ok(a && b && server?.child.pid);
    for (const agent of [a, b]) await api('PATCH', `/devices/${agent.uuid}`, { pinnedRelease: commit });
    const big = await deploy('v6'); // the fleet's latest now, but both devices are pinned to the one they run
    // The registry stops answering (SIGSTOP: not dead, so nobody restarts it): a pull now hangs.
    const registryPid = execFileSync('pgrep', ['-P', String(server.child.pid)], { encoding: 'utf8' }).split('\n').map(Number)
      .find((pid) => pid > 0 && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'docker-registry');
    assert.ok(registryPid, 'the server runs its registry as a child');
    process.kill(registryPid, 'SIGSTOP');
    try {
      await api('PATCH', `/devices/${a.uuid}`, { pinnedRelease: null });
      await deviceShows(a, (d) => d.updateStatus === 'downloading', `${a.uuid.slice(0, 7)} downloading ${big}`, 30_000);
      await api('PATCH', `/devices/${a.uuid}`, { pinnedRelease: commit });
      await eventually(async () => says(a, `Cloud: a newer target arrived while release ${big} downloaded; taking it instead`), 30_000, 'the download given up for the newer target');
      await deviceShows(a, (d) => d.updateStatus === 'done' && d.runningRelease === commit, `${a.uuid.slice(0, 7)} back to ${commit}`, 30_000);
      await running(a, commit);
    } finally {
      process.kill(registryPid, 'SIGCONT');
    }
  });

  it('a revoked provisioning key is a clear line in the log, retried, never a crash', async () => {
    const key = await api<{ id: number; key: string }>('POST', `/fleets/${fleet}/provisioning-keys`, {});
    await api('DELETE', `/fleets/${fleet}/provisioning-keys/${key.id}`);
    const config = await api<Record<string, unknown>>('POST', `/fleets/${fleet}/config`, { developmentMode: true });
    const dataDir = scratchDir('skiff-cloud-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, apiKey: key.key, appUpdatePollInterval: 1000 }));
    const agent = await startCloudAgent(dataDir);
    await eventually(async () => /registration refused: the provisioning key \(apiKey in config.json\) is invalid, expired or revoked \(401\)/.test(agent.output()), 30_000, 'the refusal in the log');
    const before = agent.output();
    assert.equal(agent.child.exitCode, null, 'still running');
    assert.equal((await fetch(`${agent.url}/ping`)).status, 200);
    const saved = JSON.parse(readFileSync(path.join(dataDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(saved.apiKey, key.key, 'the key is kept: a new config.json is the fix');
    assert.equal(saved.registered_at, undefined);
    assert.equal(before.match(/registration refused/g)?.length, 1, 'said once while it keeps failing the same way');
  });

  it('a server that accepts and never answers holds nothing: the agent stops at once on SIGTERM', async () => {
    assert.ok(server?.child.pid);
    const config = await api<Record<string, unknown>>('POST', `/fleets/${fleet}/config`, { developmentMode: true });
    const dataDir = scratchDir('skiff-cloud-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, appUpdatePollInterval: 1000 }));
    process.kill(server.child.pid, 'SIGSTOP'); // the kernel still accepts connections; nothing answers
    try {
      const agent = await startCloudAgent(dataDir);
      await eventually(async () => says(agent, 'Cloud mode: server'), 15_000, 'cloud mode started (its registration now waits on the server)');
      const started = Date.now();
      await agent.kill(); // throws when the agent needed SIGKILL
      agents.splice(agents.indexOf(agent), 1);
      assert.ok(Date.now() - started < 10_000, `stopped in ${Date.now() - started} ms`);
    } finally {
      process.kill(server.child.pid, 'SIGCONT');
    }
  });
});

/** Whether the agent printed this line. */
function says(agent: TestAgent, line: string): boolean {
  return agent.output().includes(line);
}

/** The app id the agent runs (from its local target state). */
async function api0(agent: TestAgent): Promise<{ appId: number }> {
  const target = (await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: Record<string, unknown> } } };
  return { appId: Number(Object.keys(target.state.local.apps)[0]) };
}
