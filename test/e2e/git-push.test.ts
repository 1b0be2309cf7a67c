/**
 * `git push` deploys: the real `skiff server` (bin/run.js) hosting each fleet's repository through
 * `git http-backend`, the real `git` client as a subprocess (its own HOME, credentials in the URL),
 * the real engine building on the server and its registry. A push to main builds, shows the build as
 * `remote:` lines and makes the release stamped with the commit; a commit that does not build is
 * refused and main stays; other branches are stored, not deployed; bad or missing tokens fail as git
 * says; another user's fleet is not found; a cancelled push cancels its build.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { cleanupAgent, startAgent, type TestAgent } from '../support/agent.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, TEST_LABEL } from '../support/engine.js';
import { api, createUser, dropPostgresDatabase, freshPostgresDatabase, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';
import type { Build } from '../../src/lib/api/builds.js';
import type { Device, Release } from '../../src/lib/api/resources.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `git-push-${RUN}`;

interface GitResult { code: number | null; stdout: string; stderr: string }

/** Runs the real git with a private HOME: no credential helper, no prompt, no user config. */
function git(args: string[], options: { cwd?: string; home: string; onStderr?: (text: string) => void; signal?: AbortSignal }): Promise<GitResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, {
      cwd: options.cwd,
      env: {
        PATH: process.env.PATH, HOME: options.home, GIT_TERMINAL_PROMPT: '0', GIT_CONFIG_NOSYSTEM: '1', LANG: 'C',
        GIT_AUTHOR_NAME: 'Tester', GIT_AUTHOR_EMAIL: 'tester@skiff.test', GIT_COMMITTER_NAME: 'Tester', GIT_COMMITTER_EMAIL: 'tester@skiff.test',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, as a terminal's foreground job: Ctrl-C reaches git and its remote helper.
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      options.onStderr?.(stderr);
    });
    options.signal?.addEventListener('abort', () => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(-child.pid, 'SIGINT');
    }, { once: true });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A one-service project; `run` is its Dockerfile's RUN step (a failing one makes a commit that does not build). */
function writeProject(dir: string, run: string, label = LABEL_VALUE): void {
  writeFileSync(path.join(dir, 'docker-compose.yml'), `services:\n  main:\n    build: .\n    labels:\n      ${TEST_LABEL}: ${label}\n    command: ["sh", "-c", "trap 'exit 0' TERM; echo up; while :; do sleep 1 & wait $$!; done"]\n`);
  writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE_AMD64}\nLABEL ${TEST_LABEL}=${label}\nRUN ${run}\n`);
}

/** `pid` and every process under it (ps --ppid), children first. */
function processTree(pid: number): number[] {
  const out = spawnSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).stdout;
  const children = out.split('\n').map((l) => Number(l.trim())).filter((n) => n > 0);
  return [...children.flatMap(processTree), pid];
}

/** A new user with a new fleet on `server`, and an empty local repository on `branch` with its remote. */
async function userRepo(server: StartedServer, fleet: string, branch: string): Promise<{ token: string; home: string; dir: string; remote: string }> {
  const me = await createUser(server.url);
  assert.equal((await api(server.url, 'POST', '/fleets', { token: me.token, body: { name: fleet, deviceType: 'intel-nuc' } })).status, 201);
  const home = scratchDir('skiff-git-home-');
  const dir = scratchDir('skiff-git-repo-');
  assert.equal((await git(['init', '-q', '-b', branch, dir], { home })).code, 0);
  return { token: me.token, home, dir, remote: `http://me:${me.token}@127.0.0.1:${server.port}/git/${fleet}.git` };
}

/** `git ls-remote` as ref → sha. */
function refs(out: string): Record<string, string> {
  return Object.fromEntries(out.trim().split('\n').filter(Boolean).map((l) => {
    const [sha = '', ref = ''] = l.split('\t');
    return [ref, sha];
  }));
}

