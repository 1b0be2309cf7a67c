/**
 * BuildKit builds as a user runs them (issue 13): the CLI as a subprocess on this machine's real
 * engine (Docker 20.10, whose built-in frontend predates heredocs), a real agent for a device push
 * and a real `skiff server` for a fleet push. Few, tiny builds on the busybox base images: each
 * test's project carries this run's label, removed at the end with the agent's and fleet's objects.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { cleanupAgent, eventually, startAgent, status, type TestAgent } from '../support/agent.js';
import { runCli, type CliResult } from '../support/cli.js';
import { BASE_AMD64, BASE_ARM64, TEST_LABEL, cleanupImages, docker, ensureBaseImages, makeProject, runInImage } from '../support/engine.js';
import { ADMIN, login, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import { startTty } from '../support/tty.js';
import type { Release } from '../../src/lib/api/resources.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `buildkit-${RUN}`;
const LABEL_LINE = `LABEL ${TEST_LABEL}=${LABEL_VALUE}`;
const DOCKER = '/usr/bin/docker';

interface ServiceJson { service: string; image: string; imageId: string; architecture: string; builder: string; steps: number; cachedSteps: number; stepTimes: Array<{ name: string; cached: boolean; seconds: number }> }
interface BuildJson { services: ServiceJson[] }

function ok(r: CliResult): void {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}${r.stdout}`);
}

function result<T>(r: CliResult): T {
  ok(r);
  return (JSON.parse(r.stdout) as { result: T }).result;
}

/** A user error: the exit code, one last line on stderr matching `pattern`, no stack trace. */
function refused(r: CliResult, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, `exit ${r.code}: ${r.stderr}`);
  const last = r.stderr.trim().split('\n').at(-1) ?? '';
  assert.match(last, pattern);
  assert.doesNotMatch(r.stderr, /^\s+at .+:\d+:\d+\)?$/m, 'no stack trace');
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** `docker save` of an image, every byte of its layers and config (uncompressed tar). */
function saved(image: string): Buffer {
  return execFileSync(DOCKER, ['save', image], { maxBuffer: 64 * 1024 * 1024 });
}

/** Asserts `secrets` appear nowhere in the image: history, config, layers. */
async function assertNoSecrets(image: string, secrets: string[]): Promise<void> {
  const history = execFileSync(DOCKER, ['history', '--no-trunc', image], { encoding: 'utf8' });
  const config = JSON.stringify(await docker.getImage(image).inspect());
  const bytes = saved(image);
  for (const s of secrets) {
    assert.ok(!history.includes(s), `docker history shows ${s}`);
    assert.ok(!config.includes(s), `the image config holds ${s}`);
    assert.ok(!bytes.includes(s), `docker save of ${image} holds ${s}`);
  }
}

/** One service whose RUN reads the npmrc and tok secrets and keeps only their sha256 (a balena.yml names npmrc). */
function secretProject(name: string, npmrc: string, extra = ''): string {
  return makeProject({
    'balena.yml': 'build-secrets:\n  global:\n    - source: npmrc\n      dest: npmrc\n',
    '.balena/secrets/npmrc': npmrc,
    'docker-compose.yml': `services:\n  main:\n    build: .\n    labels:\n      ${TEST_LABEL}: ${LABEL_VALUE}\n    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]\n`,
    Dockerfile: [
      `FROM ${BASE_AMD64}`, LABEL_LINE, 'COPY . /app',
      `RUN --mount=type=cache,id=bk-${RUN},target=/cache --mount=type=secret,id=npmrc --mount=type=secret,id=tok busybox sha256sum /run/secrets/npmrc /run/secrets/tok > /sums && echo ${name}-${RUN} > /cache/seen`,
      extra,
    ].join('\n'),
  }, `bk${name}${RUN}`);
}

