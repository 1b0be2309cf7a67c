import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { dockerfileFacts, processTemplate, resolveDockerfile, templateVariables } from '../../src/lib/project/dockerfile.js';
import { ARCHES, automaticPlatformArgs, resolveTarget } from '../../src/lib/device-types/device-types.js';
import type { SkiffError } from '../../src/lib/errors/errors.js';
import { scratchDir } from '../support/tmp.js';

function dirWith(files: Record<string, string>): string {
  const dir = scratchDir('skiff-df-');
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  return dir;
}

const pi4 = resolveTarget({ deviceType: 'raspberrypi4-64' });

describe('Dockerfile resolution', () => {
  it('prefers Dockerfile.<deviceType>, then .<arch>, then .template, then Dockerfile', () => {
    const all = { 'Dockerfile.raspberrypi4-64': 'FROM a\n', 'Dockerfile.aarch64': 'FROM b\n', 'Dockerfile.template': 'FROM c\n', Dockerfile: 'FROM d\n' };
    assert.equal(resolveDockerfile(dirWith(all), undefined, pi4, '/').kind, 'device-type');
    const { 'Dockerfile.raspberrypi4-64': _a, ...noDevice } = all;
    assert.equal(resolveDockerfile(dirWith(noDevice), undefined, pi4, '/').pathRel, 'Dockerfile.aarch64');
    const { 'Dockerfile.aarch64': _b, ...noArch } = noDevice;
    assert.equal(resolveDockerfile(dirWith(noArch), undefined, pi4, '/').pathRel, 'Dockerfile.template');
    const { 'Dockerfile.template': _c, ...plain } = noArch;
    const r = resolveDockerfile(dirWith(plain), undefined, pi4, '/');
    assert.equal(r.pathRel, 'Dockerfile');
    assert.equal(r.processed, false);
  });

  it('ignores Dockerfiles for other device types', () => {
    const dir = dirWith({ 'Dockerfile.intel-nuc': 'FROM x\n', 'Dockerfile.amd64': 'FROM y\n', Dockerfile: 'FROM z\n' });
    assert.equal(resolveDockerfile(dir, undefined, pi4, '/').pathRel, 'Dockerfile');
  });

  it('substitutes balena, resin and skiff template variables', () => {
    const dir = dirWith({ 'Dockerfile.template': 'FROM base-%%BALENA_MACHINE_NAME%%:%%BALENA_ARCH%%\nRUN echo %%RESIN_MACHINE_NAME%% %%RESIN_ARCH%% %%SKIFF_MACHINE_NAME%% %%SKIFF_ARCH%%\n' });
    const r = resolveDockerfile(dir, undefined, pi4, '/');
    assert.equal(r.contents, 'FROM base-raspberrypi4-64:aarch64\nRUN echo raspberrypi4-64 aarch64 raspberrypi4-64 aarch64\n');
    assert.equal(r.processed, true);
  });

  it('substitutes every variable balena documents: service, fleet and release too, under each prefix', () => {
    const vars = ['MACHINE_NAME', 'ARCH', 'SERVICE_NAME', 'APP_NAME', 'RELEASE_HASH'];
    const line = (prefix: string) => vars.map((v) => `%%${prefix}${v}%%`).join(' ');
    const dir = dirWith({ 'Dockerfile.template': `FROM x\nRUN echo ${line('BALENA_')}\nRUN echo ${line('RESIN_')}\nRUN echo ${line('SKIFF_')}\n` });
    const expected = 'raspberrypi4-64 aarch64 frontend myfleet';
    const local = resolveDockerfile(dir, undefined, pi4, '/', { service: 'frontend', appName: 'myfleet' });
    assert.equal(local.contents, `FROM x\n${[1, 2, 3].map(() => `RUN echo ${expected} unavailable\n`).join('')}`, 'a local build has no release: unavailable, as balena-cli says');
    const released = resolveDockerfile(dir, undefined, pi4, '/', { service: 'frontend', appName: 'myfleet', releaseHash: '0123abcd' });
    assert.match(released.contents, /RUN echo raspberrypi4-64 aarch64 frontend myfleet 0123abcd\n/);
  });

  it('reports an unknown %%VAR%% with file:line', () => {
    const dir = dirWith({ 'Dockerfile.template': 'FROM x\n\nRUN echo %%BALENA_NOPE%%\n' });
    assert.throws(() => resolveDockerfile(dir, undefined, pi4, dir), (err: SkiffError) => {
      assert.equal(err.code, 'project');
      assert.equal(err.where, 'Dockerfile.template:3');
      assert.match(err.message, /unknown template variable %%BALENA_NOPE%%/);
      return true;
    });
  });

  it('leaves lower-case and single % alone', () => {
    assert.equal(processTemplate("RUN printf '%d %%s%%'", templateVariables(pi4), 'x'), "RUN printf '%d %%s%%'");
  });

  it('uses an explicit dockerfile and processes it only when it is a template', () => {
    const dir = dirWith({ 'Custom.template': 'FROM %%BALENA_ARCH%%\n', Custom: 'FROM %%BALENA_ARCH%%\n' });
    assert.equal(resolveDockerfile(dir, 'Custom.template', pi4, '/').contents, 'FROM aarch64\n');
    assert.equal(resolveDockerfile(dir, 'Custom', pi4, '/').contents, 'FROM %%BALENA_ARCH%%\n');
  });

  it('fails clearly when there is no Dockerfile, or the named one is missing', () => {
    const dir = dirWith({ 'README.md': 'hi' });
    assert.throws(() => resolveDockerfile(dir, undefined, pi4, dir), /no Dockerfile in '.'/);
    assert.throws(() => resolveDockerfile(dir, 'Nope', pi4, dir), /Dockerfile 'Nope' does not exist/);
  });
});

