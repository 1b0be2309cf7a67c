/**
 * `buildProject` against the real engine: images are built, tagged, labelled and run to check
 * what is inside them and which architecture they are for.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildProject } from '../../src/lib/builder/build-project.js';
import type { BuildEvent } from '../../src/lib/builder/release.js';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { BASE_AMD64, BASE_ARM64, cleanupImages, docker, ensureBaseImages, makeProject, runInImage } from '../support/engine.js';
import { requireOrSkip } from '../support/prerequisites.js';

const RUN_ID = randomBytes(3).toString('hex');
const LABEL = `io.skiff.test.run=${RUN_ID}`;
const labels = { 'io.skiff.test.run': RUN_ID };

function build(dir: string, extra: Partial<Parameters<typeof buildProject>[0]> = {}) {
  const events: BuildEvent[] = [];
  const promise = buildProject({ source: dir, deviceType: 'intel-nuc', engine: {}, labels, onEvent: (e) => events.push(e), ...extra });
  return { promise, events };
}

describe('build (real engine)', function () {
  let arm64 = false;
  before(async () => {
    ({ arm64 } = await ensureBaseImages());
  });
  after(async () => {
    await cleanupImages({ label: LABEL });
  });

  it('builds a single-Dockerfile project as service main, tagged <project>_main', async () => {
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\nCOPY hello.txt /hello.txt\n`, 'hello.txt': 'hi there\n' }, `single${RUN_ID}`);
    const { promise } = build(dir);
    const m = await promise;
    assert.equal(m.services.length, 1);
    assert.equal(m.services[0]?.service, 'main');
    assert.equal(m.services[0]?.image, `single${RUN_ID}_main:latest`);
    assert.equal(m.arch, 'amd64');
    assert.equal(await runInImage(`single${RUN_ID}_main`, ['cat', '/hello.txt']), 'hi there\n');
    const inspect = await docker.getImage(`single${RUN_ID}_main`).inspect();
    assert.equal(inspect.Config.Labels?.['io.skiff.service'], 'main');
    assert.equal(inspect.Config.Labels?.['io.skiff.device-type'], 'intel-nuc');
  });

  it('builds a multi-service project with volumes, ports and build args, in parallel', async () => {
    const name = `multi${RUN_ID}`;
    const dir = makeProject(
      {
        'docker-compose.yml': [
          "version: '2.1'",
          'volumes:',
          '  data: {}',
          'services:',
          '  web:',
          '    build: ./web',
          '    ports: ["8080:80"]',
          '  worker:',
          '    build:',
          '      context: ./worker',
          '      args:',
          '        GREETING: hello',
          '    volumes: ["data:/data"]',
          '  tool:',
          `    image: ${BASE_AMD64}`,
          '',
        ].join('\n'),
        'web/Dockerfile': `FROM ${BASE_AMD64}\nCOPY index.html /www/index.html\n`,
        'web/index.html': '<h1>web</h1>\n',
        'worker/Dockerfile': `FROM ${BASE_AMD64}\nARG GREETING\nRUN echo "$GREETING from worker" > /greeting\n`,
      },
      name,
    );
    const { promise, events } = build(dir, { tag: 'v1' });
    const m = await promise;
    assert.deepEqual(m.services.map((s) => s.service), ['web', 'worker', 'tool']);
    assert.equal(m.services.find((s) => s.service === 'tool')?.source, 'image');
    assert.deepEqual(m.volumes, ['data']);
    assert.equal(await runInImage(`${name}_web:v1`, ['cat', '/www/index.html']), '<h1>web</h1>\n');
    assert.equal(await runInImage(`${name}_worker:v1`, ['cat', '/greeting']), 'hello from worker\n');
    const starts = events.filter((e) => e.kind === 'service-start').length;
    assert.equal(starts, 3);
    assert.ok(events.some((e) => e.kind === 'builder' && e.builder === 'buildkit'), 'BuildKit, the engine having it');
    assert.ok(events.some((e) => e.kind === 'log' && e.service === 'worker' && /^#\d+ \[[^\]]*\d+\/\d+\] RUN /.test(e.line)), 'plain BuildKit step lines');
  });

  it('processes Dockerfile.template for the device type and applies balena.yml build-variables', async () => {
    const name = `tmpl${RUN_ID}`;
    const dir = makeProject(
      {
        'Dockerfile.template': `FROM ${BASE_AMD64}\nARG FROM_YML\nARG FROM_SERVICE\nRUN echo "%%BALENA_MACHINE_NAME%% %%BALENA_ARCH%% $FROM_YML $FROM_SERVICE" > /facts\n`,
        'balena.yml': 'build-variables:\n  global:\n    - FROM_YML=global-value\n  services:\n    main:\n      - FROM_SERVICE=service-value\n',
      },
      name,
    );
    const m = await build(dir, { deviceType: 'qemux86-64' }).promise;
    assert.equal(m.services[0]?.dockerfile, 'Dockerfile.template');
    assert.equal(await runInImage(`${name}_main`, ['cat', '/facts']), 'qemux86-64 amd64 global-value service-value\n');
  });

  it('honours .dockerignore and never sends .git', async () => {
    const name = `ign${RUN_ID}`;
    const dir = makeProject(
      {
        Dockerfile: `FROM ${BASE_AMD64}\nCOPY . /app\n`,
        '.dockerignore': '# comment\n*.log\nsecret/\n!secret/keep.txt\n',
        'keep.txt': 'k',
        'debug.log': 'x',
        'secret/key.pem': 'x',
        'secret/keep.txt': 'kept',
        '.git/HEAD': 'ref: refs/heads/main\n',
      },
      name,
    );
    await build(dir).promise;
    const listing = await runInImage(`${name}_main`, ['sh', '-c', 'cd /app && find . -type f | sort']).catch(async () =>
      runInImage(`${name}_main`, ['sh', '-c', 'ls -aR /app']),
    );
    assert.match(listing, /keep\.txt/);
    assert.doesNotMatch(listing, /debug\.log/);
    assert.doesNotMatch(listing, /key\.pem/);
    assert.doesNotMatch(listing, /HEAD/);
    assert.equal(await runInImage(`${name}_main`, ['cat', '/app/secret/keep.txt']), 'kept');
  });

  it('with --multi-dockerignore uses each service its own .dockerignore (and warns without it)', async () => {
    const name = `multiign${RUN_ID}`;
    const files = {
      'docker-compose.yml': 'services:\n  a:\n    build: ./a\n',
      'a/Dockerfile': `FROM ${BASE_AMD64}\nCOPY . /app\n`,
      'a/.dockerignore': 'drop.txt\n',
      'a/drop.txt': 'x',
      'a/keep.txt': 'y',
    };
    const dir = makeProject(files, name);
    const plain = build(dir);
    await plain.promise;
    assert.ok(plain.events.some((e) => e.kind === 'warning' && /a\/\.dockerignore is not used/.test(e.message)));
    assert.equal(await runInImage(`${name}_a`, ['cat', '/app/drop.txt']), 'x');
    await build(dir, { multiDockerignore: true }).promise;
    await assert.rejects(runInImage(`${name}_a`, ['cat', '/app/drop.txt']));
    assert.equal(await runInImage(`${name}_a`, ['cat', '/app/keep.txt']), 'y');
  });

  it('builds an aarch64 image under qemu emulation: RUN steps run as aarch64, the image says arm64', async function () {
    requireOrSkip(this, arm64, "the arm64 busybox base image (run scripts/setup-host.sh)");
    const name = `arm${RUN_ID}`;
    const dir = makeProject({ 'Dockerfile.template': `FROM skiff-test/busybox:%%BALENA_ARCH%%\nRUN uname -m > /built-on\n` }, name);
    // The template names the tag by balena arch; give the arm64 base that name too.
    await docker.getImage(BASE_ARM64).tag({ repo: 'skiff-test/busybox', tag: 'aarch64' });
    const m = await build(dir, { deviceType: 'raspberrypi4-64' }).promise;
    assert.equal(m.platform, 'linux/arm64');
    assert.equal(m.services[0]?.architecture, 'arm64');
    assert.equal(await runInImage(`${name}_main`, ['cat', '/built-on'], 'linux/arm64'), 'aarch64\n');
    assert.equal(await runInImage(`${name}_main`, ['uname', '-m'], 'linux/arm64'), 'aarch64\n');
  });

  it('stops the other services when one fails, and reports the failing one with its last lines', async () => {
    const name = `fail${RUN_ID}`;
    const dir = makeProject(
      {
        'docker-compose.yml': 'services:\n  bad:\n    build: ./bad\n  slow:\n    build: ./slow\n',
        'bad/Dockerfile': `FROM ${BASE_AMD64}\nRUN echo about to fail && exit 3\n`,
        'slow/Dockerfile': `FROM ${BASE_AMD64}\nRUN sleep 30\n`,
      },
      name,
    );
    const t0 = Date.now();
    await assert.rejects(build(dir, { nocache: true }).promise, (err: SkiffError) => {
      assert.equal(err.code, 'buildFailed');
      assert.match(err.message, /service 'bad' failed to build: the RUN step failed with exit code 3/);
      assert.ok(err.details.some((l) => /about to fail/.test(l)), err.details.join('\n'));
      return true;
    });
    assert.ok(Date.now() - t0 < 25_000, 'the slow build was not stopped');
    const slowImage = await docker.getImage(`${name}_slow`).inspect().catch(() => undefined);
    assert.equal(slowImage, undefined);
  });

  it('reports a FROM image that is not on the engine and cannot be pulled, with file:line', async () => {
    const dir = makeProject({ Dockerfile: '# base\nFROM skiff-test/no-such-image:1\n' }, `nofrom${RUN_ID}`);
    await assert.rejects(build(dir).promise, (err: SkiffError) => {
      assert.equal(err.code, 'buildFailed');
      assert.equal(err.where, 'Dockerfile:2');
      assert.match(err.message, /image 'skiff-test\/no-such-image:1' is not on the engine and could not be pulled/);
      return true;
    });
  });

  it('refuses a base image of the wrong architecture that cannot be pulled', async () => {
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\nCOPY . /x\n` }, `wrongarch${RUN_ID}`);
    await assert.rejects(build(dir, { deviceType: 'raspberrypi4-64' }).promise, (err: SkiffError) => {
      assert.equal(err.code, 'buildFailed');
      assert.match(err.message, /on the engine is for amd64, not linux\/arm64/);
      return true;
    });
  });

  it('builds with a Dockerfile that .dockerignore lists, as docker does, and COPY . does not see it', async () => {
    const name = `ignoredf${RUN_ID}`;
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\nCOPY . /app\n`, '.dockerignore': '*.md\nDocker*\n.dockerignore\n', 'README.md': 'r', 'app.js': 'a' }, name);
    const m = await build(dir).promise;
    assert.equal(m.services[0]?.dockerfile, 'Dockerfile');
    assert.equal(await runInImage(`${name}_main`, ['ls', '-A', '/app']), 'app.js\n');
  });

  it('builds with a Dockerfile in a folder that .dockerignore lists, and COPY . sees nothing of that folder', async () => {
    const name = `ignoredfdir${RUN_ID}`;
    const dir = makeProject(
      {
        'docker-compose.yml': 'services:\n  web:\n    build:\n      context: .\n      dockerfile: docker/Dockerfile\n',
        '.dockerignore': 'docker\n',
        'docker/Dockerfile': `FROM ${BASE_AMD64}\nCOPY . /app\n`,
        'docker/notes.txt': 'n',
        'app.js': 'a',
      },
      name,
    );
    await build(dir).promise;
    const files = (await runInImage(`${name}_web`, ['find', '/app', '-type', 'f'])).trim().split('\n').sort();
    assert.deepEqual(files, ['/app/.dockerignore', '/app/app.js', '/app/docker-compose.yml']);
  });

  it('hides a service Dockerfile that the project root .dockerignore lists, keeping the rest of the folder', async () => {
    const name = `ignoredfsvc${RUN_ID}`;
    const dir = makeProject(
      {
        'docker-compose.yml': 'services:\n  web:\n    build: ./web\n',
        '.dockerignore': 'web/Dockerfile\n',
        'web/Dockerfile': `FROM ${BASE_AMD64}\nCOPY . /app\n`,
        'web/index.html': 'i',
      },
      name,
    );
    await build(dir).promise;
    assert.equal(await runInImage(`${name}_web`, ['ls', '-A', '/app']), 'index.html\n');
  });

  it('puts the user\'s own Dockerfile in the image, byte for byte, with the labels on the image instead', async () => {
    const name = `dfbytes${RUN_ID}`;
    // No newline at the end and a trailing comment: an appended LABEL line would show at once.
    const text = `# the user's file\nFROM ${BASE_AMD64}\nCOPY . /app\n# last line`;
    const dir = makeProject({ Dockerfile: text, 'app.js': 'a' }, name);
    await build(dir).promise;
    assert.equal(await runInImage(`${name}_main`, ['cat', '/app/Dockerfile']), text);
    const inspect = await docker.getImage(`${name}_main`).inspect();
    assert.equal(inspect.Config.Labels?.['io.skiff.service'], 'main');
    assert.equal(inspect.Config.Labels?.['io.skiff.project'], name);
    assert.equal(inspect.Config.Labels?.['io.skiff.test.run'], RUN_ID);
  });

  it('labels the image in one step from a Dockerfile COPY never sees; with a .dockerignore COPY takes, through the API, and that file too is the user\'s', async () => {
    const name = `dflabels${RUN_ID}`;
    const text = `FROM ${BASE_AMD64}\nCOPY . /app\n`;
    // The generated Dockerfile is the classic builder's; BuildKit sets labels in the image config.
    const hidden = build(makeProject({ Dockerfile: text, 'app.js': 'a' }, name), { nocache: true, builder: 'classic' });
    await hidden.promise;
    assert.equal(await runInImage(`${name}_main`, ['ls', '-A', '/app']), 'Dockerfile\napp.js\n', 'neither the generated Dockerfile nor a .dockerignore in the image');
    const steps = (events: BuildEvent[]) => events.filter((e) => e.kind === 'log' && /^Step \d+\/\d+ : LABEL/.test(e.line)).length;
    assert.equal(steps(hidden.events), 1, 'one LABEL step for all the labels');
    assert.equal((await docker.getImage(`${name}_main`).inspect()).Config.Labels?.['io.skiff.service'], 'main');

    const ignore = '*.log\n';
    const seen = build(makeProject({ Dockerfile: text, '.dockerignore': ignore, 'app.js': 'a', 'x.log': 'l' }, `${name}b`), { nocache: true, builder: 'classic' });
    await seen.promise;
    assert.equal(await runInImage(`${name}b_main`, ['cat', '/app/.dockerignore']), ignore);
    assert.equal(await runInImage(`${name}b_main`, ['cat', '/app/Dockerfile']), text);
    assert.equal((await docker.getImage(`${name}b_main`).inspect()).Config.Labels?.['io.skiff.project'], `${name}b`);

    const kit = build(makeProject({ Dockerfile: text, 'app.js': 'a' }, `${name}k`), { nocache: true });
    await kit.promise;
    assert.equal(await runInImage(`${name}k_main`, ['ls', '-A', '/app']), 'Dockerfile\napp.js\n', 'BuildKit: no generated file either');
    assert.ok(!kit.events.some((e) => e.kind === 'log' && /LABEL/.test(e.line)), 'BuildKit: no LABEL step');
    assert.equal((await docker.getImage(`${name}k_main`).inspect()).Config.Labels?.['io.skiff.service'], 'main');
  });

  it('substitutes %%BALENA_SERVICE_NAME%%, %%BALENA_APP_NAME%% and %%BALENA_RELEASE_HASH%%; the image holds the resolved template without any added line', async () => {
    const name = `tmplnames${RUN_ID}`;
    const template = `FROM ${BASE_AMD64}\nRUN echo "%%BALENA_SERVICE_NAME%% %%BALENA_APP_NAME%% %%BALENA_RELEASE_HASH%% %%RESIN_SERVICE_NAME%%" > /names\nCOPY . /app\n`;
    const dir = makeProject({ 'docker-compose.yml': 'services:\n  frontend:\n    build: ./frontend\n', 'frontend/Dockerfile.template': template }, name);
    await build(dir).promise;
    assert.equal(await runInImage(`${name}_frontend`, ['cat', '/names']), `frontend ${name} unavailable frontend\n`, 'no release yet: unavailable, as balena-cli says');
    const fleet = `fleet${RUN_ID}`;
    await build(dir, { projectName: fleet }).promise;
    assert.equal(await runInImage(`${fleet}_frontend`, ['cat', '/names']), `frontend ${fleet} unavailable frontend\n`);
    const resolved = template.replace(/%%([A-Z_]+)%%/g, (_m, v: string) => (v === 'BALENA_APP_NAME' ? fleet : v === 'BALENA_RELEASE_HASH' ? 'unavailable' : 'frontend'));
    assert.equal(await runInImage(`${fleet}_frontend`, ['cat', '/app/Dockerfile.template']), resolved);
  });

  it('sets BuildKit\'s automatic platform args without the unconsumed-args warning; a user build arg wins and is still warned about', async () => {
    const name = `platargs${RUN_ID}`;
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\nARG TARGETPLATFORM\nARG BUILDARCH\nARG TARGETVARIANT\nRUN echo "$TARGETPLATFORM $BUILDARCH [$TARGETVARIANT]" > /platform\n` }, name);
    const quiet = build(dir);
    await quiet.promise;
    assert.equal(await runInImage(`${name}_main`, ['cat', '/platform']), 'linux/amd64 amd64 []\n');
    assert.ok(!quiet.events.some((e) => e.kind === 'log' && /not consumed/.test(e.line)), 'no warning about args the user never gave');
    // The warning is the classic builder's (BuildKit says nothing of unused args).
    const own = build(dir, { buildArgs: { TARGETVARIANT: 'mine', UNUSED: '1' }, builder: 'classic' });
    await own.promise;
    assert.equal(await runInImage(`${name}_main`, ['cat', '/platform']), 'linux/amd64 amd64 [mine]\n');
    const warnings = own.events.filter((e): e is Extract<BuildEvent, { kind: 'log' }> => e.kind === 'log' && /not consumed/.test(e.line)).map((e) => e.line);
    assert.deepEqual(warnings, ['[Warning] One or more build-args [UNUSED] were not consumed']);
  });

  it('reads TARGETARCH in an arm64 build for a Raspberry Pi 4 (emulated), as a Dockerfile for docker buildx does', async () => {
    assert.ok(arm64, `the arm64 busybox base is missing: run scripts/setup-host.sh (it caches ${BASE_ARM64}'s busybox)`);
    const name = `targetarch${RUN_ID}`;
    const dir = makeProject({ Dockerfile: `FROM ${BASE_ARM64}\nARG TARGETARCH\nRUN echo $TARGETARCH > /arch\n` }, name);
    const m = await build(dir, { deviceType: 'raspberrypi4-64' }).promise;
    assert.equal(m.services[0]?.architecture, 'arm64');
    assert.equal(await runInImage(`${name}_main`, ['cat', '/arch'], 'linux/arm64'), 'arm64\n');
  });

  it('builds a context outside the project folder (a monorepo), with that context\'s own .dockerignore', async () => {
    const deploy = `deploy${RUN_ID}`;
    const mono = makeProject(
      {
        [`${deploy}/docker-compose.yml`]: 'services:\n  web:\n    build:\n      context: ../\n      dockerfile: app/Dockerfile\n',
        // The project's own .dockerignore covers the project folder only; the context's applies.
        [`${deploy}/.dockerignore`]: 'app\n',
        '.dockerignore': 'secret.txt\n',
        'secret.txt': 's',
        'app/Dockerfile': `FROM ${BASE_AMD64}\nCOPY . /src\n`,
        'app/main.js': 'm',
        'lib/shared.js': 'l',
      },
      `mono${RUN_ID}`,
    );
    const m = await build(path.join(mono, deploy)).promise;
    assert.equal(m.services[0]?.dockerfile, '../app/Dockerfile');
    const listing = await runInImage(`${deploy}_web`, ['find', '/src', '-type', 'f']);
    assert.deepEqual(listing.trim().split('\n').sort(), ['/src/.dockerignore', '/src/app/Dockerfile', '/src/app/main.js', `/src/${deploy}/.dockerignore`, `/src/${deploy}/docker-compose.yml`, '/src/lib/shared.js']);
  });

  it('names a build context that does not exist in one line with file:line', async () => {
    const dir = makeProject({ 'docker-compose.yml': 'services:\n  web:\n    build:\n      context: ../nope\n' }, `nocontext${RUN_ID}`);
    await assert.rejects(build(dir).promise, (err: SkiffError) => {
      assert.equal(err.code, 'project');
      assert.equal(err.where, 'docker-compose.yml:4');
      assert.equal(err.toLine().split('\n').length, 1);
      assert.match(err.toLine(), /build context '\.\.\/nope' of service 'web' does not exist/);
      return true;
    });
  });

  it('warns when a build context passes 1 GB', async function () {
    const name = `big${RUN_ID}`;
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\nCOPY small.txt /small.txt\n`, 'small.txt': 's' }, name);
    // A sparse file: 1.1 GB in the tar stream, no disk used.
    const fd = path.join(dir, 'big.bin');
    writeFileSync(fd, '');
    const { truncateSync } = await import('node:fs');
    truncateSync(fd, Math.floor(1.1 * 1024 ** 3));
    const { promise, events } = build(dir);
    const m = await promise;
    assert.ok(events.some((e) => e.kind === 'warning' && /build context is over 1 GB/.test(e.message)));
    assert.ok((m.services[0]?.contextBytes ?? 0) > 1024 ** 3);
  });

  it('fails clearly when no engine answers', async () => {
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\n` }, `noengine${RUN_ID}`);
    await assert.rejects(build(dir, { engine: { docker: '/nonexistent/docker.sock' } }).promise, (err: SkiffError) => {
      assert.equal(err.code, 'dockerUnreachable');
      assert.match(err.toLine(), /cannot reach the Docker engine at unix:\/\/\/nonexistent\/docker.sock \(ENOENT\)\. Start the engine/);
      return true;
    });
  });

  it('keeps earlier images when a later build fails (nothing a user had is lost)', async () => {
    const name = `keep${RUN_ID}`;
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\nRUN echo one > /v\n` }, name);
    await build(dir).promise;
    writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE_AMD64}\nRUN exit 1\n`);
    await assert.rejects(build(dir).promise);
    assert.equal(await runInImage(`${name}_main`, ['cat', '/v']), 'one\n');
    assert.ok(existsSync(dir) && readFileSync(path.join(dir, 'Dockerfile'), 'utf8').includes('exit 1'));
  });
});
