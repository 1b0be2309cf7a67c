import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chooseBuilder, engineOffersBuildkit, frontendHasHeredocs } from '../../src/lib/builder/builder-choice.js';
import { loweredNames, shownStep, stepLine } from '../../src/lib/builder/release.js';
import { dockerfileFacts, stageEnd, withoutLinesFrom } from '../../src/lib/project/dockerfile.js';
import { MAX_SECRET_BYTES, parseSecretFlags, readSecretFlags, readServiceSecrets, secretFiles } from '../../src/lib/builder/secrets.js';
import type { BuildSettings } from '../../src/lib/project/balena-yml.js';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { classicBuilderError, lowerDockerfile, scanDockerfile } from '../../src/lib/project/dockerfile-features.js';

const engine = (version: string, apiVersion: string, os = 'linux') => ({ version, apiVersion, os, balena: false });

describe('builder choice', () => {
  it('uses BuildKit when the engine has it, and says which engine', () => {
    const c = chooseBuilder(engine('20.10.24+dfsg1', '1.41'), 'auto', { env: {} });
    assert.equal(c.builder, 'buildkit');
    assert.equal(c.message, 'Building with BuildKit (engine 20.10.24+dfsg1)');
  });

  const classic: Array<[string, Parameters<typeof chooseBuilder>, RegExp]> = [
    ['--no-buildkit', [engine('20.10.24', '1.41'), 'classic', {}], /classic builder \(--no-buildkit; engine 20\.10\.24 has BuildKit\)/],
    ['--no-buildkit on an old engine', [engine('18.06.1', '1.38'), 'classic', {}], /\(--no-buildkit; engine 18\.06\.1 has no BuildKit\)/],
    ['DOCKER_BUILDKIT=0', [engine('20.10.24', '1.41'), 'auto', { env: { DOCKER_BUILDKIT: '0' } }], /\(DOCKER_BUILDKIT=0; engine 20\.10\.24 has BuildKit\)/],
    ['DOCKER_BUILDKIT=false', [engine('20.10.24', '1.41'), 'auto', { env: { DOCKER_BUILDKIT: 'false' } }], /\(DOCKER_BUILDKIT=0; engine 20\.10\.24 has BuildKit\)/],
    ['--squash', [engine('20.10.24', '1.41'), 'auto', { squash: true, env: {} }], /--squash needs it/],
    ['an engine before 18.09', [engine('18.06.1', '1.38'), 'auto', { env: {} }], /engine 18\.06\.1 has no BuildKit/],
    ['a Windows engine', [engine('20.10.7', '1.41', 'windows'), 'auto', { env: {} }], /has no BuildKit/],
    ['a Dockerfile only the classic builder hides', [engine('20.10.24', '1.41'), 'auto', { env: {}, preferClassic: '.dockerignore lists Dockerfile' }], /\(\.dockerignore lists Dockerfile\)/],
  ];
  for (const [name, args, message] of classic) {
    it(`uses the classic builder for ${name}`, () => {
      const c = chooseBuilder(...args);
      assert.equal(c.builder, 'classic');
      assert.match(c.message, message);
      assert.ok(c.reason.length > 0);
    assert.ok(c.hint.length > 0, 'a way to BuildKit');
    });
  }

  it('DOCKER_BUILDKIT=1 changes nothing on an engine with BuildKit; --buildkit insists', () => {
    assert.equal(chooseBuilder(engine('20.10.24', '1.41'), 'auto', { env: { DOCKER_BUILDKIT: '1' } }).builder, 'buildkit');
    assert.match(chooseBuilder(engine('20.10.24', '1.41'), 'buildkit').message, /--buildkit/);
    assert.equal(chooseBuilder(engine('20.10.24', '1.41'), 'buildkit', { preferClassic: 'x' }).builder, 'buildkit');
  });

  it('refuses --buildkit on an engine without it, and with --squash', () => {
    assert.throws(() => chooseBuilder(engine('17.06.0', '1.30'), 'buildkit'), (e: SkiffError) => e.code === 'usage' && /engine 17\.06\.0 \(API 1\.30, linux\) has no BuildKit/.test(e.message));
    assert.throws(() => chooseBuilder(engine('20.10.24', '1.41'), 'buildkit', { squash: true }), (e: SkiffError) => e.code === 'usage' && /--squash/.test(e.message));
  });

  it('a cache mount on an engine without BuildKit: one line naming the line, --buildkit and the engine version', () => {
    // No engine before 18.09 runs here: the choice and the check are what a real one would meet.
    const choice = chooseBuilder(engine('17.06.0-ce', '1.30'), 'auto', { env: {} });
    const scan = scanDockerfile('FROM alpine\nRUN --mount=type=cache,target=/root/.cache pip install x\n', 'web/Dockerfile');
    const line = classicBuilderError(scan, 'web/Dockerfile', choice.reason)?.toLine() ?? '';
    assert.match(line, /^web\/Dockerfile:2: RUN --mount=type=cache needs BuildKit, which this build does not use \(engine 17\.06\.0-ce has no BuildKit\)\. .*--buildkit/);
    assert.equal(line.split('\n').length, 1);
    assert.match(choice.hint, /Docker 18\.09 or later\), where --buildkit/);
    assert.match(chooseBuilder(engine('20.10.24', '1.41'), 'auto', { env: { DOCKER_BUILDKIT: '0' } }).hint, /unset DOCKER_BUILDKIT/);
    assert.match(chooseBuilder(engine('20.10.24', '1.41'), 'auto', { squash: true }).hint, /drop --squash/);
  });

  it('knows which engines have BuildKit and which frontends read heredocs', () => {
    assert.equal(engineOffersBuildkit({ apiVersion: '1.39', os: 'linux' }), true);
    assert.equal(engineOffersBuildkit({ apiVersion: '1.38', os: 'linux' }), false);
    assert.equal(engineOffersBuildkit({ apiVersion: '2.0', os: '' }), true);
    assert.equal(engineOffersBuildkit({ apiVersion: 'unknown', os: 'linux' }), true);
    assert.equal(frontendHasHeredocs({ version: '20.10.24+dfsg1', balena: false }), false);
    assert.equal(frontendHasHeredocs({ version: '23.0.1', balena: false }), true);
    assert.equal(frontendHasHeredocs({ version: '28.2.2', balena: false }), true);
    assert.equal(frontendHasHeredocs({ version: 'unknown', balena: true }), false);
  });
});