for (const dialect of ['sqlite', 'postgres'] as const) describe(`git push deploys (${dialect})`, function () {
  this.timeout(600_000);
  let server: StartedServer | undefined;
  let database: string | undefined;
  let home = '';
  let work = '';
  let token = '';
  let session = '';
  let other = '';
  const fleet = `gitfleet-${RUN}`;
  const othersFleet = `theirs-${RUN}`;
  const url = (secret: string | undefined, name = fleet) => `http://${secret === undefined ? '' : `me:${secret}@`}127.0.0.1:${server?.port}/git/${name}.git`;
  const releases = async (): Promise<Release[]> => (await api(server?.url ?? '', 'GET', `/fleets/${fleet}/releases`, { token })).body as Release[];
  const builds = async (): Promise<Build[]> => (await api(server?.url ?? '', 'GET', `/fleets/${fleet}/builds`, { token })).body as Build[];
  const lsRemote = async (): Promise<Record<string, string>> => {
    const r = await git(['ls-remote', url(token)], { home });
    assert.equal(r.code, 0, r.stderr);
    return refs(r.stdout);
  };
  /** Commits the project in `clone` with `run` as its RUN step and answers the commit. */
  const commit = async (clone: string, run: string, message: string): Promise<string> => {
    writeProject(clone, run);
    assert.equal((await git(['add', '-A'], { cwd: clone, home })).code, 0);
    const c = await git(['commit', '-q', '-m', message], { cwd: clone, home });
    assert.equal(c.code, 0, c.stderr);
    return (await git(['rev-parse', 'HEAD'], { cwd: clone, home })).stdout.trim();
  };

  before(async () => {
    await ensureBaseImages();
    database = dialect === 'postgres' ? freshPostgresDatabase() : undefined;
    server = await startServer({ database });
    home = scratchDir('skiff-git-home-');
    work = scratchDir('skiff-git-work-');
    const me = await createUser(server.url);
    session = me.token;
    // An API key, as a user puts in a git remote (a session token works too: see the fetch below).
    const key = await api(server.url, 'POST', '/api-keys', { token: me.token, body: { name: 'git' } });
    assert.equal(key.status, 201, JSON.stringify(key.body));
    token = (key.body as { key: string }).key;
    assert.equal((await api(server.url, 'POST', '/fleets', { token, body: { name: fleet, deviceType: 'intel-nuc' } })).status, 201);
    const them = await createUser(server.url);
    other = them.token;
    assert.equal((await api(server.url, 'POST', '/fleets', { token: other, body: { name: othersFleet, deviceType: 'intel-nuc' } })).status, 201);
  });

  after(async () => {
    await server?.kill('SIGTERM');
    if (database) dropPostgresDatabase(database);
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('clones the empty repository of a new fleet', async () => {
    const r = await git(['clone', url(token), 'clone'], { cwd: work, home });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /cloned an empty repository/);
  });

  it('a push without a token, or with a wrong one, fails as git says and stores nothing', async () => {
    const clone = path.join(work, 'clone');
    await commit(clone, 'true', 'unauthorised');
    const none = await git(['push', url(undefined), 'HEAD:refs/heads/nobody'], { cwd: clone, home });
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /could not read Username|Authentication failed/);
    const wrong = await git(['push', url('ska_wrong'), 'HEAD:refs/heads/nobody'], { cwd: clone, home });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /Authentication failed/);
    assert.equal((await lsRemote())['refs/heads/nobody'], undefined);
  });

  it("another user's fleet is 'repository not found', for a clone and a push", async () => {
    const clone = await git(['clone', url(token, othersFleet), 'theirs'], { cwd: work, home });
    assert.notEqual(clone.code, 0);
    assert.match(clone.stderr, /repository '.*' not found/);
    const push = await git(['push', url(token, othersFleet), 'HEAD:refs/heads/main'], { cwd: path.join(work, 'clone'), home });
    assert.notEqual(push.code, 0);
    assert.match(push.stderr, /not found/);
    // The owner still sees an empty repository.
    const theirs = await git(['ls-remote', url(other, othersFleet)], { home });
    assert.equal(theirs.code, 0, theirs.stderr);
    assert.equal(theirs.stdout.trim(), '');
  });

  it('a push of another branch is stored, not deployed, and says so', async () => {
    const clone = path.join(work, 'clone');
    const sha = (await git(['rev-parse', 'HEAD'], { cwd: clone, home })).stdout.trim();
    const r = await git(['push', url(token), 'HEAD:refs/heads/feature'], { cwd: clone, home });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /remote: stored refs\/heads\/feature; only main deploys/);
    assert.equal((await lsRemote())['refs/heads/feature'], sha);
    assert.deepEqual(await builds(), [], 'no build');
    assert.deepEqual(await releases(), [], 'no release');
  });

  it('a push to main builds the commit, shows the build, makes the release stamped with it and moves main', async () => {
    const clone = path.join(work, 'clone');
    const sha = await commit(clone, `echo built-${RUN} > /built`, 'v1');
    const r = await git(['push', url(token), 'HEAD:refs/heads/main'], { cwd: clone, home });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /remote: Building [0-9a-f]{7} \(refs\/heads\/main\)/);
    assert.match(r.stderr, /remote: .*\[main\]/, 'the service\'s build lines');
    const created = new RegExp(`remote: Release ([0-9a-f]{7}) created for fleet ${fleet}; devices tracking the fleet update now`).exec(r.stderr);
    assert.ok(created, r.stderr);
    assert.equal((await lsRemote())['refs/heads/main'], sha);
    const [release] = await releases();
    assert.equal(release?.commit.slice(0, 7), created[1]);
    assert.match(r.stderr, /remote: SERVICE +IMAGE +SIZE/, 'the release table, as skiff push shows it');
    assert.equal(release?.gitCommit, sha);
    assert.equal(release?.status, 'success');
    const [build] = await builds();
    assert.deepEqual([build?.source, build?.gitCommit, build?.gitRef, build?.status], ['git', sha, 'refs/heads/main', 'success']);
  });

  it('a commit that does not build is refused: the reason is shown, main stays, no release', async () => {
    const clone = path.join(work, 'clone');
    const before = (await lsRemote())['refs/heads/main'];
    const known = (await releases()).length;
    await commit(clone, `echo broken-${RUN}; exit 3`, 'broken');
    const r = await git(['push', url(token), 'HEAD:refs/heads/main'], { cwd: clone, home });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /\[remote rejected\] HEAD -> main \(pre-receive hook declined\)/);
    assert.match(r.stderr, new RegExp(`remote: \\[main\\] .*broken-${RUN}`), 'the failing service\'s last lines');
    assert.match(r.stderr, /remote: error: build [0-9a-f]{7} failed.*the push is refused and main stays where it was/);
    assert.equal((await lsRemote())['refs/heads/main'], before);
    assert.equal((await releases()).length, known);
  });

  it('a commit that is not a project is refused before any build, naming what is missing', async () => {
    const dir = scratchDir('skiff-git-notproject-');
    assert.equal((await git(['init', '-q', '-b', 'main', dir], { home })).code, 0);
    writeFileSync(path.join(dir, 'README.md'), 'no compose file, no Dockerfile\n');
    assert.equal((await git(['add', '-A'], { cwd: dir, home })).code, 0);
    assert.equal((await git(['commit', '-q', '-m', 'not a project'], { cwd: dir, home })).code, 0);
    const before = (await lsRemote())['refs/heads/main'];
    const known = (await builds()).length;
    const r = await git(['push', url(token), '+HEAD:refs/heads/main'], { cwd: dir, home });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /remote: error: no docker-compose\.yml or Dockerfile in commit [0-9a-f]{7}\b/);
    assert.doesNotMatch(r.stderr, /skiff-git-/, 'the server\'s temporary folder is not shown');
    assert.match(r.stderr, /remote: The push is refused; the branch stays where it was\./);
    assert.match(r.stderr, /pre-receive hook declined/);
    assert.equal((await lsRemote())['refs/heads/main'], before);
    assert.equal((await builds()).length, known, 'no build was made');
  });

  it('deleting main is refused', async () => {
    const r = await git(['push', url(token), ':refs/heads/main'], { cwd: path.join(work, 'clone'), home });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /remote: error: deleting main is refused/);
    assert.ok((await lsRemote())['refs/heads/main']);
  });

  it('clone and fetch afterwards get what was pushed (with a session token too)', async () => {
    const main = (await lsRemote())['refs/heads/main'];
    const r = await git(['clone', url(token), 'again'], { cwd: work, home });
    assert.equal(r.code, 0, r.stderr);
    const again = path.join(work, 'again');
    assert.equal((await git(['rev-parse', 'HEAD'], { cwd: again, home })).stdout.trim(), main);
    const f = await git(['fetch', url(session), 'feature'], { cwd: again, home });
    assert.equal(f.code, 0, f.stderr);
    assert.equal((await git(['rev-parse', 'FETCH_HEAD'], { cwd: again, home })).stdout.trim(), (await lsRemote())['refs/heads/feature']);
  });

  it('a gzip-compressed request body (as git sends large ones) is inflated by http-backend', async () => {
    const main = (await lsRemote())['refs/heads/main'] ?? '';
    const pkt = (line: string) => `${(line.length + 4).toString(16).padStart(4, '0')}${line}`;
    const request = gzipSync(Buffer.from(`${pkt(`want ${main}\n`)}0000${pkt('done\n')}`));
    const res = await fetch(`${server?.url}/git/${fleet}.git/git-upload-pack`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`me:${token}`).toString('base64')}`, 'content-type': 'application/x-git-upload-pack-request', 'content-encoding': 'gzip' },
      body: request,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/x-git-upload-pack-result');
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(body.subarray(0, 8).toString(), '0008NAK\n');
    assert.equal(body.subarray(8, 12).toString(), 'PACK', 'a pack of main follows');
  });

  it('Ctrl-C of the pushing git cancels the build: no release, main stays', async () => {
    const clone = path.join(work, 'clone');
    await git(['reset', '-q', '--hard', (await lsRemote())['refs/heads/main'] ?? ''], { cwd: clone, home });
    const before = (await lsRemote())['refs/heads/main'];
    const known = (await releases()).length;
    await commit(clone, `echo slow-${RUN}; sleep 120`, 'slow');
    const stop = new AbortController();
    const pushed = git(['push', url(token), 'HEAD:refs/heads/main'], { cwd: clone, home, signal: stop.signal, onStderr: (text) => {
      if (text.includes(`slow-${RUN}`)) stop.abort();
    } });
    const r = await pushed;
    assert.notEqual(r.code, 0);
    const cancelled = await waitFor(async () => (await builds()).find((b) => b.status === 'cancelled'), 'the build cancelled on the server', 60_000, 250).catch(async (err: Error) => {
      throw new Error(`${err.message}\ngit printed: ${r.stderr}\nbuilds: ${JSON.stringify(await builds())}\nserver: ${server?.output().slice(-3000)}`);
    });
    assert.ok(cancelled.gitCommit);
    assert.equal((await lsRemote())['refs/heads/main'], before);
    assert.equal((await releases()).length, known);
    // The build's RUN container went with it.
    await waitFor(async () => (await docker.listContainers({ filters: { label: [`${TEST_LABEL}=${LABEL_VALUE}`] } })).length === 0, 'no build container left running', 60_000, 250);
  });

  it('two pushes to main at once: the second is refused clearly while the first builds, one release', async () => {
    const first = path.join(work, 'clone');
    const second = path.join(work, 'again');
    const main = (await lsRemote())['refs/heads/main'] ?? '';
    for (const clone of [first, second]) {
      assert.equal((await git(['fetch', '-q', url(token), 'main'], { cwd: clone, home })).code, 0);
      assert.equal((await git(['reset', '-q', '--hard', main], { cwd: clone, home })).code, 0);
    }
    const known = (await releases()).length;
    // Unique per run of this block (sqlite, then postgres): a cached step would not build for 4 s.
    const a = await commit(first, `echo first-${RUN}-${Date.now()}; sleep 4`, 'first');
    await commit(second, `echo second-${RUN}`, 'second');
    let building: () => void = () => {};
    const started = new Promise<void>((resolve) => (building = resolve));
    const pushing = git(['push', url(token), 'HEAD:refs/heads/main'], { cwd: first, home, onStderr: (text) => {
      // The step starting (`#2 [2/2] RUN echo first-…`) or its output: the build runs for 4 s more.
      if (new RegExp(`\\[main\\] .*first-${RUN}`).test(text)) building();
    } });
    await Promise.race([started, pushing]);
    const refused = await git(['push', url(token), 'HEAD:refs/heads/main'], { cwd: second, home });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /remote: error: another push to main is being built \([0-9a-f]{7}, since .*\); the push is refused/);
    const done = await pushing;
    assert.equal(done.code, 0, done.stderr);
    assert.equal((await lsRemote())['refs/heads/main'], a);
    assert.equal((await releases()).length, known + 1);
  });
});

