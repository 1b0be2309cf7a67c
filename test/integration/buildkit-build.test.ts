/**
 * `buildImageBuildkit` against the real engine: what BuildKit brings (cache and secret mounts,
 * COPY --chmod, platform args), the session living through a long build, failures explained, and
 * an abort that leaves nothing open. Few, tiny builds: CI has 2 cores.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import tar from 'tar-fs';
import { createServer, type AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { buildImageBuildkit } from '../../src/lib/docker/buildkit/build.js';
import { AUTH_METHOD, HEALTH_METHOD, SECRETS_METHOD, serveBuildSession } from '../../src/lib/docker/buildkit/session.js';
import { ImageBuildError, type BuildProgress, type ImageBuildRequest } from '../../src/lib/docker/image-build.js';
import { BASE_AMD64, BASE_ARM64, TEST_LABEL, cleanupImages, docker, ensureBaseImages, makeProject, runInImage } from '../support/engine.js';
import { waitFor } from '../support/wait.js';

const RUN_ID = randomBytes(3).toString('hex');
const LABEL = `io.skiff.test.run=${RUN_ID}`;

function request(files: Record<string, string>, extra: Partial<ImageBuildRequest> = {}): { req: ImageBuildRequest; lines: string[]; progress: BuildProgress[] } {
  const lines: string[] = [];
  const progress: BuildProgress[] = [];
  const dir = makeProject(files);
  const req: ImageBuildRequest = {
    context: tar.pack(dir) as unknown as Readable,
    tag: `skiff-bk-${RUN_ID}:${randomBytes(3).toString('hex')}`,
    dockerfile: 'Dockerfile',
    buildArgs: {},
    labels: { [TEST_LABEL]: 'buildkit', 'io.skiff.test.run': RUN_ID },
    onLine: (l) => lines.push(l),
    onProgress: (p) => progress.push(p),
    ...extra,
  };
  return { req, lines, progress };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  assert.fail('the build should have failed');
}

/** Sockets and pipes this process holds: a closed session leaves none behind. */
function openHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'PipeWrap' || r === 'TCPWrap').length;
}