describe('Dockerfile facts', () => {
  it('finds base images, skipping stages and scratch, with ARG defaults and build args', () => {
    const facts = dockerfileFacts(
      [
        'ARG BASE=alpine:3',
        'ARG TAG',
        'FROM ${BASE} AS builder',
        'RUN make',
        'FROM builder AS second',
        'FROM scratch',
        'FROM --platform=linux/amd64 other:${TAG:-1.0}',
        'COPY --from=builder /a /a',
      ].join('\n'),
      { TAG: '2.0' },
    );
    assert.deepEqual(facts.baseImages, [
      { image: 'alpine:3', line: 3 },
      { image: 'other:2.0', line: 7, platform: 'linux/amd64' },
    ]);
    assert.equal(facts.hasRun, true);
  });

  it('joins continuation lines and skips comments', () => {
    const facts = dockerfileFacts('# FROM commented\nFROM \\\n  base:1\nCOPY . .\n', {});
    assert.deepEqual(facts.baseImages, [{ image: 'base:1', line: 2 }]);
    assert.equal(facts.hasRun, false);
  });

  it('reads FROM --platform=$BUILDPLATFORM from the automatic platform args, as buildx Dockerfiles write it', () => {
    const facts = dockerfileFacts('ARG BUILDPLATFORM\nFROM --platform=$BUILDPLATFORM golang:1 AS build\nFROM base:1\n', automaticPlatformArgs(ARCHES.aarch64.platform, ARCHES.amd64.platform));
    assert.deepEqual(facts.baseImages, [{ image: 'golang:1', line: 2, platform: 'linux/amd64' }, { image: 'base:1', line: 3 }]);
  });

  it('detects RUN in any case', () => {
    assert.equal(dockerfileFacts('FROM a\nrun echo hi\n', {}).hasRun, true);
  });
});

describe('automatic platform build args', () => {
  const cases: Array<[string, Record<string, string>]> = [
    ['raspberry-pi', { TARGETPLATFORM: 'linux/arm/v6', TARGETOS: 'linux', TARGETARCH: 'arm', TARGETVARIANT: 'v6' }],
    ['raspberrypi3', { TARGETPLATFORM: 'linux/arm/v7', TARGETOS: 'linux', TARGETARCH: 'arm', TARGETVARIANT: 'v7' }],
    ['raspberrypi4-64', { TARGETPLATFORM: 'linux/arm64', TARGETOS: 'linux', TARGETARCH: 'arm64', TARGETVARIANT: '' }],
    ['intel-nuc', { TARGETPLATFORM: 'linux/amd64', TARGETOS: 'linux', TARGETARCH: 'amd64', TARGETVARIANT: '' }],
    ['qemux86', { TARGETPLATFORM: 'linux/386', TARGETOS: 'linux', TARGETARCH: '386', TARGETVARIANT: '' }],
  ];
  for (const [slug, target] of cases) {
    it(`${slug} on an amd64 engine: ${target.TARGETPLATFORM}`, () => {
      const args = automaticPlatformArgs(resolveTarget({ deviceType: slug }).platform, ARCHES.amd64.platform);
      assert.deepEqual(args, { ...target, BUILDPLATFORM: 'linux/amd64', BUILDOS: 'linux', BUILDARCH: 'amd64', BUILDVARIANT: '' });
    });
  }

  it('takes BUILD* from the engine', () => {
    const args = automaticPlatformArgs(ARCHES.amd64.platform, ARCHES.armv7hf.platform);
    assert.equal(args.BUILDPLATFORM, 'linux/arm/v7');
    assert.equal(args.BUILDVARIANT, 'v7');
  });
});
