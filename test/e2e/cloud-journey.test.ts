/**
 * The journey, every part real and driven as a user drives it: `skiff server` (SQLite, then
 * PostgreSQL) with its registry, the CLI as a subprocess, and two `skiff agent`s in cloud mode as
 * two devices on this machine's engine. Login, fleet create, `os configure --fleet` an image and
 * take its config.json for one device (`config generate` for the other), both register, `deploy` v1
 * runs on both, a fleet variable reaches the containers, `deploy` v2, one device pinned to v1, and
 * a failing v3 is rolled back on the device that tracks the fleet and reported to the server.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stopAgents, eventually, startAgent, type TestAgent } from '../support/agent.js';
import { runCli, type CliResult } from '../support/cli.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, makeProject, TEST_LABEL } from '../support/engine.js';
import { makeFatImage } from '../support/os-images.js';
import { ADMIN, dropPostgresDatabase, freshPostgresDatabase, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import type { Device, Fleet, Release } from '../../src/lib/api/resources.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `cloud-journey-${RUN}`;

function json<T>(r: CliResult): T {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { result: T }).result;
}

/** A one-service project whose image differs by `version`; `command` overrides the service's. */
function project(version: string, command?: string): string {
  const cmd = command ?? `trap 'exit 0' TERM; echo "$GREETING ${version}"; while :; do sleep 1 & wait $!; done`;
  return makeProject({
    'docker-compose.yml': `services:\n  main:\n    build: .\n    labels:\n      ${TEST_LABEL}: ${LABEL_VALUE}\n    environment:\n      GREETING: hello\n    command: ["sh", "-c", ${JSON.stringify(cmd)}]\n`,
    Dockerfile: `FROM ${BASE_AMD64}\nLABEL ${TEST_LABEL}=${LABEL_VALUE}\nRUN echo ${version}-${RUN}-${randomBytes(4).toString('hex')} > /version\n`,
  }, `journey${version}`);
}

