/**
 * Delta updates end to end, every part real: `skiff server` (SQLite, its registry, its delta
 * maker), one `skiff agent` in cloud mode on this machine's engine, releases deployed through the
 * API as `skiff deploy` does. Each release's image carries a large layer of random data of which
 * the next release changes 4 KB: the device updates by delta and downloads a small fraction of
 * it. Then the faults, each ending with the release running and the report saying how it came:
 * a corrupt delta file, the source image gone from the engine, the agent killed mid-apply, and no
 * space for the apply's temporary files.
 *
 * The releases build on each other (v2 from v1, v3 from v2, …): one device, one agent, and each
 * test starts from what the one before left running.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync, closeSync, statSync } from 'node:fs';
import path from 'node:path';
import type { DeltaAnswer } from '../../src/lib/api/deltas.js';
import type { Device, Release } from '../../src/lib/api/resources.js';
import { eventually, startAgent, status, stopAgents, type TestAgent } from '../support/agent.js';
import { runCli } from '../support/cli.js';
import { buildAndPush, cleanupImages, docker, ensureBaseImages, TEST_LABEL } from '../support/engine.js';
import { writeDeltaProject } from '../support/delta-project.js';
import { ADMIN, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `cloud-delta-${RUN}`;
/** The large layer: big enough that a pull and a delta differ by orders of magnitude, small enough to build fast. */
const DATA_BYTES = 24 * 1024 * 1024;