describe('build secrets', () => {
  it('parses --secret as docker does', () => {
    assert.deepEqual(parseSecretFlags(['id=npmrc,src=/tmp/n', 'id=tok,env=TOKEN', 'id=a,source=x', 'id=HOME', 'id=plain', 'type=env,id=E'], { HOME: '/root' }), [
      { id: 'npmrc', src: '/tmp/n' }, { id: 'tok', env: 'TOKEN' }, { id: 'a', src: 'x' }, { id: 'HOME', env: 'HOME' }, { id: 'plain', src: 'plain' }, { id: 'E', env: 'E' },
    ]);
  });

  const bad: Array<[string, RegExp]> = [
    ['src=/x', /needs an id/],
    ['id=../x,src=y', /needs an id/],
    ['id=a,src', /'src' is not key=value/],
    ['id=a,file=x', /unknown key 'file'/],
    ['id=a,src=x,env=Y', /not both/],
    ['id=a,type=ssh', /type must be file or env/],
  ];
  for (const [value, message] of bad) {
    it(`refuses --secret ${value}`, () => {
      assert.throws(() => parseSecretFlags([value], {}), (e: SkiffError) => e.code === 'usage' && message.test(e.message));
    });
  }

  it('refuses a repeated id', () => {
    assert.throws(() => parseSecretFlags(['id=a,src=x', 'id=a,src=y'], {}), /given twice/);
  });

  it('reads balena.yml secrets from .balena/secrets, then --secret over them', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-secrets-'));
    mkdirSync(path.join(dir, '.balena/secrets'), { recursive: true });
    writeFileSync(path.join(dir, '.balena/secrets/npmrc'), 'global');
    writeFileSync(path.join(dir, '.balena/secrets/web.key'), 'web only');
    writeFileSync(path.join(dir, 'flag.txt'), 'from the flag');
    const settings: BuildSettings = {
      file: path.join(dir, 'balena.yml'), globalVariables: {}, serviceVariables: {}, warnings: [],
      secrets: { global: [{ source: 'npmrc', dest: 'npmrc' }], services: { web: [{ source: 'web.key', dest: '/run/secrets/key' }] } },
    };
    const web = readServiceSecrets(dir, settings, 'web');
    assert.deepEqual(Object.fromEntries(Object.entries(web).map(([k, v]) => [k, v.toString()])), { npmrc: 'global', key: 'web only' });
    const other = readServiceSecrets(dir, settings, 'worker', readSecretFlags([{ id: 'npmrc', src: path.join(dir, 'flag.txt') }, { id: 'tok', env: 'TOK' }], { TOK: 't0k' }));
    assert.deepEqual(Object.fromEntries(Object.entries(other).map(([k, v]) => [k, v.toString()])), { npmrc: 'from the flag', tok: 't0k' });
    assert.deepEqual(secretFiles(dir, settings).sort(), [path.join(dir, '.balena/secrets/npmrc'), path.join(dir, '.balena/secrets/web.key')]);
  });

  it('names balena.yml:line for a missing file, and the flag for a missing src or variable', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-secrets-'));
    const settings: BuildSettings = {
      file: path.join(dir, 'balena.yml'), globalVariables: {}, serviceVariables: {}, warnings: [],
      secrets: { global: [{ source: 'gone', dest: 'x', where: 'balena.yml:4' }], services: {} },
    };
    assert.throws(() => readServiceSecrets(dir, settings, 'web'), (e: SkiffError) => e.code === 'project' && e.where === 'balena.yml:4' && /\.balena\/secrets\/gone does not exist/.test(e.message));
    const outside: BuildSettings = { ...settings, secrets: { global: [{ source: '../../etc/passwd', dest: 'x', where: 'balena.yml:4' }], services: {} } };
    assert.throws(() => readServiceSecrets(dir, outside, 'web'), /outside \.balena\/secrets/);
    assert.throws(() => readSecretFlags([{ id: 'a', src: path.join(dir, 'nope') }], {}), (e: SkiffError) => e.code === 'usage' && /--secret id=a: cannot read/.test(e.message));
    assert.throws(() => readSecretFlags([{ id: 'a', env: 'NOPE' }], {}), /NOPE is not set/);
  });
});