describe('git over HTTP: the limits (a server with --build-context-limit 1)', function () {
  this.timeout(120_000);
  let server: StartedServer | undefined;
  const fleet = `limited-${RUN}`;

  before(async () => {
    server = await startServer({ args: ['--build-context-limit', '1'] });
  });
  after(async () => {
    await server?.kill('SIGTERM');
  });

  it('a push larger than the limit is refused with 413 and stores nothing', async () => {
    assert.ok(server);
    const { home, dir, remote } = await userRepo(server, fleet, 'dev');
    // Random bytes do not compress: the pack is over 1 MiB.
    writeFileSync(path.join(dir, 'blob'), randomBytes(3 * 1024 * 1024));
    assert.equal((await git(['add', 'blob'], { cwd: dir, home })).code, 0);
    assert.equal((await git(['commit', '-q', '-m', 'big'], { cwd: dir, home })).code, 0);
    const r = await git(['push', remote, 'dev'], { cwd: dir, home });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /413/);
    const ls = await git(['ls-remote', remote], { home });
    assert.equal(ls.code, 0, ls.stderr);
    assert.equal(ls.stdout.trim(), '');
  });

  it('wrong tokens are rate-limited per address, as logins are (then even a good one waits)', async () => {
    assert.ok(server);
    const me = await createUser(server.url);
    const infoRefs = (secret: string) => fetch(`${server?.url}/git/${fleet}.git/info/refs?service=git-upload-pack`, { headers: { authorization: `Basic ${Buffer.from(`me:${secret}`).toString('base64')}` } });
    const statuses: number[] = [];
    for (let i = 0; i < 31; i++) statuses.push((await infoRefs(`ska_wrong${i}`)).status);
    assert.deepEqual(statuses, [...Array<number>(30).fill(401), 429]);
    const good = await infoRefs(me.token);
    assert.equal(good.status, 429);
    assert.ok(Number(good.headers.get('retry-after')) > 0);
  });
});

