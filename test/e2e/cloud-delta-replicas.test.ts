/**
 * A delta update across replicas, every part real: two `skiff server` replicas on one PostgreSQL
 * database (each its own data dir and built-in registry, the images pushed to both), one
 * `skiff agent` in cloud mode talking to replica B. Replica A makes the delta (B is held with
 * SIGSTOP while the release succeeds, so only A's worker can claim it); the agent then updates
 * through B, which has no delta files: B answers ready and relays the layer download to A. The
 * device runs the release's exact image, says it came by delta, and the bytes are counted once, by B.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Device, Release } from '../../src/lib/api/resources.js';
import { eventually, startAgent, status, stopAgents, type TestAgent } from '../support/agent.js';
import { cleanupImages, docker, ensureBaseImages, TEST_LABEL } from '../support/engine.js';
import { writeDeltaProject } from '../support/delta-project.js';
import { dropPostgresDatabases, postgresUrl } from '../support/postgres.js';
import { ADMIN, api, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `cloud-delta-replicas-${RUN}`;
const DATA_BYTES = 8 * 1024 * 1024;

describe('agent cloud: a delta made on one replica, downloaded through another (real servers, agent, engine)', function () {
  this.timeout(300_000);
  let a: StartedServer | undefined;
  let b: StartedServer | undefined;
  let agent: TestAgent | undefined;
  let token = '';
  const fleet = `deltarep${RUN}`;
  const project = scratchDir('skiff-delta-replicas-project-');
  let version = 0;

  /** A call through `server` as the user; throws unless 2xx. */
  const call = async <T>(server: StartedServer | undefined, method: string, route: string, body?: unknown): Promise<T> => {
    assert.ok(server);
    const res = await api(server.url, method, route, { token, ...(body === undefined ? {} : { body }) });
    if (res.status >= 300) throw new Error(`${method} ${route}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body as T;
  };

  const nextProject = (): void => writeDeltaProject(project, ++version, DATA_BYTES, LABEL_VALUE);

  /** Pushes the local image `name` to its registry; answers the manifest digest. */
  const push = async (name: string, tag: string): Promise<string> => {
    const host = name.split('/')[0] ?? '';
    const stream = await docker.getImage(`${name}:${tag}`).push({ tag, authconfig: { username: ADMIN.email, password: token, serveraddress: host } });
    const lines = await new Promise<Array<{ aux?: { Digest?: string }; error?: string }>>((resolve, reject) => docker.modem.followProgress(stream, (err: Error | null, o: Array<{ aux?: { Digest?: string }; error?: string }>) => (err ? reject(err) : resolve(o))));
    const failed = lines.find((l) => l.error);
    if (failed) throw new Error(`push of ${name} failed: ${failed.error}`);
    const digest = lines.find((l) => l.aux?.Digest)?.aux?.Digest;
    assert.ok(digest, 'the push gave a digest');
    return digest;
  };

  /**
   * Makes the next release through A with its image in both replicas' registries (one build, the
   * same digest in each), runs `beforeFinish`, then finishes it through A.
   */
  const deploy = async (beforeFinish: () => Promise<void> = async () => undefined): Promise<{ commit: string; imageId: string }> => {
    nextProject();
    const created = await call<{ release: { commit: string }; repositories: Record<string, string> }>(a, 'POST', `/fleets/${fleet}/releases`, {
      composition: { services: { main: { command: ['sh', '-c', "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"], labels: { [TEST_LABEL]: LABEL_VALUE } } } },
    });
    const repository = created.repositories.main;
    assert.ok(repository && a && b);
    const onB = `${new URL(b.url).host}/${repository.slice(repository.indexOf('/') + 1)}`;
    const tag = created.release.commit;
    execFileSync('/usr/bin/docker', ['build', '-q', '-t', `${repository}:${tag}`, '-t', `${onB}:${tag}`, project], { env: { ...process.env, DOCKER_BUILDKIT: '0' } });
    const imageId = (await docker.getImage(`${repository}:${tag}`).inspect()).Id;
    const digest = await push(repository, tag);
    assert.equal(await push(onB, tag), digest, 'the same manifest in both registries');
    for (const name of [repository, onB]) await docker.getImage(`${name}:${tag}`).remove({ force: true }); // the device must get it from the server
    await beforeFinish();
    await call(a, 'PATCH', `/releases/${tag}`, { status: 'success', images: { main: digest }, isFinal: true });
    return { commit: tag, imageId };
  };

  const device = (): Promise<Device> => call<Device>(b, 'GET', `/devices/${agent?.uuid ?? ''}`);

  /** Waits until the device runs `release` on its very image and B shows the update done. */
  const runs = async (release: { commit: string; imageId: string }): Promise<Device> => {
    const ag = agent;
    assert.ok(ag);
    return eventually(async () => {
      const s = await status(ag.url);
      const container = s.containers.find((c) => c.serviceName === 'main' && c.status === 'Running');
      if (s.release !== release.commit || !container) return false;
      assert.equal((await docker.getContainer(container.containerId).inspect()).Image, release.imageId, 'the container runs the release\'s image');
      const d = await device();
      return d.runningRelease === release.commit && d.updateStatus === 'done' && d.updateDownload?.commit === release.commit ? d : false;
    }, 180_000, `the device running ${release.commit}`).catch((err: Error) => {
      throw new Error(`${err.message}\nagent printed: ${ag.output().slice(-4000)}`);
    });
  };

  before(async function () {
    await ensureBaseImages();
    const database = await postgresUrl(this);
    a = await startServer({ database });
    b = await startServer({ database });
    token = (await call<{ token: string }>(a, 'POST', '/auth/login', ADMIN)).token;
    await call(a, 'POST', '/fleets', { name: fleet, deviceType: 'genericx86-64-ext' });
    await call(a, 'PUT', '/variables', { fleet, name: 'SKIFF_AGENT_POLL_INTERVAL', value: '1000' });
    // The device's config from B: it talks to B alone.
    const config = await call<Record<string, unknown>>(b, 'POST', `/fleets/${fleet}/config`, { developmentMode: true });
    const dataDir = scratchDir('skiff-delta-replicas-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, appUpdatePollInterval: 1000 }));
    agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')] });
  });

  after(async function () {
    if (this.currentTest?.state === 'failed') console.error(`--- replica a ---\n${a?.output().slice(-6000) ?? ''}\n--- replica b ---\n${b?.output().slice(-6000) ?? ''}`);
    if (b && b.child.exitCode === null) b.child.kill('SIGCONT');
    if (agent) await stopAgents([agent]);
    await a?.kill('SIGTERM');
    await b?.kill('SIGTERM');
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
    await dropPostgresDatabases();
  });

  it('updates by a delta A made, downloaded through B: the exact image, by delta, counted once by B', async () => {
    assert.ok(a && b && agent);
    const v1 = await runs(await deploy());
    assert.equal(v1.updateDownload?.services.main?.method, 'pull');

    const held = b;
    const markA = a.output().length;
    const markB = b.output().length;
    const v2 = await deploy(async () => {
      // B holds still: only A's worker claims the delta the release queues.
      held.child.kill('SIGSTOP');
    });
    await waitFor(async () => (await call<Release>(a, 'GET', `/releases/${v2.commit}`)).services[0]?.delta?.status === 'done', `A to make the delta of ${v2.commit}`, 120_000);
    held.child.kill('SIGCONT');

    const d = await runs(v2);
    const main = d.updateDownload?.services.main;
    assert.equal(main?.method, 'delta', `the report: ${JSON.stringify(d.updateDownload)}\n${agent.output().slice(-3000)}`);
    assert.equal(main.fallback, null);
    const made = /\[delta\] making ([0-9a-f]{32})/.exec(a.output().slice(markA))?.[1];
    assert.ok(made, 'A made the delta');
    assert.ok(!existsSync(path.join(b.dataDir, 'deltas', made)), 'B has no files of it');
    assert.doesNotMatch(b.output().slice(markB), /\[delta\] making/, 'B did not make it again');
    const uuid = agent.uuid;
    const onB = b.output().slice(markB).split('\n').filter((l) => l.includes(`[download] device ${uuid} delta `));
    assert.ok(onB.length > 0, 'B counted the delta download');
    const bytes = onB.reduce((n, l) => n + Number(/ delta (\d+) /.exec(l)?.[1] ?? 0), 0);
    assert.ok(bytes < DATA_BYTES / 20, `a small fraction of the data layer: ${bytes}`);
    assert.equal(a.output().slice(markA).split('\n').filter((l) => l.includes(`[download] device ${uuid} delta `)).length, 0, 'A does not count it again');
    assert.match(a.output().slice(markA), new RegExp(`\\[delta\\] served \\d+ bytes of /api/v3/delta/${made}/layers/\\d+ to device ${uuid} through another replica`));
  });
});
