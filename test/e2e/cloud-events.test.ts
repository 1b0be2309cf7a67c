/**
 * The device event channel end to end, every part real: `skiff server` (SQLite; and two replicas
 * on one PostgreSQL database), `skiff agent`s in cloud mode as subprocesses, the CLI as a user
 * runs it. The agents poll only every 60 s, so only the channel can explain a change that arrives
 * within seconds; one agent sits behind a proxy that refuses WebSocket upgrades and gets its
 * changes by polling (3 s). Device actions go through the server to the device and back.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { cleanupAgent, stopAgents, eventually, startAgent, type TestAgent } from '../support/agent.js';
import { runCli, type CliResult } from '../support/cli.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, makeProject, TEST_LABEL } from '../support/engine.js';
import { noUpgradeProxy, type NoUpgradeProxy } from '../support/no-upgrade-proxy.js';
import { ADMIN, createUser, dropPostgresDatabase, freshPostgresDatabase, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `cloud-events-${RUN}`;

function json<T>(r: CliResult): T {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { result: T }).result;
}

function project(version: string): string {
  const cmd = `trap 'exit 0' TERM; echo "$GREETING ${version}"; while :; do sleep 1 & wait $!; done`;
  return makeProject({
    'docker-compose.yml': `services:\n  main:\n    build: .\n    labels:\n      ${TEST_LABEL}: ${LABEL_VALUE}\n    environment:\n      GREETING: hello\n    command: ["sh", "-c", ${JSON.stringify(cmd)}]\n`,
    Dockerfile: `FROM ${BASE_AMD64}\nLABEL ${TEST_LABEL}=${LABEL_VALUE}\nRUN echo ${version}-${RUN}-${randomBytes(4).toString('hex')} > /version\n`,
  }, `events${version}`);
}

/** The agent's system lines are `<ISO time> <message>`: the time of the first line matching `pattern` after `since`. */
function loggedAt(agent: TestAgent, pattern: RegExp, since: number): number | undefined {
  for (const line of agent.output().split('\n')) {
    const m = /^(\d{4}-\d\d-\d\dT[\d:.]+Z) (.*)$/.exec(line.trim());
    if (!m) continue;
    const at = Date.parse(m[1] ?? '');
    if (at >= since && pattern.test(m[2] ?? '')) return at;
  }
  return undefined;
}

const mainContainer = async (agent: TestAgent) => (await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`, 'io.balena.service-name=main'], status: ['running'] } }))[0];
const envOf = async (agent: TestAgent): Promise<string[]> => {
  const c = await mainContainer(agent);
  return c ? (await docker.getContainer(c.Id).inspect()).Config.Env : [];
};
const deviceKey = (agent: TestAgent): string => (JSON.parse(readFileSync(path.join(agent.dataDir, 'config.json'), 'utf8')) as { deviceApiKey: string }).deviceApiKey;

/** Opens the event channel as `key` for `uuid`: the HTTP status of a refusal, or 101 once open (closed again at once). */
function channelStatus(serverUrl: string, uuid: string, key: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${serverUrl.replace(/^http/, 'ws')}/device/v3/${uuid}/events`, key === undefined ? {} : { headers: { authorization: `Bearer ${key}` } });
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('open', () => {
      resolve(101);
      ws.close();
    });
    ws.on('error', (err) => {
      if (!/closed before the connection/.test(err.message)) reject(err);
    });
  });
}

/** The environment reaching `agent`'s container after `set` returned: ms, asserted under `limitMs`. */
async function timeToContainer(agent: TestAgent, value: string, set: () => Promise<unknown>, limitMs: number, what: string): Promise<number> {
  await set();
  const start = Date.now();
  await eventually(async () => (await envOf(agent)).includes(`GREETING=${value}`), limitMs + 30_000, what).catch((err: Error) => {
    throw new Error(`${err.message}\nagent printed: ${agent.output().slice(-3000)}`);
  });
  const ms = Date.now() - start;
  assert.ok(ms < limitMs, `${what} took ${ms} ms (limit ${limitMs} ms)\nagent printed: ${agent.output().slice(-2000)}`);
  return ms;
}