describe('BuildKit builds end to end (skiff build, push to a device and to a fleet)', function () {
  this.timeout(240_000);
  const agents: TestAgent[] = [];

  before(async () => {
    const { arm64 } = await ensureBaseImages();
    assert.ok(arm64, 'the arm64 busybox is cached by scripts/setup-host.sh');
  });

  after(async () => {
    for (const a of agents.splice(0)) {
      await a.kill().catch(() => {});
      await cleanupAgent(a.uuid);
    }
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  const build = (dir: string, ...args: string[]) => runCli(['build', '--deviceType', 'intel-nuc', ...args], { cwd: dir });

  it('a pip-style cache mount keeps its files between builds; --json says buildkit with steps, cached steps and step times', async () => {
    const wheel = `/root/.cache/pip/wheel-${RUN}.whl`;
    const dir = makeProject({
      'requirements.txt': 'flask==1\n',
      Dockerfile: [
        `FROM ${BASE_AMD64}`, LABEL_LINE,
        `RUN echo base-${RUN} > /base`,
        'COPY requirements.txt /app/',
        // A cache id of this run's own, so an earlier run's cache cannot answer the first build.
        `RUN --mount=type=cache,id=pip-${RUN},target=/root/.cache/pip if [ -f ${wheel} ]; then echo "found cached wheel-${RUN}"; else echo "downloading wheel-${RUN}"; echo wheel > ${wheel}; fi; cp ${wheel} /app/`,
      ].join('\n'),
    }, `bkpip${RUN}`);
    const first = await build(dir, '--json', '--logs');
    const [one] = result<BuildJson>(first).services;
    assert.ok(one);
    // The step's output lines (`#N <line>`), not its name, which holds both phrases.
    assert.match(first.stderr, new RegExp(`#\\d+ downloading wheel-${RUN}`));
    assert.doesNotMatch(first.stderr, /#\d+ found cached wheel/);
    assert.equal(one.builder, 'buildkit');
    assert.equal(one.steps, 3);

    writeFileSync(path.join(dir, 'requirements.txt'), 'flask==2\n');
    const second = await build(dir, '--json', '--logs');
    const [two] = result<BuildJson>(second).services;
    assert.ok(two);
    assert.match(second.stderr, new RegExp(`#\\d+ found cached wheel-${RUN}`), second.stderr);
    assert.doesNotMatch(second.stderr, /#\d+ downloading wheel/);
    assert.equal(two.builder, 'buildkit');
    assert.equal(two.steps, 3);
    assert.equal(two.cachedSteps, 1, 'only the RUN before the changed COPY is cached');
    assert.equal(two.stepTimes.length, 3);
    assert.ok(two.stepTimes.some((s) => s.cached && /RUN echo base-/.test(s.name)), JSON.stringify(two.stepTimes));
    assert.ok(two.stepTimes.every((s) => typeof s.seconds === 'number' && s.seconds >= 0));
    assert.equal((await runInImage(two.image, ['cat', `/app/wheel-${RUN}.whl`])).trim(), 'wheel');
  });

  it('secrets from balena.yml and --secret reach RUN and nothing else: not history, layers, config, nor the image\'s files', async () => {
    const npmrc = `npmrc-${randomBytes(8).toString('hex')}`;
    const tok = `tok-${randomBytes(8).toString('hex')}`;
    const dir = secretProject('secret', npmrc);
    const r = await runCli(['build', '--deviceType', 'intel-nuc', '--secret', 'id=tok,env=TOK', '--json', '--logs'], { cwd: dir, env: { TOK: tok } });
    const [svc] = result<BuildJson>(r).services;
    assert.ok(svc);
    assert.equal(svc.builder, 'buildkit');
    const sums = await runInImage(svc.image, ['cat', '/sums']);
    assert.match(sums, new RegExp(`^${sha256(npmrc)}\\s+/run/secrets/npmrc$`, 'm'));
    assert.match(sums, new RegExp(`^${sha256(tok)}\\s+/run/secrets/tok$`, 'm'));
    await assertNoSecrets(svc.image, [npmrc, tok]);
    assert.ok(!`${r.stdout}${r.stderr}`.includes(npmrc) && !`${r.stdout}${r.stderr}`.includes(tok), 'the CLI never prints a secret');
    // COPY . /app took the project, but not .balena/secrets.
    const files = await runInImage(svc.image, ['find', '/app']);
    assert.match(files, /^\/app\/balena\.yml$/m);
    assert.doesNotMatch(files, /secrets/);
  });

  it('heredocs, COPY --chmod and COPY <<EOF build on engine 20.10, rewritten, and say so', async () => {
    const dir = makeProject({
      'run.sh': '#!/bin/sh\necho hi\n',
      Dockerfile: [
        `FROM ${BASE_AMD64}`, LABEL_LINE,
        'RUN <<EOF', `echo one-${RUN} > /h1`, 'echo two >> /h1', 'EOF',
        'RUN sh <<EOF', 'echo from-sh > /h2', 'EOF',
        'COPY --chmod=750 run.sh /run.sh',
        'COPY <<EOF /etc/x.conf', `key=${RUN}`, 'EOF',
      ].join('\n'),
    }, `bkheredoc${RUN}`);
    const r = await build(dir);
    ok(r);
    assert.match(r.stderr, /Dockerfile: 3 heredocs rewritten for engine 20\.10[^ ]* .*\(lines 3, 7, 11\)/);
    const out = await runInImage(`bkheredoc${RUN}_main:latest`, ['sh', '-c', 'cat /h1 /h2 /etc/x.conf; ls -l /run.sh /etc/x.conf']);
    assert.match(out, new RegExp(`^one-${RUN}\ntwo\nfrom-sh\nkey=${RUN}\n`));
    assert.match(out, /^-rwxr-x---\s.*\/run\.sh$/m);
    assert.match(out, /^-rw-r--r--\s.*\/etc\/x\.conf$/m);
  });

  it('--arch aarch64: TARGETARCH is arm64 under emulation, and the image is arm64', async () => {
    const dir = makeProject({ Dockerfile: `FROM ${BASE_ARM64}\n${LABEL_LINE}\nARG TARGETARCH\nRUN echo $TARGETARCH > /arch && uname -m > /uname && echo ${RUN} > /run-id\n` }, `bkarm${RUN}`);
    const r = await runCli(['build', '--arch', 'aarch64', '--json'], { cwd: dir });
    const [svc] = result<BuildJson>(r).services;
    assert.ok(svc);
    assert.equal(svc.builder, 'buildkit');
    assert.equal(svc.architecture, 'arm64');
    assert.equal((await docker.getImage(svc.image).inspect()).Architecture, 'arm64');
    // One command each: `docker run … sh -c 'cat /arch'` under this machine's qemu handler ran /arch as a script.
    assert.equal((await runInImage(svc.image, ['cat', '/arch'], 'linux/arm64')).trim(), 'arm64');
    assert.equal((await runInImage(svc.image, ['cat', '/uname'], 'linux/arm64')).trim(), 'aarch64');
  });

  it('push to a device: cache and secret mounts build on its engine with BuildKit, and the service runs', async () => {
    const agent = await startAgent();
    agents.push(agent);
    const tok = `tok-${randomBytes(8).toString('hex')}`;
    const dir = secretProject('device', 'npmrc-device');
    const tokFile = path.join(scratchDir('skiff-bk-tok-'), 'tok');
    writeFileSync(tokFile, tok);
    const r = await runCli(['push', `127.0.0.1:${agent.port}`, '--source', dir, '--dockerPort', String(agent.enginePort), '--detached', '--secret', `id=tok,src=${tokFile}`]);
    ok(r);
    assert.match(r.stderr, /Building with BuildKit/);
    await eventually(async () => (await status(agent.url)).containers.find((c) => c.serviceName === 'main' && c.status === 'Running'), 60_000, 'main to run');
    const [container] = await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`] } });
    assert.ok(container);
    const sums = execFileSync(DOCKER, ['exec', container.Id, 'cat', '/sums'], { encoding: 'utf8' });
    assert.match(sums, new RegExp(`^${sha256(tok)}\\s+/run/secrets/tok$`, 'm'));
  });

  it('--no-buildkit builds a plain project to the same tags, labels and architecture; the builder line says classic', async () => {
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\n${LABEL_LINE}\nRUN echo plain-${RUN} > /plain\n` }, `bkplain${RUN}`);
    const image = `bkplain${RUN}_main:latest`;
    const kit = await build(dir);
    ok(kit);
    assert.match(kit.stderr, /Building with BuildKit/);
    const a = await docker.getImage(image).inspect();
    const classic = await build(dir, '--no-buildkit');
    ok(classic);
    assert.match(classic.stderr, /^Building with the classic builder \(--no-buildkit; engine [^)]+ has BuildKit\)$/m);
    assert.doesNotMatch(classic.stderr, /BuildKit \(engine/);
    const b = await docker.getImage(image).inspect();
    assert.deepEqual(b.RepoTags, a.RepoTags);
    assert.deepEqual(b.Config.Labels, a.Config.Labels);
    assert.equal(b.Architecture, a.Architecture);
    assert.equal((await runInImage(image, ['cat', '/plain'])).trim(), `plain-${RUN}`);
  });

  it('bad inputs: one clear line each, with its exit code', async () => {
    const project = (dockerfile: string) => makeProject({ Dockerfile: `FROM ${BASE_AMD64}\n${LABEL_LINE}\n${dockerfile}` });
    refused(await build(makeProject({ Dockerfile: `# syntax=nope.invalid/frontend:1\nFROM ${BASE_AMD64}\n${LABEL_LINE}\nRUN true\n` })), 5,
      /^Error: Dockerfile:1: .*nope\.invalid\/frontend:1, which cannot be pulled.*Remove the '# syntax=' line.*docker load/);
    refused(await build(project('RUN true\nRUN --mount=type=secret,id=missing cat /run/secrets/missing\n')), 3,
      /^Error: Dockerfile:4: .*secret 'missing', which was not given.*build-secrets.*--secret id=missing/);
    const cache = project('RUN --mount=type=cache,target=/c true\n');
    refused(await build(cache, '--no-buildkit'), 3, /^Error: Dockerfile:3: RUN --mount=type=cache needs BuildKit, which this build does not use \(--no-buildkit; engine [^)]+ has BuildKit\)\. Build without --no-buildkit \(or with --buildkit\)/);
    refused(await build(project('RUN <<EOF\necho hi\n')), 3, /^Error: Dockerfile:3: heredoc <<EOF .*never closed/);
    refused(await build(cache, '--buildkit', '--squash'), 2, /^Error: --squash needs the classic builder; BuildKit cannot squash/);
    refused(await build(cache, '--secret', 'id=a,src=/nonexistent'), 2, /^Error: --secret id=a: cannot read '\/nonexistent'/);
  });

  it('on a terminal: the compact live view of two services, the table, and a failing step\'s whole output once it fails', async () => {
    const dockerfile = (svc: string, tail: string) => `FROM ${BASE_AMD64}\n${LABEL_LINE}\nRUN echo ${svc}-base-${RUN} > /base\n${tail}\n`;
    const files = {
      'docker-compose.yml': 'services:\n  a:\n    build: ./a\n  b:\n    build: ./b\n',
      'a/Dockerfile': dockerfile('a', `RUN echo a-${RUN} > /a`),
      'b/Dockerfile': dockerfile('b', `RUN echo b-${RUN} > /b`),
    };
    const dir = makeProject(files, `bktty${RUN}`);
    ok(await build(dir)); // so that the terminal build has cached steps to show
    // A second long enough for the live view to draw the running step.
    writeFileSync(path.join(dir, 'b/Dockerfile'), dockerfile('b', `RUN echo b2-${RUN} > /b && sleep 1`));
    const tty = startTty(['build', '--deviceType', 'intel-nuc'], { cwd: dir });
    assert.equal(await tty.done, 0, tty.output());
    const screen = tty.output();
    assert.match(screen, new RegExp(`\\[3/3\\] RUN echo b2-${RUN} .*· 1 cached`), screen);
    assert.match(screen, /^SERVICE\s+IMAGE\s+SIZE\s+ARCH\s+TIME\s+CACHED\n(a|b)\s.*\n(a|b)\s.*1\/2/m);
    assert.doesNotMatch(screen, /#\d+ /, 'no raw BuildKit progress lines');

    writeFileSync(path.join(dir, 'b/Dockerfile'), dockerfile('b', `RUN echo fail-first-${RUN}; echo fail-last-${RUN}; exit 3`));
    const failing = startTty(['build', '--deviceType', 'intel-nuc'], { cwd: dir });
    assert.equal(await failing.done, 5, failing.output());
    const out = failing.output();
    // The live view hid the step's lines while it ran; once it fails they are all printed, under the
    // service's failure line, then the error.
    const failed = out.indexOf('[b] failed');
    const first = out.indexOf(`[b] fail-first-${RUN}\n`);
    const last = out.indexOf(`[b] fail-last-${RUN}\n`);
    const error = out.search(/^Error: b\/Dockerfile:4: service 'b' failed to build: the RUN step failed with exit code 3/m);
    assert.ok(failed >= 0 && first > failed && last > first && error > last, out);
  });

  describe('a fleet push: the server builds with BuildKit and serves balena.yml build-secrets', () => {
    let server: StartedServer;
    let env: NodeJS.ProcessEnv;
    const fleet = `bk-${RUN}`;

    before(async () => {
      server = await startServer();
      env = { HOME: scratchDir('skiff-bk-home-'), SKIFF_API_URL: server.url, SKIFF_API_TOKEN: await login(server.url, ADMIN.email, ADMIN.password) };
      ok(await runCli(['fleet', 'create', fleet, '--type', 'intel-nuc', '--json'], { env }));
    });

    after(async () => {
      await server?.kill('SIGTERM');
    });

    it('builds, makes the release, and the secret is in no layer, the release or the build log', async () => {
      const npmrc = `npmrc-${randomBytes(8).toString('hex')}`;
      const dir = makeProject({
        'balena.yml': 'build-secrets:\n  global:\n    - source: npmrc\n      dest: npmrc\n',
        '.balena/secrets/npmrc': npmrc,
        'docker-compose.yml': `services:\n  main:\n    build: .\n    labels:\n      ${TEST_LABEL}: ${LABEL_VALUE}\n`,
        Dockerfile: `FROM ${BASE_AMD64}\n${LABEL_LINE}\nCOPY . /app\nRUN --mount=type=cache,id=bk-${RUN},target=/cache --mount=type=secret,id=npmrc busybox sha256sum /run/secrets/npmrc > /sums\n`,
      }, `bkfleet${RUN}`);
      const r = await runCli(['push', fleet, '--source', dir, '--json'], { env });
      const release = result<Release>(r);
      assert.equal(release.status, 'success');
      assert.ok(release.build);
      const events = await (await fetch(`${server.url}/builds/${release.build}/events`, { headers: { authorization: `Bearer ${env.SKIFF_API_TOKEN}` } })).text();
      assert.match(events, /"kind":"builder","builder":"buildkit"/);
      const everything = `${r.stdout}${r.stderr}${events}${JSON.stringify(release)}`;
      assert.ok(!everything.includes(npmrc), 'the secret is in the push output, the release or the build log');
      // The server's builder is this machine's engine: the image it pushed is there, labelled with the fleet.
      const fleetUuid = (JSON.parse((await runCli(['fleet', 'info', fleet, '--json'], { env })).stdout) as { result: { uuid: string } }).result.uuid;
      const [image] = await docker.listImages({ filters: { label: [`io.skiff.fleet=${fleetUuid}`] } });
      assert.ok(image, 'the build left its image on the builder engine');
      const sums = await runInImage(image.Id, ['cat', '/sums']);
      assert.match(sums, new RegExp(`^${sha256(npmrc)}\\s+/run/secrets/npmrc$`, 'm'));
      await assertNoSecrets(image.Id, [npmrc]);
    });

    it('--secret with a fleet push is refused: the server reads balena.yml build-secrets', async () => {
      refused(await runCli(['push', fleet, '--source', makeProject({ Dockerfile: `FROM ${BASE_AMD64}\n` }), '--secret', 'id=a,env=HOME'], { env }), 2,
        /^Error: --secret applies to a push to a device: a fleet's build runs on the server\. Declare the secret in balena\.yml build-secrets/);
    });
  });
});