async function imageBytes(tag: string): Promise<Buffer> {
  const stream = (await docker.getImage(tag).get()) as unknown as Readable;
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('BuildKit build (real engine)', function () {
  const cacheId = `skiff-test-${RUN_ID}`;

  before(async () => {
    const { arm64 } = await ensureBaseImages();
    assert.ok(arm64, 'the arm64 base image needs scripts/setup-host.sh');
  });
  after(async () => {
    await cleanupImages({ label: LABEL });
  });

  it('writes a cache mount, applies COPY --chmod, labels and tag, and reports steps with times', async () => {
    const { req, lines, progress } = request({
      Dockerfile: `FROM ${BASE_AMD64}\nCOPY --chmod=751 run.sh /run.sh\nRUN --mount=type=cache,id=${cacheId},target=/cache echo ${RUN_ID} > /cache/first\n`,
      // Different each run, so the COPY is never a cache hit from an earlier run.
      'run.sh': `echo ${RUN_ID}\n`,
    });
    const result = await buildImageBuildkit(docker, req);
    assert.equal(result.builder, 'buildkit');
    assert.equal(result.steps, 2);
    // The engine names steps `[2/3] …` or `[stage-0 2/3] …`, depending on the Dockerfile.
    assert.deepEqual(
      result.stepTimes.map((s) => s.name.replace(/^\[stage-0 /, '[')),
      ['[2/3] COPY --chmod=751 run.sh /run.sh', `[3/3] RUN --mount=type=cache,id=${cacheId},target=/cache echo ${RUN_ID} > /cache/first`],
    );
    assert.ok(result.stepTimes.every((s) => !s.cached && s.seconds >= 0));
    const inspect = await docker.getImage(req.tag).inspect();
    assert.equal(inspect.Id, result.imageId);
    assert.equal(inspect.Config.Labels?.['io.skiff.test.run'], RUN_ID);
    assert.equal((await runInImage(req.tag, ['ls', '-l', '/run.sh'])).trim().split(/\s+/)[0], '-rwxr-x--x');
    assert.ok(lines.some((l) => /^#\d+ DONE \d+\.\d+s$/.test(l)), lines.join('\n'));
    assert.deepEqual(progress.at(-1), { done: 2, cached: 0, total: 2, running: [], lastLines: [] });
  });

  it('a second build sees what the first wrote in the cache mount (and builds only the target stage)', async () => {
    const { req } = request(
      { Dockerfile: `FROM ${BASE_AMD64} AS seen\nRUN --mount=type=cache,id=${cacheId},target=/cache cp /cache/first /seen\nFROM seen AS broken\nRUN exit 1\n` },
      { target: 'seen' },
    );
    await buildImageBuildkit(docker, req);
    assert.equal((await runInImage(req.tag, ['cat', '/seen'])).trim(), RUN_ID);
  });

  it('serves a secret asked after a long step (the session lives), and the secret is in no layer, history or config', async () => {
    const secret = `s3cret-${randomBytes(8).toString('hex')}`;
    const { req, lines } = request(
      { Dockerfile: `FROM ${BASE_AMD64}\nRUN echo ${RUN_ID} && sleep 5\nRUN --mount=type=secret,id=tok,required test "$(cat /run/secrets/tok)" = "${secret.slice(0, 7)}$(echo ${secret.slice(7)})" && echo secret-ok > /ok\n` },
      { secrets: { tok: Buffer.from(secret) } },
    );
    // The Dockerfile must not hold the value either: it is cut in two above, so its text differs.
    await buildImageBuildkit(docker, req);
    assert.equal((await runInImage(req.tag, ['cat', '/ok'])).trim(), 'secret-ok');
    assert.ok(!lines.some((l) => l.includes(secret)));
    const history = await docker.getImage(req.tag).history();
    for (const h of history as Array<{ CreatedBy: string }>) assert.ok(!h.CreatedBy.includes(secret), h.CreatedBy);
    assert.ok(!(await imageBytes(req.tag)).includes(Buffer.from(secret)), 'the secret is in the docker save bytes');
  });

  it('a required secret not given fails with the explained error', async () => {
    const { req } = request({ Dockerfile: `FROM ${BASE_AMD64}\nRUN --mount=type=secret,id=npmrc,required cat /run/secrets/npmrc\n` });
    const err = await rejection(buildImageBuildkit(docker, req));
    assert.ok(err instanceof ImageBuildError, String(err));
    assert.equal(err.message, "the build needs secret 'npmrc', but secret 'npmrc' was not given");
    assert.equal(err.hint, 'add it to build-secrets in balena.yml, or pass --secret id=npmrc,src=<file>');
    assert.match(err.step ?? '', /^\[(stage-0 )?2\/2\] RUN --mount=type=secret,id=npmrc,required cat/);
  });

  it('builds for linux/arm64 with TARGETARCH set by the engine and build args passed', async () => {
    const { req, lines } = request({ Dockerfile: `FROM ${BASE_ARM64}\nARG TARGETARCH\nARG RUN_ID\nRUN echo arch=$TARGETARCH $RUN_ID\n` }, { platform: 'linux/arm64', buildArgs: { RUN_ID } });
    await buildImageBuildkit(docker, req);
    assert.ok(lines.some((l) => new RegExp(`^#\\d+ arch=arm64 ${RUN_ID}$`).test(l)), lines.join('\n'));
    assert.equal((await docker.getImage(req.tag).inspect()).Architecture, 'arm64');
  });

  it('a failing RUN gives ImageBuildError with the whole output of that step', async () => {
    const { req, lines } = request({ Dockerfile: `FROM ${BASE_AMD64}\nRUN i=1; while [ $i -le 50 ]; do echo out-$i; i=$((i+1)); done; exit 3\n` });
    const err = await rejection(buildImageBuildkit(docker, req));
    assert.ok(err instanceof ImageBuildError, String(err));
    assert.match(err.message, /^the RUN step failed with exit code 3$/);
    assert.match(err.step ?? '', /^\[(stage-0 )?2\/2\] RUN /);
    assert.deepEqual(err.tail, Array.from({ length: 50 }, (_, i) => `out-${i + 1}`));
    assert.ok(lines.some((l) => /^#\d+ ERROR: .*exit code: 3/.test(l)));
  });

  it('a # syntax= frontend that cannot be pulled gives the explained error', async () => {
    const { req } = request({ Dockerfile: `# syntax=nope.invalid/frontend:1\nFROM ${BASE_AMD64}\n` });
    const err = await rejection(buildImageBuildkit(docker, req));
    assert.ok(err instanceof ImageBuildError, String(err));
    assert.match(err.message, /^the Dockerfile's syntax directive names frontend image nope\.invalid\/frontend:1, which cannot be pulled \(/);
    assert.equal(err.where, 'Dockerfile:1');
  });

  it('an abort mid-build rejects with the reason and leaves no session or socket open', async () => {
    const before = openHandles();
    const controller = new AbortController();
    const reason = new Error('stop now');
    const { req } = request(
      { Dockerfile: `FROM ${BASE_AMD64}\nRUN echo started-${RUN_ID} && sleep 60\n` },
      {
        signal: controller.signal,
        onLine: (l) => {
          if (l.endsWith(`started-${RUN_ID}`)) controller.abort(reason);
        },
      },
    );
    const started = Date.now();
    const err = await rejection(buildImageBuildkit(docker, req));
    assert.equal(err, reason);
    assert.ok(Date.now() - started < 30_000);
    await waitFor(() => openHandles() <= before, 'the session and build sockets to close', 10_000);
  });
});

describe('BuildKit session methods (a gRPC client in the engine\'s place, over loopback)', () => {
  // The engine's side of the wire, from the same .proto files: field numbers only.
  const root = protobuf.Root.fromJSON({
    nested: {
      Id: { fields: { ID: { type: 'string', id: 1 } } },
      Data: { fields: { data: { type: 'bytes', id: 1 } } },
      Host: { fields: { Host: { type: 'string', id: 1 } } },
      Creds: { fields: { Username: { type: 'string', id: 1 }, Secret: { type: 'string', id: 2 } } },
      Service: { fields: { service: { type: 'string', id: 1 } } },
      Status: { fields: { status: { type: 'int32', id: 1 } } },
    },
  });
  let client: grpc.Client;
  let closeSession: (() => void) | undefined;
  const server = createServer((socket) => {
    void serveBuildSession(socket, { secrets: { tok: Buffer.from('v4lue') }, registryConfig: { 'registry.example:5000': { username: 'u', password: 'p' }, 'docker.io': { username: 'hub', password: 'hp' } } }).then((close) => (closeSession = close));
  });

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    client = new grpc.Client(`127.0.0.1:${(server.address() as AddressInfo).port}`, grpc.credentials.createInsecure());
  });
  after(() => {
    client.close();
    closeSession?.();
    server.close();
  });

  function call(method: string, reqType: string, resType: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const req = root.lookupType(reqType);
    const res = root.lookupType(resType);
    return new Promise((resolve, reject) =>
      client.makeUnaryRequest(
        method,
        (m: Record<string, unknown>) => Buffer.from(req.encode(req.fromObject(m)).finish()),
        (b: Buffer) => res.toObject(res.decode(b), { defaults: true }) as Record<string, unknown>,
        body,
        (err, value) => (err ? reject(err) : resolve(value ?? {})),
      ),
    );
  }

  it('gives a secret by id, and NotFound for an id not given', async () => {
    assert.equal(Buffer.from((await call(SECRETS_METHOD, 'Id', 'Data', { ID: 'tok' })).data as Uint8Array).toString(), 'v4lue');
    await assert.rejects(call(SECRETS_METHOD, 'Id', 'Data', { ID: 'other' }), (err: grpc.ServiceError) => err.code === grpc.status.NOT_FOUND);
  });

  it('gives registry credentials by host (Docker Hub under docker.io), empty for an unknown host', async () => {
    assert.deepEqual(await call(AUTH_METHOD, 'Host', 'Creds', { Host: 'registry.example:5000' }), { Username: 'u', Secret: 'p' });
    assert.deepEqual(await call(AUTH_METHOD, 'Host', 'Creds', { Host: 'registry-1.docker.io' }), { Username: 'hub', Secret: 'hp' });
    assert.deepEqual(await call(AUTH_METHOD, 'Host', 'Creds', { Host: 'elsewhere.example' }), { Username: '', Secret: '' });
  });

  it('answers the health check SERVING', async () => {
    assert.deepEqual(await call(HEALTH_METHOD, 'Service', 'Status', { service: '' }), { status: 1 });
  });
});