describe('device event channel: instant updates and device actions (sqlite)', function () {
  this.timeout(600_000);
  let server: StartedServer | undefined;
  let proxy: NoUpgradeProxy | undefined;
  let home = '';
  const fleet = `events-${RUN}`;
  const agents: TestAgent[] = [];
  let a: TestAgent | undefined;
  let b: TestAgent | undefined;
  let offline: TestAgent | undefined;
  const rebootFile = path.join(scratchDir('skiff-events-host-'), 'rebooted');
  const cli = (args: string[]) => runCli(args, { env: { HOME: home, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined } });

  /** A device of the fleet from `config generate`, polling every `pollMs`, through `endpoint` when given. */
  const provision = async (pollMs: number, options: { endpoint?: string; args?: string[] } = {}): Promise<TestAgent> => {
    const file = path.join(scratchDir('skiff-events-cfg-'), 'config.json');
    json(await cli(['config', 'generate', '--fleet', fleet, '--output', file, '--json']));
    const config = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    const dataDir = scratchDir('skiff-events-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, appUpdatePollInterval: pollMs, ...(options.endpoint ? { apiEndpoint: options.endpoint } : {}) }));
    const agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json'), ...(options.args ?? [])] });
    agents.push(agent);
    await eventually(async () => (JSON.parse(readFileSync(path.join(dataDir, 'config.json'), 'utf8')) as Record<string, unknown>).registered_at !== undefined, 30_000, `agent ${agent.uuid.slice(0, 7)} registered`);
    return agent;
  };
  const runsCommit = (agent: TestAgent, commit: string, timeoutMs: number) => eventually(async () => (await mainContainer(agent))?.Labels['io.skiff.commit'] === commit, timeoutMs, `${agent.uuid.slice(0, 7)} running ${commit}`)
    .catch((err: Error) => {
      throw new Error(`${err.message}\nagent printed: ${agent.output().slice(-3000)}`);
    });

  before(async () => {
    await ensureBaseImages();
    server = await startServer();
    home = scratchDir('skiff-events-home-');
    const passwordFile = path.join(scratchDir('skiff-events-pw-'), 'pw');
    writeFileSync(passwordFile, `${ADMIN.password}\n`);
    json(await cli(['login', server.url, '--email', ADMIN.email, '--password-file', passwordFile, '--json']));
    json(await cli(['fleet', 'create', fleet, '--type', 'intel-nuc', '--json']));
    proxy = await noUpgradeProxy(server.url);
  });

  after(async () => {
    await stopAgents(agents);
    await proxy?.close();
    await server?.kill('SIGTERM');
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('a new release reaches a connected agent at once, though it polls every 60 s; one behind a proxy that blocks the channel gets it by polling', async () => {
    a = await provision(60_000, { args: ['--reboot-command', `echo rebooted > ${rebootFile}`, '--shutdown-command', 'echo no power switch here >&2; exit 3'] });
    b = await provision(3000, { endpoint: proxy?.url });
    await eventually(async () => /event channel connected/.test(a?.output() ?? ''), 30_000, 'A connecting its event channel');
    await eventually(async () => (proxy?.refused() ?? 0) > 0 && /event channel not connected/.test(b?.output() ?? ''), 30_000, 'B\'s channel refused by the proxy');
    const deployed = await cli(['deploy', fleet, '--source', project('v1'), '--build', '--json']);
    const done = Date.now();
    const commit = json<{ commit: string }>(deployed).commit;
    await runsCommit(a, commit, 60_000);
    const fetched = loggedAt(a, new RegExp(`Cloud: new target \\(release ${commit}\\)`), done - 5000);
    assert.ok(fetched !== undefined, `A logged the new target\n${a.output().slice(-2000)}`);
    const latency = fetched - done;
    // The deploy command exits after the release is final; the fetch may come before that (negative).
    console.log(`      A fetched the new target ${latency} ms after the deploy command exited (poll interval 60 s)`);
    assert.ok(latency < 3000, `A fetched the release ${latency} ms after the deploy returned`);
    await runsCommit(b, commit, 60_000);
  });

  it('a fleet variable (skiff env set) reaches the connected agent\'s container within a second or so, and the blocked one\'s within its poll interval', async () => {
    assert.ok(a && b);
    const ms = await timeToContainer(a, `fast-${RUN}`, async () => json(await cli(['env', 'set', 'GREETING', `fast-${RUN}`, '--fleet', fleet, '--json'])), 3000, 'the variable reaching A\'s container');
    console.log(`      env set → A's container: ${ms} ms`);
    await eventually(async () => (await envOf(b as TestAgent)).includes(`GREETING=fast-${RUN}`), 3000 + 30_000, 'the variable reaching B by polling');
    // B never had a channel: what reached it came by poll.
    assert.doesNotMatch(b.output(), /event channel connected/);
  });

  it('a device variable reaches only that device at once', async () => {
    assert.ok(a);
    const ms = await timeToContainer(a, `own-${RUN}`, async () => json(await cli(['env', 'set', 'GREETING', `own-${RUN}`, '--device', a?.uuid ?? '', '--json'])), 3000, 'the device variable reaching A');
    console.log(`      env set --device → A's container: ${ms} ms`);
  });

  it('a pin and an unpin reach the device at once; a newer target stops a download in progress at once', async () => {
    assert.ok(a && server);
    const v1 = (await mainContainer(a))?.Labels['io.skiff.commit'] ?? '';
    assert.ok(v1);
    json(await cli(['device', 'pin', a.uuid, v1, '--json']));
    const v2 = json<{ commit: string }>(await cli(['deploy', fleet, '--source', project('v2'), '--build', '--json'])).commit;
    // The registry stops answering (SIGSTOP: not dead, so nobody restarts it): a pull now hangs.
    const registryPid = execFileSync('pgrep', ['-P', String(server.child.pid)], { encoding: 'utf8' }).split('\n').map(Number)
      .find((pid) => pid > 0 && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'docker-registry');
    assert.ok(registryPid, 'the server runs its registry as a child');
    process.kill(registryPid, 'SIGSTOP');
    try {
      const unpinned = Date.now();
      json(await cli(['device', 'track-fleet', a.uuid, '--json']));
      await eventually(async () => loggedAt(a as TestAgent, new RegExp(`Cloud: new target \\(release ${v2}\\)`), unpinned) !== undefined, 5000, `A starting to download ${v2} (poll interval 60 s)`);
      const pinned = Date.now();
      json(await cli(['device', 'pin', a.uuid, v1, '--json']));
      await eventually(async () => loggedAt(a as TestAgent, new RegExp(`Cloud: a newer target arrived while release ${v2} downloaded; taking it instead`), pinned) !== undefined, 5000, 'the download given up for the newer target at once')
        .catch((err: Error) => {
          throw new Error(`${err.message}\nagent printed: ${a?.output().slice(-3000)}`);
        });
    } finally {
      process.kill(registryPid, 'SIGCONT');
    }
    await runsCommit(a, v1, 30_000);
    json(await cli(['device', 'track-fleet', a.uuid, '--json']));
    await runsCommit(a, v2, 60_000);
  });

  it('the channel refuses a missing or unknown key (401), another device\'s uuid (404), and a plain GET (400)', async () => {
    assert.ok(server && a && b);
    assert.equal(await channelStatus(server.url, a.uuid, undefined), 401);
    assert.equal(await channelStatus(server.url, a.uuid, 'not-a-device-key'), 401);
    assert.equal(await channelStatus(server.url, b.uuid, deviceKey(a)), 404);
    const plain = await fetch(`${server.url}/device/v3/${a.uuid}/events`, { headers: { authorization: `Bearer ${deviceKey(a)}` } });
    assert.equal(plain.status, 400);
    assert.match(((await plain.json()) as { message: string }).message, /WebSocket/);
  });

  it('identify, restart (all, one service), purge and reboot through the cloud: the CLI waits for the device\'s answer', async () => {
    assert.ok(a);
    const uuid = a.uuid;
    const identified = json<{ ok: boolean; message: string }>(await cli(['device', 'identify', uuid, '--json']));
    assert.equal(identified.ok, true);
    await eventually(async () => new RegExp(`Identify: this is device ${uuid.slice(0, 7)}`).test(a?.output() ?? ''), 10_000, 'the identify line in the agent\'s log');

    const startedAt = async () => (await docker.getContainer((await mainContainer(a as TestAgent))?.Id ?? '').inspect()).State.StartedAt;
    const before = await startedAt();
    const restarted = await cli(['device', 'restart', uuid, '--service', 'main']);
    assert.equal(restarted.code, 0, restarted.stderr);
    assert.match(restarted.stderr, /restarted service 'main'/);
    assert.notEqual(await startedAt(), before, 'the container was restarted');
    const all = await cli(['device', 'restart', uuid]);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stderr, /restarted every service/);

    const purged = json<{ ok: boolean }>(await cli(['device', 'purge', uuid, '--yes', '--json']));
    assert.equal(purged.ok, true);
    await eventually(async () => (await mainContainer(a as TestAgent)) !== undefined, 60_000, 'the service running again after the purge');

    const rebooted = await cli(['device', 'reboot', uuid]);
    assert.equal(rebooted.code, 0, rebooted.stderr);
    assert.equal(readFileSync(rebootFile, 'utf8').trim(), 'rebooted', 'the agent ran its reboot command');
  });

  it('a device that refuses or fails, an unknown service, an offline device and a bad request each end with one line and their exit code', async () => {
    assert.ok(a && server);
    const shutdown = await cli(['device', 'shutdown', a.uuid]);
    assert.equal(shutdown.code, 9, shutdown.stderr);
    assert.match(shutdown.stderr, /Shutdown failed \(exit 3\): no power switch here/);

    const unknown = await cli(['device', 'restart', a.uuid, '--service', 'nope']);
    assert.equal(unknown.code, 9, unknown.stderr);
    assert.match(unknown.stderr, /no service 'nope'/);

    offline = await provision(60_000);
    await offline.kill();
    const gone = await cli(['device', 'identify', offline.uuid]);
    assert.equal(gone.code, 14, gone.stderr);
    assert.match(gone.stderr, /is not connected to the server \(offline\?\)/);
    assert.equal(gone.stderr.trim().split('\n').filter((l) => /not connected/.test(l)).length, 1, gone.stderr);

    const missing = await cli(['device', 'reboot', 'abcdef0123456']);
    assert.equal(missing.code, 12, missing.stderr);
    const address = await cli(['device', 'reboot', '192.168.1.23']);
    assert.equal(address.code, 2, address.stderr);
    assert.match(address.stderr, /not a device uuid/);
    const twoServices = await cli(['device', 'restart', a.uuid, '--service', 'a', '--service', 'b']);
    assert.equal(twoServices.code, 2, twoServices.stderr);

    // The API's own refusals: a field that does not go with the action, an unknown action, another user's device.
    const token = (JSON.parse(readFileSync(path.join(home, '.skiff', 'credentials.json'), 'utf8')) as { token: string }).token;
    const post = (body: unknown, as = token) => fetch(`${server?.url}/devices/${a?.uuid}/actions`, { method: 'POST', headers: { authorization: `Bearer ${as}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const withService = await post({ action: 'reboot', service: 'main' });
    assert.equal(withService.status, 400);
    assert.equal(((await withService.json()) as { field?: string }).field, 'service');
    const badAction = await post({ action: 'explode' });
    assert.equal(badAction.status, 400);
    const other = await createUser(server.url);
    assert.equal((await post({ action: 'identify' }, other.token)).status, 404);
  });

  it('an action the device reads only after the CLI gave up (the agent was frozen) is not done late', async () => {
    assert.ok(a?.child.pid);
    const identifies = () => (a?.output().match(/Identify: this is device/g) ?? []).length;
    const before = identifies();
    a.child.kill('SIGSTOP');
    let resumed = false;
    try {
      const sent = Date.now();
      const silent = await cli(['device', 'identify', a.uuid]);
      assert.equal(silent.code, 13, silent.stderr);
      assert.match(silent.stderr, /did not answer within 20 s/);
      // Not a condition to poll: the action must be older than its validity (25 s) when the agent reads it.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, sent + 27_000 - Date.now())));
      a.child.kill('SIGCONT');
      resumed = true;
      await eventually(async () => /ignored a identify action that arrived \d+ s after it was sent/.test(a?.output() ?? ''), 30_000, 'the agent refusing the stale action');
      assert.equal(identifies(), before, 'the stale identify was not done');
    } finally {
      if (!resumed) a.child.kill('SIGCONT');
    }
    // The channel still works for the next action.
    await eventually(async () => (await cli(['device', 'identify', a?.uuid ?? ''])).code === 0, 90_000, 'identify answered again after the freeze');
  });

  it('the event connection dropped (server restarted): the agent reconnects and changes arrive at once again', async () => {
    assert.ok(server && a);
    const connects = () => (a?.output().match(/event channel connected/g) ?? []).length;
    const before = connects();
    const { dataDir, port } = server;
    await server.kill('SIGTERM');
    await eventually(async () => /event channel (lost|not connected)/.test(a?.output() ?? ''), 30_000, 'A noticing the channel dropped');
    server = await startServer({ dataDir, port });
    await eventually(async () => connects() > before, 90_000, 'A reconnecting its event channel');
    const ms = await timeToContainer(a, `again-${RUN}`, async () => json(await cli(['env', 'set', 'GREETING', `again-${RUN}`, '--device', a?.uuid ?? '', '--json'])), 3000, 'a variable after the reconnect');
    console.log(`      after reconnect, env set → A's container: ${ms} ms`);
  });
});

describe('device event channel across two replicas on PostgreSQL', function () {
  this.timeout(600_000);
  let database = '';
  let one: StartedServer | undefined;
  let two: StartedServer | undefined;
  let agent: TestAgent | undefined;
  let homeOne = '';
  let homeTwo = '';
  const fleet = `replicas-${RUN}`;
  const cliOn = (home: string) => (args: string[]) => runCli(args, { env: { HOME: home, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined } });

  before(async () => {
    await ensureBaseImages();
    database = freshPostgresDatabase();
    one = await startServer({ database });
    two = await startServer({ database });
    const passwordFile = path.join(scratchDir('skiff-events-pw-'), 'pw');
    writeFileSync(passwordFile, `${ADMIN.password}\n`);
    homeOne = scratchDir('skiff-events-home1-');
    homeTwo = scratchDir('skiff-events-home2-');
    json(await cliOn(homeOne)(['login', one.url, '--email', ADMIN.email, '--password-file', passwordFile, '--json']));
    json(await cliOn(homeTwo)(['login', two.url, '--email', ADMIN.email, '--password-file', passwordFile, '--json']));
  });

  after(async () => {
    if (agent) {
      await agent.kill().catch(() => {});
      await cleanupAgent(agent.uuid);
    }
    await one?.kill('SIGTERM');
    await two?.kill('SIGTERM');
    if (database) dropPostgresDatabase(database);
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('an agent connected to replica 1 gets a variable set through replica 2 at once, and an action sent through replica 2', async () => {
    const cli1 = cliOn(homeOne);
    const cli2 = cliOn(homeTwo);
    json(await cli1(['fleet', 'create', fleet, '--type', 'intel-nuc', '--json']));
    const file = path.join(scratchDir('skiff-events-cfg-'), 'config.json');
    json(await cli1(['config', 'generate', '--fleet', fleet, '--output', file, '--json']));
    const dataDir = scratchDir('skiff-events-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...(JSON.parse(readFileSync(file, 'utf8')) as object), appUpdatePollInterval: 60_000 }));
    agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')] });
    await eventually(async () => /event channel connected/.test(agent?.output() ?? ''), 30_000, 'the agent connecting to replica 1');
    // The release is made through replica 1, whose registry holds its image.
    const commit = json<{ commit: string }>(await cli1(['deploy', fleet, '--source', project('r1'), '--build', '--json'])).commit;
    await eventually(async () => (await mainContainer(agent as TestAgent))?.Labels['io.skiff.commit'] === commit, 90_000, 'the agent running the release');
    const ms = await timeToContainer(agent, `crossed-${RUN}`, async () => json(await cli2(['env', 'set', 'GREETING', `crossed-${RUN}`, '--fleet', fleet, '--json'])), 3000, 'a variable set through replica 2 reaching the agent on replica 1');
    console.log(`      env set on replica 2 → container of a device on replica 1: ${ms} ms`);

    const identified = await cli2(['device', 'identify', agent.uuid]);
    assert.equal(identified.code, 0, identified.stderr);
    assert.match(identified.stderr, /identify line/);
    await eventually(async () => /Identify: this is device/.test(agent?.output() ?? ''), 10_000, 'the identify line on the device');
  });
});

describe('device event channel over TLS (wss, a private CA as the agent\'s HTTPS uses it)', function () {
  this.timeout(300_000);
  let server: StartedServer | undefined;
  let agent: TestAgent | undefined;

  after(async () => {
    if (agent) {
      await agent.kill().catch(() => {});
      await cleanupAgent(agent.uuid);
    }
    await server?.kill('SIGTERM');
  });

  it('the agent trusts the server through NODE_EXTRA_CA_CERTS for its socket too, and answers an action', async () => {
    const dir = scratchDir('skiff-events-tls-');
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    server = await startServer({ tls: { cert, key } });
    assert.match(server.url, /^https:/);
    const home = scratchDir('skiff-events-home-tls-');
    const env = { HOME: home, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined, NODE_EXTRA_CA_CERTS: cert };
    const cli = (args: string[]) => runCli(args, { env });
    const passwordFile = path.join(dir, 'pw');
    writeFileSync(passwordFile, `${ADMIN.password}\n`);
    json(await cli(['login', server.url, '--email', ADMIN.email, '--password-file', passwordFile, '--json']));
    const fleet = `tls-${RUN}`;
    json(await cli(['fleet', 'create', fleet, '--type', 'intel-nuc', '--json']));
    const file = path.join(dir, 'config.json');
    json(await cli(['config', 'generate', '--fleet', fleet, '--output', file, '--json']));
    const dataDir = scratchDir('skiff-events-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...(JSON.parse(readFileSync(file, 'utf8')) as object), appUpdatePollInterval: 60_000 }));
    agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')], env: { NODE_EXTRA_CA_CERTS: cert } });
    await eventually(async () => /event channel connected/.test(agent?.output() ?? ''), 30_000, 'the agent connecting over wss').catch((err: Error) => {
      throw new Error(`${err.message}\nagent printed: ${agent?.output().slice(-2000)}`);
    });
    const identified = await cli(['device', 'identify', agent.uuid]);
    assert.equal(identified.code, 0, identified.stderr);
    assert.match(identified.stderr, /identify line/);
  });
});
