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
import path from 'node:path';
import { runCli, type CliResult } from '../support/cli.js';
import { BASE_AMD64, TEST_LABEL, cleanupImages, ensureBaseImages, makeProject } from '../support/engine.js';
import { ADMIN, createUser, login, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import type { Fleet, Release } from '../../src/lib/api/resources.js';

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