for (const dialect of ['sqlite', 'postgres'] as const) describe(`the cloud journey through the CLI, with two devices (${dialect})`, function () {
  this.timeout(600_000);
  let server: StartedServer | undefined;
  let database: string | undefined;
  let home = '';
  const fleet = `journey-${RUN}`;
  const agents: TestAgent[] = [];
  const cli = (args: string[]) => runCli(args, { env: { HOME: home, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined } });

  const device = async (agent: TestAgent) => json<Device>(await cli(['device', 'info', agent.uuid, '--json']));
  /** Waits until the server shows the device running `commit` as applied, and the agent agrees. */
  const runs = async (agent: TestAgent, commit: string, what = `${agent.uuid.slice(0, 7)} running ${commit}`) => {
    let last: Device | undefined;
    await eventually(async () => {
      last = await device(agent);
      return last.runningRelease === commit && last.updateStatus === 'done' && (await mainContainer(agent))?.Labels['io.skiff.commit'] === commit;
    }, 120_000, what).catch((err: Error) => {
      throw new Error(`${err.message}\nserver shows: ${JSON.stringify(last)}\nagent printed: ${agent.output().slice(-3000)}`);
    });
  };
  // The engine's view, not the device API's: a provisioned device is not in development mode, so
  // its API needs the device key.
  const mainContainer = async (agent: TestAgent) => (await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`, 'io.balena.service-name=main'], status: ['running'] } }))[0];
  const envOf = async (agent: TestAgent): Promise<string[]> => {
    const c = await mainContainer(agent);
    return c ? (await docker.getContainer(c.Id).inspect()).Config.Env : [];
  };
  const deploy = async (version: string, command?: string): Promise<string> => json<Release>(await cli(['deploy', fleet, '--source', project(version, command), '--build', '--json'])).commit;

  before(async () => {
    await ensureBaseImages();
    database = dialect === 'postgres' ? freshPostgresDatabase() : undefined;
    server = await startServer({ database });
    home = scratchDir('skiff-journey-home-');
  });

  after(async () => {
    await stopAgents(agents);
    await server?.kill('SIGTERM');
    if (database) dropPostgresDatabase(database);
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('login, fleet, two devices provisioned, deploy, a variable, a second deploy, a pin, and a failing release rolled back', async () => {
    assert.ok(server);
    const passwordFile = path.join(scratchDir('skiff-journey-pw-'), 'pw');
    writeFileSync(passwordFile, `${ADMIN.password}\n`);
    json(await cli(['login', server.url, '--email', ADMIN.email, '--password-file', passwordFile, '--json']));
    assert.equal(json<Fleet>(await cli(['fleet', 'create', fleet, '--type', 'intel-nuc', '--json'])).arch, 'amd64');
    // Devices poll every second: a config variable of the fleet, as balena's poll interval is.
    json(await cli(['env', 'set', 'SKIFF_AGENT_POLL_INTERVAL', '1000', '--fleet', fleet, '--json']));

    // Device 1: an OS image configured for the fleet; its config.json is what the device boots with.
    const image = path.join(scratchDir('skiff-journey-img-'), 'boot.img');
    makeFatImage(image, { fat: 32, sizeMiB: 40, label: 'resin-boot' });
    assert.equal((await cli(['os', 'configure', image, '--fleet', fleet])).code, 0);
    const fromImage = json<Record<string, unknown>>(await cli(['config', 'read', '--drive', image, '--json']));
    // Device 2: config generate, as for a device that is not flashed.
    const generated = path.join(scratchDir('skiff-journey-cfg-'), 'config.json');
    json(await cli(['config', 'generate', '--fleet', fleet, '--output', generated, '--json']));
    for (const config of [fromImage, JSON.parse(readFileSync(generated, 'utf8')) as Record<string, unknown>]) {
      assert.equal(typeof config.apiKey, 'string', 'a provisioning key in config.json');
      const dataDir = scratchDir('skiff-journey-agent-');
      writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, appUpdatePollInterval: 1000 }));
      agents.push(await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')] }));
    }
    const [one, two] = agents;
    assert.ok(one && two);
    await eventually(async () => json<Device[]>(await cli(['device', 'list', '--fleet', fleet, '--json'])).length === 2, 60_000, 'both devices registered');

    const v1 = await deploy('v1');
    for (const agent of agents) await runs(agent, v1);

    json(await cli(['env', 'set', 'GREETING', `changed-${RUN}`, '--fleet', fleet, '--json']));
    for (const agent of agents) await eventually(async () => (await envOf(agent)).includes(`GREETING=changed-${RUN}`), 90_000, `${agent.uuid.slice(0, 7)} running with the fleet's variable`);

    const v2 = await deploy('v2');
    for (const agent of agents) await runs(agent, v2);

    json(await cli(['device', 'pin', one.uuid, v1, '--json']));
    await runs(one, v1, 'the pinned device back on v1');
    assert.equal((await device(two)).runningRelease, v2, 'the other device stays on the fleet release');

    const v3 = await deploy('v3', 'echo broken; exit 3');
    let last: Device | undefined;
    await eventually(async () => {
      last = await device(two);
      return last.rolledBackFrom?.commit === v3 && last.runningRelease === v2 && last.updateStatus === 'aborted';
    }, 120_000, `the server to show ${two.uuid.slice(0, 7)} rolled back from ${v3}`).catch((err: Error) => {
      throw new Error(`${err.message}\nserver shows: ${JSON.stringify(last)}\nagent printed: ${two.output().slice(-3000)}`);
    });
    // The report of the rollback may come while v2's container is being made again.
    await eventually(async () => (await mainContainer(two))?.Labels['io.skiff.commit'] === v2, 60_000, 'the device running the release before the failing one');
    assert.ok((await envOf(two)).includes(`GREETING=changed-${RUN}`));
    const pinned = await device(one);
    assert.deepEqual([pinned.runningRelease, pinned.pinnedRelease, pinned.rolledBackFrom], [v1, v1, null], 'the pinned device never saw v3');
    const human = await cli(['device', 'info', two.uuid]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(v3.slice(0, 7)), 'device info names the release it rolled back from');
  });
});
