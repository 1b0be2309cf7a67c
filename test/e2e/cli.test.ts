/**
 * The binary as a user runs it: output, --json, exit codes, and Ctrl-C.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, startCli } from '../support/cli.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, makeProject } from '../support/engine.js';
import { isRoot, requireOrSkip } from '../support/prerequisites.js';
import { waitFor } from '../support/wait.js';

const RUN_ID = randomBytes(3).toString('hex');

describe('skiff (the binary)', function () {
  const projects: string[] = [];
  before(async () => {
    await ensureBaseImages();
  });
  after(async () => {
    for (const p of projects) await cleanupImages({ label: `io.skiff.project=${p}` });
  });
  function project(files: Record<string, string>, prefix: string): { dir: string; name: string } {
    const name = `${prefix}${RUN_ID}`;
    projects.push(name);
    return { dir: makeProject(files, name), name };
  }

  describe('basics', () => {
    it('prints the version with `version` and `--version`, and JSON with --json', async () => {
      const pkg = JSON.parse(readFileSync(path.resolve('package.json'), 'utf8')) as { version: string };
      const plain = await runCli(['version']);
      assert.equal(plain.code, 0);
      assert.equal(plain.stdout, `${pkg.version}\n`);
      const flag = await runCli(['--version']);
      assert.equal(flag.stdout, `${pkg.version}\n`);
      const json = await runCli(['--version', '--json']);
      const doc = JSON.parse(json.stdout) as { status: string; result: { version: string; node: string } };
      assert.equal(doc.status, 'ok');
      assert.equal(doc.result.version, pkg.version);
      assert.equal(doc.result.node, process.versions.node);
    });

    it('shows help listing build, and help for a command', async () => {
      const help = await runCli(['--help']);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /build\s+Build a project into a release/);
      const buildHelp = await runCli(['help', 'build']);
      assert.match(buildHelp.stdout, /--deviceType/);
      assert.match(buildHelp.stdout, /--multi-dockerignore/);
    });

    it('rejects an unknown flag with one line and exit 2', async () => {
      const r = await runCli(['version', '--nope']);
      assert.equal(r.code, 2);
      assert.equal(r.stderr.trim().split('\n').length, 1);
      assert.match(r.stderr, /Nonexistent flag: --nope/);
    });

    it('lists supported device types as a table and as JSON', async () => {
      const r = await runCli(['devices', 'supported']);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /raspberrypi4-64\s+.*aarch64/);
      const j = JSON.parse((await runCli(['devices', 'supported', '--json'])).stdout) as { result: Array<{ slug: string; arch: string }> };
      assert.ok(j.result.length >= 15);
      assert.ok(j.result.some((d) => d.slug === 'jetson-nano' && d.arch === 'aarch64'));
    });
  });

  describe('build', () => {
    it('builds and prints a summary table; --json prints one envelope with the release manifest', async () => {
      const { dir, name } = project(
        { 'docker-compose.yml': 'services:\n  web:\n    build: ./web\n  db:\n    build: ./db\n', 'web/Dockerfile': `FROM ${BASE_AMD64}\nRUN echo web > /id\n`, 'db/Dockerfile': `FROM ${BASE_AMD64}\nRUN echo db > /id\n` },
        'e2e',
      );
      const r = await runCli(['build', dir, '--deviceType', 'intel-nuc']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /SERVICE\s+IMAGE\s+SIZE\s+ARCH\s+TIME\s+CACHED/);
      assert.match(r.stdout, new RegExp(`web\\s+${name}_web:latest`));
      assert.match(r.stderr, /Building with BuildKit \(engine /);
      assert.match(r.stderr, /\[web\] #\d+ \[[^\]]*1\/\d+\] FROM /);
      assert.match(r.stderr, /\[db\]\s+#\d+ \[[^\]]*2\/\d+\] RUN echo db/);
      assert.ok(!r.stderr.includes('\u001b['), 'NO_COLOR output has no escape codes');

      const j = await runCli(['build', dir, '--deviceType', 'intel-nuc', '--json']);
      assert.equal(j.code, 0);
      const doc = JSON.parse(j.stdout) as { status: string; result: { services: Array<{ service: string; imageId: string; cachedSteps: number; steps: number }>; arch: string } };
      assert.equal(doc.status, 'ok');
      assert.equal(doc.result.arch, 'amd64');
      assert.deepEqual(doc.result.services.map((s) => s.service), ['web', 'db']);
      assert.ok(doc.result.services.every((s) => s.cachedSteps === s.steps), 'second build is fully cached');
      assert.equal(j.stderr, '', 'nothing on stderr under --json without --logs');
    });

    it('--nologs hides build output but keeps the per-service lines', async () => {
      const { dir } = project({ Dockerfile: `FROM ${BASE_AMD64}\nRUN echo quiet\n` }, 'nologs');
      const r = await runCli(['build', dir, '-d', 'intel-nuc', '--nologs']);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /#\d+ \[/);
      assert.match(r.stderr, /\[main\] done/);
    });

    const badInputs: Array<{ name: string; files: Record<string, string>; args?: string[]; code: number; message: RegExp }> = [
      { name: 'compose YAML syntax error (file:line)', files: { 'docker-compose.yml': 'services:\n  web:\n    build: .\n   bad: [\n' }, code: 3, message: /docker-compose\.yml:\d+: .*/ },
      { name: 'service with neither build nor image', files: { 'docker-compose.yml': 'services:\n  web:\n    restart: always\n' }, code: 3, message: /docker-compose\.yml:2: .*service 'web' has neither build nor image/ },
      { name: 'missing Dockerfile', files: { 'docker-compose.yml': 'services:\n  web:\n    build: ./web\n', 'web/README': 'x' }, code: 3, message: /no Dockerfile in 'web'/ },
      { name: 'unsupported key for devices', files: { 'docker-compose.yml': `services:\n  web:\n    image: ${BASE_AMD64}\n    deploy:\n      replicas: 2\n` }, code: 3, message: /docker-compose\.yml:4: .*deploy/ },
      { name: 'bind mount of a host path', files: { 'docker-compose.yml': `services:\n  web:\n    image: ${BASE_AMD64}\n    volumes:\n      - /etc:/host-etc\n` }, code: 3, message: /docker-compose\.yml:5: .*bind mount/ },
      { name: 'template with an unknown %%VAR%%', files: { 'Dockerfile.template': 'FROM x\nRUN echo %%BALENA_COLOUR%%\n' }, code: 3, message: /Dockerfile\.template:2: unknown template variable %%BALENA_COLOUR%%/ },
      { name: 'unknown device type (suggests)', files: { Dockerfile: 'FROM x\n' }, args: ['--deviceType', 'raspbery-pi4-64'], code: 2, message: /unknown device type 'raspbery-pi4-64'\. Did you mean 'raspberrypi4-64'/ },
      { name: 'arch and device type that disagree', files: { Dockerfile: 'FROM x\n' }, args: ['--deviceType', 'raspberrypi3', '--arch', 'amd64'], code: 2, message: /--arch amd64 does not match device type 'raspberrypi3', which is armv7hf/ },
      { name: 'build context that does not exist', files: { 'docker-compose.yml': 'services:\n  web:\n    build:\n      context: ../nope\n' }, code: 3, message: /docker-compose\.yml:4: build context '\.\.\/nope' of service 'web' does not exist/ },
      { name: 'FROM image that does not exist and cannot be pulled', files: { Dockerfile: 'FROM skiff-test/missing:9\n' }, code: 5, message: /Dockerfile:1: service 'main': image 'skiff-test\/missing:9' is not on the engine and could not be pulled/ },
      { name: 'build failure', files: { Dockerfile: `FROM ${BASE_AMD64}\nRUN echo boom-line && false\n` }, code: 5, message: /service 'main' failed to build/ },
    ];
    for (const bad of badInputs) {
      it(`bad input: ${bad.name} → one clear line, exit ${bad.code}`, async () => {
        const { dir } = project(bad.files, 'bad');
        const r = await runCli(['build', dir, ...(bad.args ?? ['--deviceType', 'intel-nuc'])]);
        assert.equal(r.code, bad.code, r.stderr);
        const errorLines = r.stderr.split('\n').filter((l) => l.startsWith('Error:'));
        assert.equal(errorLines.length, 1, r.stderr);
        assert.match(errorLines[0] ?? '', bad.message);
        assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace without --debug');
        const j = await runCli(['build', dir, ...(bad.args ?? ['--deviceType', 'intel-nuc']), '--json']);
        assert.equal(j.code, bad.code);
        const doc = JSON.parse(j.stdout) as { status: string; error: { exitCode: number; message: string } };
        assert.equal(doc.status, 'error');
        assert.equal(doc.error.exitCode, bad.code);
      });
    }

    it('shows the failing service\'s last lines above the error', async () => {
      const { dir } = project({ Dockerfile: `FROM ${BASE_AMD64}\nRUN echo the-last-words && exit 4\n` }, 'tail');
      const r = await runCli(['build', dir, '-d', 'intel-nuc', '--nologs']);
      assert.equal(r.code, 5);
      assert.match(r.stderr, /\[main\] the-last-words\n(.*\n)*Error: Dockerfile:2: service 'main' failed to build: the RUN step failed with exit code 4/);
    });

    it('warns about an unknown compose key with file:line and still builds', async () => {
      const { dir } = project({ 'docker-compose.yml': `services:\n  web:\n    image: ${BASE_AMD64}\n    enviroment:\n      A: b\n` }, 'warn');
      const r = await runCli(['build', dir, '-d', 'intel-nuc']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /Warning: docker-compose\.yml:4: .*enviroment.*environment/);
      const j = JSON.parse((await runCli(['build', dir, '-d', 'intel-nuc', '--json'])).stdout) as { warnings: string[] };
      assert.ok(j.warnings.some((w) => /enviroment/.test(w)));
    });

    it('says how to reach an engine when none answers (exit 4)', async () => {
      const { dir } = project({ Dockerfile: `FROM ${BASE_AMD64}\n` }, 'noeng');
      const r = await runCli(['build', dir, '-d', 'intel-nuc'], { env: { DOCKER_HOST: 'tcp://127.0.0.1:1' } });
      assert.equal(r.code, 4);
      assert.match(r.stderr, /Error: cannot reach the Docker engine at tcp:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\)/);
    });

    it('prints the stack with --debug', async () => {
      const { dir } = project({ 'Dockerfile.template': 'FROM x\nRUN echo %%NOPE%%\n' }, 'debug');
      const r = await runCli(['build', dir, '-d', 'intel-nuc', '--debug']);
      assert.equal(r.code, 3);
      assert.match(r.stderr, /\n\s+at /);
    });

    it('Ctrl-C cancels the builds, exits 130 and leaves no build containers behind', async () => {
      const { dir, name } = project(
        { 'docker-compose.yml': 'services:\n  a:\n    build: ./a\n  b:\n    build: ./b\n', 'a/Dockerfile': `FROM ${BASE_AMD64}\nRUN echo started-a && sleep 60\n`, 'b/Dockerfile': `FROM ${BASE_AMD64}\nRUN echo started-b && sleep 60\n` },
        'sigint',
      );
      const before = new Set((await docker.listContainers({ all: true })).map((c) => c.Id));
      const { child, done } = startCli(['build', dir, '-d', 'intel-nuc', '--nocache']);
      let seen = '';
      await new Promise<void>((resolve) => {
        child.stderr?.on('data', (d: Buffer) => {
          seen += d.toString();
          if (/started-a/.test(seen) && /started-b/.test(seen)) resolve();
        });
      });
      child.kill('SIGINT');
      const r = await done;
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr, /Cancelling the builds/);
      assert.match(r.stderr, /Error: build cancelled/);
      // The engine removes the RUN containers once the request is gone.
      await waitFor(async () => {
        const stray = (await docker.listContainers({ all: true })).map((c) => c.Id).filter((id) => !before.has(id));
        if (stray.length > 0) throw new Error(`containers left: ${stray.join(', ')}`);
        return true;
      }, "the engine to remove the cancelled build's RUN containers", 5000);
      assert.equal(await docker.getImage(`${name}_a`).inspect().catch(() => undefined), undefined);
    });

    it('reports missing emulation with what to do (exit 7), and --emulated registers it', async function () {
      const entry = '/proc/sys/fs/binfmt_misc/qemu-aarch64';
      requireOrSkip(this, isRoot(), 'root (registering emulation)');
      const { ensureBaseImages: ensure } = await import('../support/engine.js');
      requireOrSkip(this, (await ensure()).arm64, 'the arm64 busybox base image (run scripts/setup-host.sh)');
      await docker.getImage('skiff-test/busybox:arm64').tag({ repo: 'skiff-test/busybox', tag: 'aarch64' });
      const { dir } = project({ Dockerfile: 'FROM skiff-test/busybox:aarch64\nRUN uname -m > /m\n' }, 'emu');
      try {
        // Take the handler away, as on a machine that never registered it.
        writeFileSync(entry, '-1');
        const r = await runCli(['build', dir, '-A', 'aarch64']);
        assert.equal(r.code, 7, r.stderr);
        assert.match(r.stderr, /Error: building for aarch64 on this x86_64 engine needs qemu emulation for RUN steps: no binfmt_misc handler for aarch64\. Run the build again with --emulated/);
        const ok = await runCli(['build', dir, '-A', 'aarch64', '--emulated']);
        assert.equal(ok.code, 0, ok.stderr);
        assert.match(ok.stderr, /registered \/usr\/bin\/qemu-aarch64-static for aarch64/);
        assert.match(readFileSync(entry, 'utf8'), /flags: F/);
      } finally {
        // Put the machine back as scripts/setup-host.sh leaves it (idempotent).
        execFileSync('bash', ['scripts/setup-host.sh'], { stdio: 'ignore' });
      }
    });
  });
});