describe('git push reaches a device tracking the fleet', function () {
  this.timeout(300_000);
  const label = `git-push-agent-${RUN}`;
  let server: StartedServer | undefined;
  let agent: TestAgent | undefined;

  before(async () => {
    await ensureBaseImages();
    server = await startServer();
  });
  after(async () => {
    await agent?.kill().catch(() => {});
    if (agent) await cleanupAgent(agent.uuid);
    await server?.kill('SIGTERM');
    await cleanupImages({ label: `${TEST_LABEL}=${label}` });
  });

  it('the device runs the release a git push made, stamped with the commit', async () => {
    assert.ok(server);
    const fleet = `devices-${RUN}`;
    const me = await createUser(server.url);
    assert.equal((await api(server.url, 'POST', '/fleets', { token: me.token, body: { name: fleet, deviceType: 'intel-nuc' } })).status, 201);
    assert.equal((await api(server.url, 'PUT', '/variables', { token: me.token, body: { fleet, name: 'SKIFF_AGENT_POLL_INTERVAL', value: '1000' } })).status, 200);
    const config = await api(server.url, 'POST', `/fleets/${fleet}/config`, { token: me.token, body: {} });
    assert.equal(config.status, 200, JSON.stringify(config.body));
    const dataDir = scratchDir('skiff-git-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...(config.body as object), appUpdatePollInterval: 1000 }));
    agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')] });
    const uuid = agent.uuid;
    await waitFor(async () => ((await api(server?.url ?? '', 'GET', `/devices?fleet=${fleet}`, { token: me.token })).body as Device[]).length === 1, 'the device registered', 60_000, 250);

    const home = scratchDir('skiff-git-home-');
    const dir = scratchDir('skiff-git-device-');
    assert.equal((await git(['init', '-q', '-b', 'main', dir], { home })).code, 0);
    writeProject(dir, `echo device-${RUN} > /built`, label);
    assert.equal((await git(['add', '-A'], { cwd: dir, home })).code, 0);
    assert.equal((await git(['commit', '-q', '-m', 'for the device'], { cwd: dir, home })).code, 0);
    const sha = (await git(['rev-parse', 'HEAD'], { cwd: dir, home })).stdout.trim();
    const r = await git(['push', `http://me:${me.token}@127.0.0.1:${server.port}/git/${fleet}.git`, 'main'], { cwd: dir, home });
    assert.equal(r.code, 0, r.stderr);
    const short = /remote: Release ([0-9a-f]{7}) created/.exec(r.stderr)?.[1];
    assert.ok(short, r.stderr);
    const release = ((await api(server.url, 'GET', `/fleets/${fleet}/releases`, { token: me.token })).body as Release[])[0]?.commit;
    assert.equal(release?.slice(0, 7), short);

    let last: Device | undefined;
    await waitFor(async () => {
      last = (await api(server?.url ?? '', 'GET', `/devices/${uuid}`, { token: me.token })).body as Device;
      const [container] = await docker.listContainers({ filters: { label: [`io.skiff.agent=${uuid}`, 'io.balena.service-name=main'], status: ['running'] } });
      return last.runningRelease === release && container?.Labels['io.skiff.commit'] === release;
    }, 'the device running the pushed release', 180_000, 500).catch((err: Error) => {
      throw new Error(`${err.message}\nserver shows: ${JSON.stringify(last)}\nagent printed: ${agent?.output().slice(-3000)}`);
    });
    const made = (await api(server.url, 'GET', `/releases/${release}`, { token: me.token })).body as Release;
    assert.equal(made.gitCommit, sha);
  });
});

describe('git push: the server killed with its git children during the build (as systemd stops a crashed service)', function () {
  this.timeout(300_000);
  let server: StartedServer | undefined;
  const fleet = `killed-${RUN}`;

  after(async () => {
    await server?.kill('SIGTERM');
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  // Found by the breaker pass: the restarted server built the push again and released it, so the
  // devices ran a commit that main never reached, while git had said the push failed.
  it('does not build the push again at the next start: the build fails saying so, no release, main never moves, no build container left', async () => {
    await ensureBaseImages();
    server = await startServer();
    const { token, home, dir, remote } = await userRepo(server, fleet, 'main');
    writeProject(dir, `echo killed-${RUN}; sleep 120`);
    assert.equal((await git(['add', '-A'], { cwd: dir, home })).code, 0);
    assert.equal((await git(['commit', '-q', '-m', 'slow'], { cwd: dir, home })).code, 0);
    let building: () => void = () => {};
    const started = new Promise<void>((resolve) => (building = resolve));
    const pushing = git(['push', remote, 'HEAD:refs/heads/main'], { cwd: dir, home, onStderr: (text) => {
      if (new RegExp(`\\[main\\] (#\\d+ )?killed-${RUN}`).test(text)) building();
    } });
    await Promise.race([started, pushing.then((r) => assert.fail(`the push ended before its build ran: ${r.stderr}`))]);
    // The server, its registry and the whole git http-backend → receive-pack → pre-receive chain.
    for (const pid of processTree(server.child.pid ?? 0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch { /* already gone */ }
    }
    await server.kill('SIGKILL');
    assert.notEqual((await pushing).code, 0);

    server = await startServer({ dataDir: server.dataDir, port: server.port });
    const base = server.url;
    const builds = async (): Promise<Build[]> => (await api(base, 'GET', `/fleets/${fleet}/builds`, { token })).body as Build[];
    const ended = await waitFor(async () => (await builds()).find((b) => b.status !== 'queued' && b.status !== 'running'), 'the build to end after the restart', 60_000, 250)
      .catch(async (err: Error) => assert.fail(`${err.message}: ${JSON.stringify(await builds())}`));
    assert.equal(ended.status, 'failed');
    assert.match(ended.error ?? '', /restarted during this git push.*push again/);
    assert.deepEqual((await api(base, 'GET', `/fleets/${fleet}/releases`, { token })).body, []);
    const ls = await git(['ls-remote', remote], { home });
    assert.equal(ls.code, 0, ls.stderr);
    assert.equal(refs(ls.stdout)['refs/heads/main'], undefined);
    await waitFor(async () => (await docker.listContainers({ filters: { label: [`${TEST_LABEL}=${LABEL_VALUE}`] } })).length === 0, 'no build container left running', 60_000, 250);
  });
});
