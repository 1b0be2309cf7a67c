/**
 * `skiff push <fleet>` and its neighbours as a user runs them: the CLI as a subprocess against a
 * real `skiff server` (its registry and build engine, SQLite then PostgreSQL), real agents as the
 * fleet's devices, real git. The faults of the push part each have a test: a project that
 * does not build, another user's fleet, Ctrl-C during the build, the CLI's connection cut during
 * the build (through a TCP proxy cut once), two pushes at once.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { stopAgents, startAgent, type TestAgent } from '../support/agent.js';
import { runCli, startCli, type CliResult } from '../support/cli.js';
import { BASE_AMD64, TEST_LABEL, cleanupImages, docker, ensureBaseImages, makeProject } from '../support/engine.js';
import { ADMIN, api, createUser, dropPostgresDatabase, freePort, freshPostgresDatabase, login, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import { startTty } from '../support/tty.js';
import { waitFor } from '../support/wait.js';
import type { Build } from '../../src/lib/api/builds.js';
import type { Device, Fleet, Release } from '../../src/lib/api/resources.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `cloud-push-${RUN}`;

interface Envelope<T> { status: 'ok' | 'error'; result?: T; warnings: string[]; error?: { code: string; exitCode: number; message: string } }
function envelope<T>(r: CliResult): Envelope<T> {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as Envelope<T>;
}
const json = <T>(r: CliResult): T => envelope<T>(r).result as T;

function git(dir: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=Skiff Test', '-c', 'user.email=test@skiff.test', '-c', 'init.defaultBranch=main', ...args], { cwd: dir, encoding: 'utf8' }).trim();
}

/** A one-service project; `marker` changes its image. */
function project(marker: string, dockerfileTail = ''): string {
  return makeProject({
    'docker-compose.yml': `services:\n  main:\n    build: .\n    labels:\n      ${TEST_LABEL}: ${LABEL_VALUE}\n    command: ["sh", "-c", "trap 'exit 0' TERM; echo ${marker}; while :; do sleep 1 & wait $!; done"]\n`,
    Dockerfile: `FROM ${BASE_AMD64}\nLABEL ${TEST_LABEL}=${LABEL_VALUE}\nRUN echo ${marker}-${RUN} > /marker\n${dockerfileTail}`,
  }, `push${marker}`);
}