describe('agent cloud: delta updates (real server, agent, engine)', function () {
  this.timeout(300_000);
  let server: StartedServer | undefined;
  let token = '';
  const fleet = `delta${RUN}`;
  let agent: TestAgent | undefined;
  const project = scratchDir('skiff-delta-project-');
  let version = 0;
  /** Releases in order, with the image ID (config digest) each one's image has. */
  const releases: Array<{ commit: string; imageId: string }> = [];
  let tmpfs: string | undefined;

  const api = async <T>(method: string, route: string, body?: unknown): Promise<T> => {
    if (!server) throw new Error('no server');
    const res = await fetch(`${server.url}${route}`, { method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };

  /** The next version of the project (support/delta-project.ts). */
  const nextProject = (): void => writeDeltaProject(project, ++version, DATA_BYTES, LABEL_VALUE);

  /** Builds the project, pushes it to the server's registry, removes the local copy; the digest and image ID. */
  const pushImage = async (repository: string, tag: string): Promise<{ digest: string; imageId: string }> => {
    return buildAndPush(project, repository, tag, { username: ADMIN.email, password: token }); // the device must get it from the server
  };

  /** A release of one service `main` from the next version of the project. */
  const deploy = async (): Promise<{ commit: string; imageId: string }> => {
    nextProject();
    const created = await api<{ release: { commit: string }; repositories: Record<string, string> }>('POST', `/fleets/${fleet}/releases`, {
      composition: { services: { main: { command: ['sh', '-c', "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"], labels: { [TEST_LABEL]: LABEL_VALUE } } } },
    });
    const repository = created.release && created.repositories.main;
    assert.ok(repository);
    const { digest, imageId } = await pushImage(repository, created.release.commit);
    await api('PATCH', `/releases/${created.release.commit}`, { status: 'success', images: { main: digest }, isFinal: true });
    const release = { commit: created.release.commit, imageId };
    releases.push(release);
    return release;
  };

  const device = (): Promise<Device> => api<Device>('GET', `/devices/${agent?.uuid ?? ''}`);
  const imageOf = async (commit: string): Promise<string> => {
    const image = (await api<Release>('GET', `/releases/${commit}`)).services.find((s) => s.name === 'main')?.image;
    assert.ok(image, `release ${commit} has an image`);
    return image;
  };

  /** Waits until the device runs `release` (its container on that very image) and the server shows its update finished. */
  const runs = async (release: { commit: string; imageId: string }, timeoutMs = 180_000): Promise<Device> => {
    const a = agent;
    assert.ok(a);
    let last: unknown;
    return eventually(async () => {
      const s = await status(a.url);
      const container = s.containers.find((c) => c.serviceName === 'main' && c.status === 'Running');
      if (s.release !== release.commit || !container) return false;
      const image = (await docker.getContainer(container.containerId).inspect()).Image;
      assert.equal(image, release.imageId, 'the container runs the release\'s image (its config digest)');
      const d = await device();
      last = d;
      return d.runningRelease === release.commit && d.updateStatus === 'done' && d.updateDownload?.commit === release.commit ? d : false;
    }, timeoutMs, `the device running ${release.commit}`).catch((err: Error) => {
      throw new Error(`${err.message}\nserver shows: ${JSON.stringify(last)}\nagent printed: ${a.output().slice(-4000)}`);
    });
  };

  /** Bytes the server sent this device (its `[download]` lines) since `from` characters of its output. */
  const downloadedSince = (from: number): { bytes: number; lines: string[] } => {
    const uuid = agent?.uuid ?? '';
    const lines = (server?.output() ?? '').slice(from).split('\n').filter((l) => l.includes(`[download] device ${uuid} `));
    let bytes = 0;
    for (const line of lines) bytes += Number(/\[download\] device \S+ (?:delta|blob) (\d+) /.exec(line)?.[1] ?? 0);
    return { bytes, lines };
  };

  /** Asks the server for the delta as the device would (with its key) until it is made: the test can then touch its files first. */
  const deltaReady = async (from: string, to: string): Promise<Extract<DeltaAnswer, { status: 'ready' }>['delta']> => {
    const key = (JSON.parse(readFileSync(path.join(agent?.dataDir ?? '', 'config.json'), 'utf8')) as { deviceApiKey: string }).deviceApiKey;
    const query = new URLSearchParams({ src: await imageOf(from), dest: await imageOf(to) });
    return eventually(async () => {
      const res = await fetch(`${server?.url ?? ''}/api/v3/delta?${query.toString()}`, { headers: { authorization: `Bearer ${key}` } });
      if (res.status === 504) return false;
      const answer = await res.json() as DeltaAnswer;
      assert.equal(answer.status, 'ready', `a delta from ${from} to ${to}: ${JSON.stringify(answer)}`);
      return answer.status === 'ready' ? answer.delta : false;
    }, 120_000, `the delta from ${from} to ${to} to be made`);
  };

  /** Holds the device on the release it runs while the next is deployed and prepared. */
  const pin = (commit: string | null) => api('PATCH', `/devices/${agent?.uuid ?? ''}`, { pinnedRelease: commit });

  before(async function () {
    await ensureBaseImages();
    server = await startServer();
    token = (await api<{ token: string }>('POST', '/auth/login', ADMIN)).token;
    await api('POST', '/fleets', { name: fleet, deviceType: 'genericx86-64-ext' });
    await api('PUT', '/variables', { fleet, name: 'SKIFF_AGENT_POLL_INTERVAL', value: '1000' });
    const config = await api<Record<string, unknown>>('POST', `/fleets/${fleet}/config`, { developmentMode: true });
    const dataDir = scratchDir('skiff-delta-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, appUpdatePollInterval: 1000 }));
    agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')] });
  });

  after(async () => {
    if (agent) await stopAgents([agent]);
    if (tmpfs) execFileSync('umount', ['-l', tmpfs]);
    await server?.kill('SIGTERM');
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('the first release is pulled; the next comes by delta: the right image, a small fraction of the bytes, and device info says so', async () => {
    const v1 = await deploy();
    const first = await runs(v1);
    assert.equal(first.updateDownload?.services.main?.method, 'pull', 'nothing to make a delta from on the first release');
    assert.ok((first.updateDownload?.services.main?.downloadedBytes ?? 0) > DATA_BYTES / 2, `a pull downloads the data layer: ${JSON.stringify(first.updateDownload)}`);

    const mark = server?.output().length ?? 0;
    const v2 = await deploy();
    const d = await runs(v2);
    const main = d.updateDownload?.services.main;
    assert.equal(main?.method, 'delta', `the report: ${JSON.stringify(d.updateDownload)}\n${agent?.output().slice(-3000)}`);
    assert.equal(main.fallback, null);
    assert.ok(main.pullBytes > DATA_BYTES / 2, `a pull would have downloaded the data layer (${main.pullBytes})`);
    const counted = downloadedSince(mark);
    assert.ok(counted.lines.some((l) => / delta /.test(l)), `the server sent delta files:\n${counted.lines.join('\n')}`);
    assert.ok(counted.bytes < DATA_BYTES / 20, `the device downloaded ${counted.bytes} bytes, under 5 % of the ${DATA_BYTES}-byte layer:\n${counted.lines.join('\n')}`);
    assert.ok(main.downloadedBytes <= counted.bytes, `the device's count (${main.downloadedBytes}) is what the server sent (${counted.bytes}) at most`);
    assert.match(agent?.output() ?? '', /main updated by delta/);

    const env = { HOME: scratchDir('skiff-delta-home-'), SKIFF_API_URL: server?.url, SKIFF_API_TOKEN: token };
    const json = await runCli(['device', 'info', agent?.uuid ?? '', '--json'], { env });
    assert.equal(json.code, 0, json.stderr);
    const doc = JSON.parse(json.stdout) as { result: Device };
    assert.deepEqual(doc.result.updateDownload, d.updateDownload);
    const text = await runCli(['device', 'info', agent?.uuid ?? ''], { env });
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /LAST UPDATE\s+main by delta: [\d.]+ [KMB]+ of [\d.]+ MB \([\d.]+× less\)/);
  });

  it('a corrupt delta file: falls back to a pull, runs the right image, and the report says why', async () => {
    const [prev] = releases.slice(-1);
    assert.ok(prev);
    await pin(prev.commit);
    const next = await deploy();
    const delta = await deltaReady(prev.commit, next.commit);
    const folder = path.join(server?.dataDir ?? '', 'deltas', delta.id);
    const files = readdirSync(folder).filter((f) => f.endsWith('.br'));
    assert.ok(files.length > 0, `delta files in ${folder}`);
    for (const file of files) {
      const fd = openSync(path.join(folder, file), 'r+');
      const size = statSync(path.join(folder, file)).size;
      writeSync(fd, Buffer.from([0xde, 0xad, 0xbe, 0xef]), 0, 4, Math.floor(size / 2));
      closeSync(fd);
    }
    await pin(null);
    const d = await runs(next);
    const main = d.updateDownload?.services.main;
    assert.equal(main?.method, 'pull', JSON.stringify(d.updateDownload));
    assert.match(main.fallback ?? '', /^delta failed: corrupt/);
    assert.match(agent?.output() ?? '', /Cloud: delta for main failed \(corrupt[^\n]*\); pulling instead/);
  });

  it('the image the service ran gone from the engine: pulls', async () => {
    const [prev] = releases.slice(-1);
    assert.ok(prev);
    await pin(prev.commit);
    const next = await deploy();
    await deltaReady(prev.commit, next.commit);
    // The name goes; the running container keeps the image itself (as a prune of tags would leave it).
    const old = (await docker.listImages({ filters: JSON.stringify({ reference: ['skiff-cloud/*/*'] }) })).flatMap((i) => (i.Id === prev.imageId ? i.RepoTags ?? [] : []));
    assert.ok(old.length > 0, 'the running release\'s image has its name');
    for (const name of old) await docker.getImage(name).remove({ force: true, noprune: true });
    await pin(null);
    const d = await runs(next);
    const main = d.updateDownload?.services.main;
    assert.equal(main?.method, 'pull', JSON.stringify(d.updateDownload));
    // Said in the report and the log: found before asking (the agent's view of the engine was
    // fresh) or by the apply (it was not).
    assert.match(main.fallback ?? '', /^(no delta: the engine no longer has|delta failed: source)/);
    assert.match(agent?.output() ?? '', /Cloud: (main: no delta: the engine no longer has[^\n]*; pulling|delta for main failed \(source[^\n]*\); pulling instead)/);
  });

  it('the agent killed mid-apply: started again, it cleans the delta folder and completes the update', async () => {
    const [prev] = releases.slice(-1);
    assert.ok(prev && agent);
    await pin(prev.commit);
    const next = await deploy();
    await deltaReady(prev.commit, next.commit);
    const tmp = path.join(agent.dataDir, 'delta-tmp');
    await pin(null);
    await waitFor(() => Promise.resolve(existsSync(tmp) && readdirSync(tmp).length > 0), 'the apply to write its temporary files', 120_000, 5);
    agent.child.kill('SIGKILL');
    await new Promise((resolve) => agent?.child.once('exit', resolve));
    assert.ok(readdirSync(tmp).length > 0, 'the killed apply left files');
    agent = await startAgent({ dataDir: agent.dataDir, port: agent.port, args: ['--config', path.join(agent.dataDir, 'config.json')] });
    const d = await runs(next);
    assert.ok(['delta', 'pull'].includes(d.updateDownload?.services.main?.method ?? ''), JSON.stringify(d.updateDownload));
    assert.deepEqual(readdirSync(tmp), [], 'nothing left in the delta folder');
  });

  it('no space for the apply: the previous release keeps running, the report says why, and the update completes by pull', async () => {
    const [prev] = releases.slice(-1);
    assert.ok(prev && agent);
    await pin(prev.commit);
    const next = await deploy();
    await deltaReady(prev.commit, next.commit);
    tmpfs = path.join(agent.dataDir, 'delta-tmp');
    mkdirSync(tmpfs, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', `skiff-test-${RUN}`, tmpfs]);
    const a = agent;
    await pin(null);
    await waitFor(() => Promise.resolve(/Cloud: delta for main failed/.test(a.output().split('Cloud: new target').at(-1) ?? '')), 'the delta to fail', 120_000, 5);
    const meanwhile = await status(a.url);
    assert.equal(meanwhile.release, prev.commit, 'the previous release still runs while the pull goes on');
    assert.ok(meanwhile.containers.some((c) => c.serviceName === 'main' && c.status === 'Running'));
    const d = await runs(next);
    const main = d.updateDownload?.services.main;
    assert.equal(main?.method, 'pull', JSON.stringify(d.updateDownload));
    assert.match(main.fallback ?? '', /^delta failed: disk/);
    assert.match(agent.output(), /Cloud: delta for main failed \(disk[^\n]*\); pulling instead/);
  });

  it('the server refuses a malformed update_download and keeps what the device last reported; device info prints a hostile one as visible text', async () => {
    assert.ok(agent);
    const before = (await device()).updateDownload;
    assert.ok(before);
    const key = (JSON.parse(readFileSync(path.join(agent.dataDir, 'config.json'), 'utf8')) as { deviceApiKey: string }).deviceApiKey;
    const bad: unknown[] = [
      { commit: 'x', services: { main: { method: 'rsync', downloadedBytes: 1, pullBytes: 1, fallback: null } } },
      { commit: 'x', services: { main: { method: 'delta', downloadedBytes: -1, pullBytes: 1, fallback: null } } },
      { commit: 'x', services: { main: { method: 'delta', downloadedBytes: 1, pullBytes: 1, fallback: null, saved: 99 } } },
      'delta',
    ];
    for (const updateDownload of bad) {
      const res: Response = await fetch(`${server?.url ?? ''}/device/v3/state`, {
        method: 'PATCH', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ [agent.uuid]: { update_download: updateDownload } }),
      });
      assert.equal(res.status, 400, `${JSON.stringify(updateDownload)} refused`);
    }
    assert.deepEqual((await device()).updateDownload, before);

    // What the device says is printed as visible text only: a reason may hold escape sequences.
    const osc = '\u001b]0;pwned\u0007';
    const hostile = { commit: 'x', services: { [`main${osc}`]: { method: 'pull', downloadedBytes: 1, pullBytes: 1, fallback: `delta failed: corrupt\u001b[2K\rall good${osc}` } } };
    const res = await fetch(`${server?.url ?? ''}/device/v3/state`, {
      method: 'PATCH', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ [agent.uuid]: { update_download: hostile } }),
    });
    assert.equal(res.status, 200);
    const env = { HOME: scratchDir('skiff-delta-home-'), SKIFF_API_URL: server?.url, SKIFF_API_TOKEN: token };
    const text = await runCli(['device', 'info', agent.uuid], { env });
    assert.equal(text.code, 0, text.stderr);
    // eslint-disable-next-line no-control-regex -- control characters (but newline) are what must not be there
    assert.doesNotMatch(text.stdout, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/, JSON.stringify(text.stdout));
    assert.match(text.stdout, /LAST UPDATE\s+main.*pulled: 1 B \(delta failed: corrupt/);
    const json = await runCli(['device', 'info', agent.uuid, '--json'], { env });
    assert.deepEqual((JSON.parse(json.stdout) as { result: Device }).result.updateDownload, hostile, '--json keeps the text as it is (JSON escapes it)');
  });
});