describe('the Dockerfile line of a failed BuildKit step', () => {
  const dockerfile = 'FROM alpine AS base\nRUN echo a && \\\n    exit 3\nCOPY . /app\nRUN echo $X\nRUN echo same\nRUN echo same\n';
  const cases: Array<[string, number | undefined]> = [
    ['[base 2/3] RUN echo a &&     exit 3', 2],
    ['[stage-0 3/3] COPY . /app', 4],
    ['[3/3] COPY . /app', 4],
    ['[stage-0 4/6] RUN echo value-of-x', undefined],
    ['[stage-0 5/6] RUN echo same', undefined],
    ['', undefined],
  ];
  for (const [step, line] of cases) {
    it(`${JSON.stringify(step)} → ${String(line)}`, () => assert.equal(stepLine(dockerfile, step), line));
  }
});

describe('build secrets: sizes and empty values', () => {
  it('refuses a secret over BuildKit\'s 500 KiB in one line, and an empty src= or env=', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-secrets-'));
    writeFileSync(path.join(dir, 'big'), Buffer.alloc(MAX_SECRET_BYTES + 1));
    writeFileSync(path.join(dir, 'ok'), Buffer.alloc(MAX_SECRET_BYTES));
    assert.throws(() => readSecretFlags([{ id: 'tok', src: path.join(dir, 'big') }], {}), (e: SkiffError) => e.code === 'usage' && /secret 'tok' is 512001 bytes; BuildKit takes secrets up to 512000 bytes/.test(e.message));
    assert.equal(readSecretFlags([{ id: 'tok', src: path.join(dir, 'ok') }], {}).tok?.length, MAX_SECRET_BYTES);
    assert.throws(() => parseSecretFlags(['id=tok,env='], {}), /env= needs a value/);
    assert.throws(() => parseSecretFlags(['id=tok,src='], {}), /src= needs a value/);
  });
});

describe('what a build with a target stage needs', () => {
  const text = 'FROM a AS base\nRUN x\nFROM base AS runtime\nRUN y\nFROM runtime AS dev\nRUN --mount=type=secret,id=t z\n';
  it('ends the target stage where the next one starts, and empties the rest keeping line numbers', () => {
    assert.equal(stageEnd(text, 'runtime'), 5);
    assert.equal(stageEnd(text, 'RUNTIME'), 5);
    assert.equal(stageEnd(text, 'dev'), undefined);
    assert.equal(stageEnd(text, 'nope'), undefined);
    assert.equal(withoutLinesFrom(text, 5), 'FROM a AS base\nRUN x\nFROM base AS runtime\nRUN y\n\n\n');
  });
  it('lets FROM lines use BuildKit\'s platform args without an ARG', () => {
    const facts = dockerfileFacts('FROM --platform=$BUILDPLATFORM golang AS b\nFROM alpine\n', {}, { BUILDPLATFORM: 'linux/amd64' });
    assert.deepEqual(facts.baseImages, [{ image: 'golang', line: 1, platform: 'linux/amd64' }, { image: 'alpine', line: 2 }]);
    assert.equal(dockerfileFacts('FROM --platform=$BUILDPLATFORM golang\n', {}).baseImages[0]?.platform, undefined);
  });
});

describe('rewritten instructions shown as the user wrote them', () => {
  it('names a lowered heredoc step, a COPY heredoc and a dropped --link by their first line', () => {
    const original = 'FROM a\nRUN <<EOF\necho one\nEOF\nUSER app\nCOPY <<EOF /etc/x.conf\nk=v\nEOF\nCOPY --link a /a\nRUN plain\n';
    const lowered = lowerDockerfile(original, 'Dockerfile', { heredocs: true, copyLink: true });
    const renames = loweredNames(original, lowered.contents, lowered.changes.map((c) => c.line));
    const run = lowered.contents.split('\n')[1] ?? '';
    assert.equal(shownStep(`#2 [stage-0 2/5] ${run}`, renames), '#2 [stage-0 2/5] RUN <<EOF');
    const copyRun = lowered.contents.split('\n')[6] ?? '';
    assert.match(copyRun, /^RUN \[/);
    assert.equal(shownStep(`[stage-0 3/5] ${copyRun}`, renames), '[stage-0 3/5] COPY <<EOF /etc/x.conf');
    assert.equal(shownStep('[stage-0 4/5] COPY a /a', renames), '[stage-0 4/5] COPY --link a /a');
    assert.equal(shownStep('[stage-0 5/5] RUN plain', renames), '[stage-0 5/5] RUN plain');
    assert.equal(shownStep('#2 one', renames), '#2 one', 'output lines are left alone');
  });
});
