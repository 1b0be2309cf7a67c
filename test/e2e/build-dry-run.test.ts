/**
 * `skiff build --dry-run` as a user runs it: the project as skiff reads it, variables substituted,
 * and no Docker engine needed (DOCKER_HOST points at a closed port throughout).
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, type CliResult } from '../support/cli.js';
import { scratchDir } from '../support/tmp.js';

// Nothing listens there: any attempt to reach an engine fails at once.
const DEAD_ENGINE = { DOCKER_HOST: 'tcp://127.0.0.1:1', DOCKER_CERT_PATH: undefined, DOCKER_TLS_VERIFY: undefined };

function makeProject(files: Record<string, string>): string {
  const dir = path.join(scratchDir('skiff-dry-run-'), 'relay');
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

const compose = [
  'services:',
  '  relay:',
  '    build:',
  '      context: relay',
  '      args:',
  '        FROM_COMPOSE: "${COMPOSE_ARG:-c}"',
  '    environment:',
  '      - MODE=${MODE:-prod}',
  '    ports: ["${RELAY_PORT:-443}:443"]',
  '    privileged: ${PRIVILEGED:-false}',
  '  ui:',
  '    build: ui',
  '    volumes: ["${VOLUME_NAME}:/data"]',
  '  cache:',
  '    image: "redis:${REDIS_TAG:?set REDIS_TAG}"',
  'volumes:',
  '  state:',
  '',
].join('\n');

const files = {
  'docker-compose.yml': compose,
  '.env': '# the project defaults\nREDIS_TAG=7-alpine\nVOLUME_NAME=state\nMODE="from-dotenv"\n',
  'balena.yml': 'build-variables:\n  global:\n    - GLOBAL=g\n    - LITERAL=${NOT_SUBSTITUTED}\n  services:\n    relay:\n      - FROM_COMPOSE=overridden-by-compose\n',
  'relay/Dockerfile.raspberrypi4-64': 'FROM balenalib/%%BALENA_MACHINE_NAME%%-debian\nCMD ["relay"]\n',
  'relay/Dockerfile.template': 'FROM balenalib/%%BALENA_ARCH%%-debian\n',
  'ui/Dockerfile': 'ARG BASE=alpine:3.20\nFROM $BASE\n',
};

interface Envelope {
  status: 'ok' | 'error';
  result?: {
    project: string;
    deviceType: string;
    arch: string;
    targetFrom: string;
    composeFile: string;
    services: Array<{ name: string; image: string; source: string; build?: Record<string, unknown>; config: Record<string, unknown> }>;
    volumes: Record<string, unknown>;
    warnings: string[];
  };
  error?: { code: string; exitCode: number; message: string; where?: string };
  warnings: string[];
}

function envelope(r: CliResult): Envelope {
  assert.doesNotThrow(() => JSON.parse(r.stdout), `stdout is one JSON document: ${r.stdout}\n${r.stderr}`);
  return JSON.parse(r.stdout) as Envelope;
}

describe('skiff build --dry-run', () => {
  it('prints the resolved project as JSON with --json, without an engine', async () => {
    const dir = makeProject(files);
    const r = await runCli(['build', dir, '--dry-run', '--json', '--deviceType', 'raspberrypi4-64', '--buildArg', 'CLI=1', '--tag', 'v9'], { env: { ...DEAD_ENGINE, RELAY_PORT: '8443', MODE: undefined, COMPOSE_ARG: undefined, PRIVILEGED: undefined } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '', 'nothing on stderr under --json');
    const doc = envelope(r);
    assert.equal(doc.status, 'ok');
    const result = doc.result;
    assert.ok(result);
    assert.equal(result.project, 'relay');
    assert.equal(result.deviceType, 'raspberrypi4-64');
    assert.equal(result.arch, 'aarch64');
    assert.equal(result.targetFrom, 'flags');
    assert.equal(result.composeFile, 'docker-compose.yml');
    assert.deepEqual(result.volumes, { state: {} });
    assert.deepEqual(result.warnings, []);
    const [relay, ui, cache] = result.services;

    assert.equal(relay?.image, 'relay_relay:v9');
    assert.deepEqual(relay?.build, {
      context: 'relay',
      dockerfile: 'relay/Dockerfile.raspberrypi4-64',
      rule: 'device-type',
      chosenBecause: "relay/Dockerfile.raspberrypi4-64: the device type's own",
      template: true,
      // balena.yml global, then per service, then compose build.args, then --buildArg; balena.yml is not substituted.
      args: { GLOBAL: 'g', LITERAL: '${NOT_SUBSTITUTED}', FROM_COMPOSE: 'c', CLI: '1' },
      labels: {},
      cacheFrom: [],
      baseImages: ['balenalib/raspberrypi4-64-debian'],
    });
    assert.deepEqual(relay?.config, { environment: { MODE: 'from-dotenv' }, ports: ['8443:443'], privileged: false });

    assert.equal(ui?.image, 'relay_ui:v9');
    assert.equal(ui?.build?.dockerfile, 'ui/Dockerfile');
    assert.equal(ui?.build?.rule, 'dockerfile');
    assert.equal(ui?.build?.template, false);
    assert.deepEqual(ui?.build?.baseImages, ['alpine:3.20']);
    assert.deepEqual(ui?.config, { volumes: ['state:/data'] });

    assert.deepEqual(cache, { name: 'cache', image: 'redis:7-alpine', source: 'image', config: { image: 'redis:7-alpine' } });
  });

  it('prints the project as YAML for a person, picking the template for another device type', async () => {
    const dir = makeProject(files);
    const r = await runCli(['build', dir, '--dry-run', '-d', 'raspberrypi3'], { env: { ...DEAD_ENGINE, RELAY_PORT: undefined, MODE: 'dev' } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /relay: 3 services for raspberrypi3 \(armv7hf, linux\/arm\/v7\); nothing was built/);
    assert.match(r.stdout, /^services:$/m);
    assert.match(r.stdout, /^ {4}x-skiff-image: relay_relay:latest$/m);
    assert.match(r.stdout, /^ {6}context: relay\n {6}dockerfile: Dockerfile\.template$/m, 'the dockerfile relative to its context, as compose reads it');
    assert.match(r.stdout, /^ {6}x-skiff-template: true$/m);
    assert.match(r.stdout, /^ {8}- balenalib\/armv7hf-debian$/m);
    assert.match(r.stdout, /^ {6}MODE: dev$/m, 'the environment wins over .env');
    assert.match(r.stdout, /^ {6}- 443:443$/m, 'the default port');
    assert.match(r.stdout, /^ {4}image: redis:7-alpine$/m);
    assert.deepEqual(r.stdout.match(/\$\{\w+/g), ['${NOT_SUBSTITUTED', '${NOT_SUBSTITUTED'], 'only the balena.yml global (relay and ui), which is not substituted, shows a ${…}');
  });

  it('says which .dockerignore applies, as the build packs it, with and without --multi-dockerignore', async () => {
    const dir = makeProject({ ...files, '.dockerignore': 'node_modules\n', 'ui/.dockerignore': '*.log\n' });
    const shared = envelope(await runCli(['build', dir, '--dry-run', '--json', '-d', 'intel-nuc'], { env: DEAD_ENGINE }));
    assert.deepEqual(shared.result?.services.map((s) => s.build?.dockerignore), ['.dockerignore', '.dockerignore', undefined]);
    assert.deepEqual(shared.warnings, ["ui/.dockerignore is not used; the project's root .dockerignore applies to every service unless you pass --multi-dockerignore"]);
    const own = envelope(await runCli(['build', dir, '--dry-run', '--json', '-d', 'intel-nuc', '--multi-dockerignore'], { env: DEAD_ENGINE }));
    assert.deepEqual(own.result?.services.map((s) => s.build?.dockerignore), [undefined, 'ui/.dockerignore', undefined]);
    assert.deepEqual(own.warnings, []);
  });

  it("resolves for this machine's architecture when no device type is given", async () => {
    const r = await runCli(['build', makeProject(files), '--dry-run', '--json'], { env: DEAD_ENGINE });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(envelope(r).result?.targetFrom, 'this machine');
  });

  it('names an unset variable under the error it causes', async () => {
    const dir = makeProject({ ...files, '.env': 'REDIS_TAG=7\n' });
    const r = await runCli(['build', dir, '--dry-run', '-d', 'intel-nuc'], { env: { ...DEAD_ENGINE, VOLUME_NAME: undefined } });
    assert.equal(r.code, 3);
    assert.deepEqual(r.stderr.trim().split('\n'), [
      'docker-compose.yml:13: variable VOLUME_NAME is not set; using an empty string',
      "Error: docker-compose.yml:13: invalid volume name '' in ':/data'. Use letters, digits, \"_\", \".\" and \"-\".",
    ]);
  });

  describe('a required variable that is not set', () => {
    const required = { ...files, '.env': 'VOLUME_NAME=state\n' };

    it('fails with exit 3 and one line naming the variable and docker-compose.yml:line', async () => {
      const r = await runCli(['build', makeProject(required), '--dry-run', '-d', 'intel-nuc'], { env: { ...DEAD_ENGINE, REDIS_TAG: undefined } });
      assert.equal(r.code, 3);
      assert.equal(r.stdout, '');
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0] ?? '', /^Error: docker-compose\.yml:15: required variable REDIS_TAG is missing a value: set REDIS_TAG\. Set REDIS_TAG in the environment or in the project's \.env file\./);
    });

    it('fails the same way under --json, with where in the error', async () => {
      const r = await runCli(['build', makeProject(required), '--dry-run', '--json', '-d', 'intel-nuc'], { env: { ...DEAD_ENGINE, REDIS_TAG: undefined } });
      assert.equal(r.code, 3);
      const doc = envelope(r);
      assert.equal(doc.status, 'error');
      assert.equal(doc.error?.code, 'project');
      assert.equal(doc.error?.where, 'docker-compose.yml:15');
      assert.equal(doc.error?.message, 'required variable REDIS_TAG is missing a value: set REDIS_TAG');
    });

    it('fails a real build the same way, before contacting the engine', async () => {
      const r = await runCli(['build', makeProject(required), '-d', 'intel-nuc'], { env: { ...DEAD_ENGINE, REDIS_TAG: undefined } });
      assert.equal(r.code, 3);
      assert.match(r.stderr, /docker-compose\.yml:15: required variable REDIS_TAG/);
    });
  });

  it('refuses a malformed .env with exit 3 and .env:line', async () => {
    const r = await runCli(['build', makeProject({ ...files, '.env': 'REDIS_TAG=7\nBROKEN LINE\n' }), '--dry-run', '-d', 'intel-nuc'], { env: DEAD_ENGINE });
    assert.equal(r.code, 3);
    assert.match(r.stderr.trim(), /^Error: \.env:2: variable name 'BROKEN LINE' contains a space\./);
  });

  it('is what it says: without --dry-run the same project needs the engine (exit 4)', async () => {
    const r = await runCli(['build', makeProject(files), '-d', 'intel-nuc'], { env: DEAD_ENGINE });
    assert.equal(r.code, 4, r.stderr);
  });
});