describe('fleet git-remote and the git commit on releases (skiff deploy)', function () {
  this.timeout(300_000);
  let server: StartedServer;
  let env: NodeJS.ProcessEnv;
  const fleet = `gitremote-${RUN}`;
  const cli = (args: string[], cwd?: string) => runCli(args, { env, ...(cwd ? { cwd } : {}) });

  before(async () => {
    await ensureBaseImages();
    server = await startServer();
    const token = await login(server.url, ADMIN.email, ADMIN.password);
    env = { HOME: scratchDir('skiff-push-home-'), SKIFF_API_URL: server.url, SKIFF_API_TOKEN: token };
    json<Fleet>(await cli(['fleet', 'create', fleet, '--type', 'intel-nuc', '--json']));
  });

  after(async () => {
    await server?.kill('SIGTERM');
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('prints the remote URL, and --add adds it once; a clash, a folder outside git, another user\'s fleet are clear errors', async () => {
    const url = `${server.url}/git/${fleet}.git`;
    const plain = await cli(['fleet', 'git-remote', fleet]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout.trim(), url);
    assert.match(plain.stderr, /api-key generate/);
    assert.match(plain.stderr, new RegExp(ADMIN.email.replace('.', '\\.')));

    const repo = project('remote');
    git(repo, 'init', '-q');
    const added = json<{ url: string; remote: { name: string; outcome: string } }>(await cli(['fleet', 'git-remote', fleet, '--add', '--source', repo, '--json']));
    assert.deepEqual(added.remote, { name: 'skiff', outcome: 'added' });
    assert.equal(git(repo, 'remote', 'get-url', 'skiff'), url);
    assert.equal(json<{ remote: { outcome: string } }>(await cli(['fleet', 'git-remote', fleet, '--add', '--json'], repo)).remote.outcome, 'exists');
    const named = json<{ remote: { name: string } }>(await cli(['fleet', 'git-remote', fleet, '--add', 'cloud', '--source', repo, '--json']));
    assert.equal(named.remote.name, 'cloud');
    assert.equal(git(repo, 'remote', 'get-url', 'cloud'), url);

    git(repo, 'remote', 'add', 'other', 'https://example.invalid/x.git');
    const clash = await cli(['fleet', 'git-remote', fleet, '--add', 'other', '--source', repo]);
    assert.equal(clash.code, 2, clash.stderr);
    assert.match(clash.stderr, /already has a remote 'other'/);
    assert.match(clash.stderr, /git remote set-url other/);
    assert.equal(git(repo, 'remote', 'get-url', 'other'), 'https://example.invalid/x.git', 'never overwritten');

    // Names git itself refuses were exit 70, "This is a bug in skiff" (found by the breaker pass).
    for (const bad of ['bad..name', 'trailing/', 'x.lock']) {
      const refused = await cli(['fleet', 'git-remote', fleet, '--add', bad, '--source', repo]);
      assert.equal(refused.code, 2, `${bad}: ${refused.stderr}`);
      assert.match(refused.stderr, /is not a valid git remote name/);
      assert.doesNotMatch(refused.stderr, /bug in skiff/);
    }

    const notRepo = await cli(['fleet', 'git-remote', fleet, '--add', '--source', scratchDir('skiff-push-nogit-')]);
    assert.equal(notRepo.code, 2, notRepo.stderr);
    assert.match(notRepo.stderr, /not in a git repository/);

    const bob = await createUser(server.url);
    const hidden = await runCli(['fleet', 'git-remote', fleet], { env: { ...env, SKIFF_API_TOKEN: bob.token } });
    assert.equal(hidden.code, 12, hidden.stderr);
    const typo = await cli(['fleet', 'git-remote', `${fleet}-typo`]);
    assert.equal(typo.code, 12, typo.stderr);
  });

  it('deploy stamps the release with the commit, warns when the tree is dirty, and stamps nothing outside git', async () => {
    const repo = project('stamp');
    git(repo, 'init', '-q');
    git(repo, 'add', '.');
    git(repo, 'commit', '-q', '-m', 'first');
    const head = git(repo, 'rev-parse', 'HEAD');
    const clean = envelope<Release>(await cli(['deploy', fleet, '--source', repo, '--build', '--json']));
    assert.equal(clean.result?.gitCommit, head);
    assert.deepEqual(clean.warnings.filter((w) => /git/.test(w)), []);
    const info = await cli(['release', 'info', clean.result?.commit ?? '']);
    assert.match(info.stdout, new RegExp(`GIT COMMIT\\s+${head}`));

    writeFileSync(path.join(repo, 'new-file.txt'), 'not committed');
    const dirty = envelope<Release>(await cli(['deploy', fleet, '--source', repo, '--build', '--json']));
    assert.equal(dirty.result?.gitCommit, head);
    assert.ok(dirty.warnings.some((w) => /not committed to git/.test(w)), JSON.stringify(dirty.warnings));

    const outside = envelope<Release>(await cli(['deploy', fleet, '--source', project('nogit'), '--build', '--json']));
    assert.equal(outside.result?.gitCommit, null);
    assert.deepEqual(outside.warnings.filter((w) => /git/.test(w)), []);
  });
});

/** A TCP proxy in front of the server whose open connections can be cut (the CLI's line dropping). */
async function cuttableProxy(target: number, options: { holdAfterBytes?: number } = {}): Promise<{ url: string; cut(): number; close(): Promise<void>; held(): boolean }> {
  const sockets = new Set<net.Socket>();
  let held = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    let sent = 0;
    // holdAfterBytes: the line to the server stalls after that many bytes of one request (an upload stuck half-way).
    client.on('data', (chunk: Buffer) => {
      if (held) return;
      if (options.holdAfterBytes !== undefined && sent + chunk.length > options.holdAfterBytes) {
        held = true;
        client.pause();
        return;
      }
      sent += chunk.length;
      upstream.write(chunk);
    });
    upstream.pipe(client);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    cut: () => {
      const n = sockets.size;
      for (const s of sockets) s.destroy();
      return n;
    },
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
    held: () => held,
  };
}

for (const dialect of ['sqlite', 'postgres'] as const) describe(`skiff push <fleet>: the server builds, devices run it (${dialect})`, function () {
  this.timeout(900_000);
  let server: StartedServer;
  let database: string | undefined;
  let env: NodeJS.ProcessEnv;
  let token = '';
  let fleetUuid = '';
  const fleet = `push-${RUN}-${dialect}`;
  const agents: TestAgent[] = [];
  const cli = (args: string[], extra: NodeJS.ProcessEnv = {}) => runCli(args, { env: { ...env, ...extra } });
  const releases = async (): Promise<Release[]> => (await api(server.url, 'GET', `/fleets/${fleet}/releases`, { token })).body as Release[];
  const build = async (id: string): Promise<Build> => (await api(server.url, 'GET', `/builds/${id}`, { token })).body as Build;
  const device = async (agent: TestAgent): Promise<Device> => (await api(server.url, 'GET', `/devices/${agent.uuid}`, { token })).body as Device;
  const allRun = async (commit: string) => {
    for (const agent of agents) {
      let last: Device | undefined;
      await waitFor(async () => {
        last = await device(agent);
        return last.runningRelease === commit && last.updateStatus === 'done';
      }, `${agent.uuid.slice(0, 7)} to run ${commit}`, 180_000, 250).catch((err: Error) => {
        throw new Error(`${err.message}\nserver shows: ${JSON.stringify(last)}\nagent printed: ${agent.output().slice(-2000)}`);
      });
    }
  };
  /** Build containers the builder left for the fleet: its label, and not a device's container (those have an app id). */
  const strays = async () => (await docker.listContainers({ all: true, filters: { label: [`io.skiff.fleet=${fleetUuid}`] } }))
    .filter((c) => c.Labels['io.balena.app-id'] === undefined).map((c) => c.Id);

  before(async () => {
    await ensureBaseImages();
    database = dialect === 'postgres' ? freshPostgresDatabase() : undefined;
    server = await startServer(database ? { database } : {});
    token = await login(server.url, ADMIN.email, ADMIN.password);
    env = { HOME: scratchDir('skiff-push-home-'), SKIFF_API_URL: server.url, SKIFF_API_TOKEN: token };
    fleetUuid = json<Fleet>(await cli(['fleet', 'create', fleet, '--type', 'intel-nuc', '--json'])).uuid;
    json(await cli(['env', 'set', 'SKIFF_AGENT_POLL_INTERVAL', '1000', '--fleet', fleet, '--json']));
    for (let i = 0; i < 2; i++) {
      const dataDir = scratchDir('skiff-push-agent-');
      const config = path.join(dataDir, 'config.json');
      json(await cli(['config', 'generate', '--fleet', fleet, '--output', config, '--json']));
      agents.push(await startAgent({ dataDir, args: ['--config', config] }));
    }
  });

  after(async () => {
    await stopAgents(agents);
    await server?.kill('SIGTERM');
    if (database) dropPostgresDatabase(database);
    await cleanupImages({ label: `io.skiff.fleet=${fleetUuid}` });
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('builds on the server, streams the build as skiff build shows it, stamps the commit, and both devices run the release', async () => {
    const dir = project(`ok${dialect}`);
    git(dir, 'init', '-q');
    git(dir, 'add', '.');
    git(dir, 'commit', '-q', '-m', 'v1');
    const head = git(dir, 'rev-parse', 'HEAD');
    const human = await cli(['push', fleet, '--source', dir, '--release-tag', 'team', 'core', '--note', 'pushed']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stderr, /Uploading the project: 2 files/);
    assert.match(human.stderr, /Building 1 service \(main\) for intel-nuc/);
    assert.match(human.stderr, new RegExp(`\\[main\\].*ok${dialect}-${RUN}`), 'the RUN step\'s output, prefixed as skiff build prints it');
    assert.match(human.stderr, /Release [0-9a-f]{7} created for fleet .*; devices tracking the fleet update now/);
    assert.match(human.stdout, /SERVICE\s+IMAGE/);
    const [release] = await releases();
    assert.ok(release);
    assert.equal(release.gitCommit, head);
    assert.deepEqual(release.tags, { team: 'core' });
    assert.equal(release.notes, 'pushed');
    assert.ok(release.build);
    assert.equal((await build(release.build)).gitCommit, head);
    await allRun(release.commit);
    const info = await cli(['release', 'info', release.commit]);
    assert.match(info.stdout, new RegExp(`BUILD\\s+${release.build}`));
  });

  if (dialect === 'postgres') return;

  it('--detached returns after the upload; build-logs --follow shows the output to the end; --json gives the release', async () => {
    const detached = json<Build>(await cli(['push', fleet, '--source', project('detached', 'RUN for i in 1 2 3; do echo detached-line-$i; sleep 1; done\n'), '--detached', '--json']));
    assert.ok(['queued', 'running'].includes(detached.status), detached.status);
    assert.equal(detached.fleet, fleet);
    const follow = await cli(['build-logs', detached.id.slice(0, 8), '--follow']);
    assert.equal(follow.code, 0, follow.stderr);
    for (const i of [1, 2, 3]) assert.equal(follow.stderr.split(`detached-line-${i}`).length - 1 >= 1, true, `line ${i} in ${follow.stderr}`);
    assert.match(follow.stderr, /Release [0-9a-f]{7} of fleet/);
    const ndjson = await cli(['build-logs', detached.id, '--json']);
    // NDJSON of the events, then the build's envelope (pretty-printed, as every --json result).
    const events = ndjson.stdout.split('\n').filter((l) => l.startsWith('{"seq"')).map((l) => JSON.parse(l) as { seq: number; event: { kind: string } });
    assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
    assert.equal(events.at(-1)?.event?.kind, 'done');

    const released = json<Release>(await cli(['push', fleet, '--source', project('json'), '--json']));
    assert.equal(released.status, 'success');
    assert.equal(released.fleet, fleet);
    await allRun(released.commit);
  });

  it('on a terminal: the upload bar, the build as skiff build shows it, the pushes, the release table', async () => {
    const dir = project('tty');
    writeFileSync(path.join(dir, 'payload.bin'), randomBytes(3 * 1024 * 1024));
    // Not process.env: CI=true there would make the CLI print for a pipe, not a terminal.
    const tty = startTty(['push', fleet, '--source', dir], { env });
    await tty.waitFor(/devices tracking the fleet update now/, 240_000);
    assert.equal(await tty.done, 0, tty.output());
    const screen = tty.output();
    assert.match(screen, /Uploading the project: 3 files, 3\.0 MB/);
    assert.match(screen, /Uploading 100%/);
    assert.match(screen, new RegExp(`\\[main\\].*tty-${RUN}`));
    assert.match(screen, /pushed sha256:/);
    assert.match(screen, /SERVICE\s+IMAGE\s+SIZE/);
  });

  it('a project that does not build: non-zero, the failing service\'s last lines, no release, devices untouched', async () => {
    const before = await releases();
    const running = before[0]?.commit;
    assert.ok(running);
    // Settled first: the release the push before made may still be reaching the devices.
    await allRun(running);
    const r = await cli(['push', fleet, '--source', project('broken', `RUN echo about-to-fail-${RUN}; exit 3\n`)]);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /no release was made/);
    assert.match(r.stderr, new RegExp(`\\[main\\] (#\\d+ )?about-to-fail-${RUN}`));
    assert.equal((await releases()).length, before.length);
    for (const agent of agents) assert.equal((await device(agent)).runningRelease, running);
  });

  it("a project over the server's build context limit: one clear line naming the limit (exit 2), not a reset connection", async () => {
    const small = await startServer({ args: ['--build-context-limit', '1'] });
    try {
      const own = await login(small.url, ADMIN.email, ADMIN.password);
      const smallEnv = { ...env, SKIFF_API_URL: small.url, SKIFF_API_TOKEN: own };
      assert.equal((await runCli(['fleet', 'create', 'big', '--type', 'intel-nuc'], { env: smallEnv })).code, 0);
      const dir = project('big');
      writeFileSync(path.join(dir, 'payload.bin'), randomBytes(8 * 1024 * 1024));
      const r = await runCli(['push', 'big', '--source', dir], { env: smallEnv });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /build context limit/);
    } finally {
      await small.kill('SIGTERM');
    }
  });

  it("a fleet the user cannot see is not found (exit 12), and nothing is uploaded", async () => {
    const bob = await createUser(server.url);
    const r = await cli(['push', fleet, '--source', project('bob')], { SKIFF_API_TOKEN: bob.token });
    assert.equal(r.code, 12, r.stderr);
    assert.doesNotMatch(r.stderr, /Uploading/);
    const typo = await cli(['push', '--fleet', `${fleet}-typo`, '--source', project('typo')]);
    assert.equal(typo.code, 12, typo.stderr);
  });

  it('Ctrl-C during the build cancels it on the server: exit 130, no release, no stray build containers', async () => {
    const before = await releases();
    const push = startCli(['push', fleet, '--source', project('cancel', `RUN echo cancel-me-${RUN}; sleep 60\n`)], { env });
    let stderr = '';
    push.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    await waitFor(() => stderr.includes(`cancel-me-${RUN}`), 'the build to be running', 180_000);
    const id = /build ([0-9a-f]{7}) is on the server/.exec(stderr)?.[1];
    assert.ok(id, stderr);
    push.child.kill('SIGINT');
    const r = await push.done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /Build cancelled/);
    assert.equal((await build(id)).status, 'cancelled');
    assert.equal((await releases()).length, before.length);
    await waitFor(async () => (await strays()).length === 0, 'no build container left', 30_000);
  });

  it('Ctrl-C during the upload: exit 130, and the server made no build', async () => {
    const proxy = await cuttableProxy(server.port, { holdAfterBytes: 1024 * 1024 });
    try {
      const builds = async () => ((await api(server.url, 'GET', `/fleets/${fleet}/builds`, { token })).body as Build[]).length;
      const before = await builds();
      const dir = project('upload');
      // Larger than what loopback's socket buffers take in while the proxy holds the line.
      writeFileSync(path.join(dir, 'payload.bin'), randomBytes(48 * 1024 * 1024));
      const push = startCli(['push', fleet, '--source', dir], { env: { ...env, SKIFF_API_URL: proxy.url } });
      await waitFor(() => proxy.held(), 'the upload to be half-way', 120_000);
      push.child.kill('SIGINT');
      const r = await push.done;
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr, /upload interrupted; the server created no build/);
      await proxy.close();
      // The server saw the upload end early: it keeps nothing of it.
      await waitFor(async () => (await builds()) === before, 'no build made', 10_000);
    } finally {
      await proxy.close();
    }
  });

  it('the connection cut during the build: the CLI re-attaches, every line once, one release', async () => {
    const proxy = await cuttableProxy(server.port);
    try {
      const before = await releases();
      const lines = 'RUN for i in 1 2 3 4 5 6; do echo cut-line-$i; sleep 1; done\n';
      const push = startCli(['push', fleet, '--source', project('cut', lines)], { env: { ...env, SKIFF_API_URL: proxy.url } });
      let stderr = '';
      push.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      await waitFor(() => stderr.includes('cut-line-2'), 'the build to print its second line', 180_000);
      assert.ok(proxy.cut() > 0, 'a connection was open to cut');
      const r = await push.done;
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /re-attaching/);
      for (let i = 1; i <= 6; i++) assert.equal(r.stderr.split(`cut-line-${i}`).length - 1, 1, `cut-line-${i} exactly once in:\n${r.stderr}`);
      const after = await releases();
      assert.equal(after.length, before.length + 1, 'one release made');
    } finally {
      await proxy.close();
    }
  });

  it('two pushes at once: the second waits, saying which build it is queued behind; both make their release', async () => {
    const first = startCli(['push', fleet, '--source', project('first', 'RUN sleep 4\n')], { env });
    let firstErr = '';
    first.child.stderr?.on('data', (d: Buffer) => (firstErr += d.toString()));
    await waitFor(() => /build [0-9a-f]{7} is on the server/.test(firstErr), 'the first upload', 120_000);
    const firstId = /build ([0-9a-f]{7}) is on the server/.exec(firstErr)?.[1] ?? '';
    const second = await cli(['push', fleet, '--source', project('second')]);
    const one = await first.done;
    assert.equal(one.code, 0, one.stderr);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, new RegExp(`Queued behind build ${firstId}`));
  });
});
