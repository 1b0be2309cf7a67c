/**
 * Lowered Dockerfiles on the real engine (20.10, whose built-in BuildKit frontend has no heredocs and
 * no COPY --link): they build with BuildKit, and the files, modes and exit statuses are what the
 * heredocs mean.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { lowerDockerfile } from '../../src/lib/project/dockerfile-features.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, makeProject, TEST_LABEL } from '../support/engine.js';

const RUN_ID = randomBytes(3).toString('hex');
const LABEL = `io.skiff.test.run=${RUN_ID}`;
const BIG = Array.from({ length: 900 }, (_, i) => `line ${i} ${'y"\\$'.repeat(20)} end\n`).join('');

/** Builds `dir` with BuildKit (`/build?version=2`, tar context) and gives the image id or the engine's error. */
async function buildKitBuild(dir: string): Promise<{ id?: string; error?: string }> {
  const tar = await import('tar-fs');
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    docker.modem.dial(
      {
        path: '/build?',
        method: 'POST',
        options: { version: '2', labels: JSON.stringify({ [TEST_LABEL]: 'dockerfile-lower', 'io.skiff.test.run': RUN_ID }) },
        file: tar.pack(dir) as unknown as NodeJS.ReadableStream,
        isStream: true,
        headers: { 'Content-Type': 'application/x-tar' },
        statusCodes: { 200: true, 400: 'bad parameter', 500: 'server error' },
      },
      (err, out) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(out as IncomingMessage)),
    );
  });
  let text = '';
  for await (const chunk of res) text += String(chunk);
  const result: { id?: string; error?: string } = {};
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const msg = JSON.parse(line) as { id?: string; aux?: { ID?: string }; error?: string };
    if (msg.id === 'moby.image.id' && msg.aux?.ID) result.id = msg.aux.ID;
    if (msg.error) result.error = msg.error;
  }
  return result;
}

/** Each file's contents and permission bits, read from a created (never started) container. */
async function filesIn(image: string, paths: string[]): Promise<Map<string, { text: string; mode: number }>> {
  const tarStream = await import('tar-stream');
  const container = await docker.createContainer({ Image: image, Cmd: ['true'], Labels: { [TEST_LABEL]: 'dockerfile-lower', 'io.skiff.test.run': RUN_ID } });
  const out = new Map<string, { text: string; mode: number }>();
  try {
    for (const p of paths) {
      const archive = await container.getArchive({ path: p });
      const extract = tarStream.extract();
      const done = new Promise<void>((resolve, reject) => {
        extract.on('entry', (header, stream, next) => {
          let text = '';
          stream.on('data', (c: Buffer) => (text += c.toString('utf8')));
          stream.on('end', () => {
            out.set(p, { text, mode: (header.mode ?? 0) & 0o7777 });
            next();
          });
        });
        extract.on('finish', resolve);
        extract.on('error', reject);
      });
      archive.pipe(extract);
      await done;
    }
  } finally {
    await container.remove({ force: true });
  }
  return out;
}

function lowered(text: string): string {
  return lowerDockerfile(text, 'Dockerfile', { heredocs: true, copyLink: true }).contents;
}

describe('lowered Dockerfiles on the real engine (BuildKit)', function () {
  this.timeout(180_000);
  before(async () => {
    await ensureBaseImages();
  });
  after(async () => {
    await cleanupImages({ label: LABEL });
  });

  it('heredocs in RUN and COPY, and COPY --link, build and leave the files the heredocs mean', async () => {
    const dockerfile = [
      `FROM ${BASE_AMD64}`,
      'ARG NAME=world',
      'WORKDIR /app',
      'RUN <<EOF',
      'echo "lone $NAME" > /lone.txt',
      'EOF',
      'RUN <<EOF',
      '#!/bin/sh',
      'echo "script ran" > /script.txt',
      'EOF',
      "RUN cat <<A > /multi.txt && cat <<-'B' >> /multi.txt",
      'first $NAME',
      'A',
      '\tsecond $NAME',
      '\tB',
      'COPY <<EOF conf/app.conf',
      'hello $NAME $(not run) `not run`',
      'EOF',
      "COPY --chmod=0755 <<'EOF' /bin/hi",
      '#!/bin/sh',
      'echo hi $1',
      'EOF',
      'COPY --link <<a.txt <<b.txt context.txt /dir/',
      'A',
      'a.txt',
      'B',
      'b.txt',
      // Over the 64 KiB line limit of the engine's Dockerfile parser once lowered to one instruction.
      "COPY <<'EOF' /big.txt",
      `${BIG}EOF`,
      '',
    ].join('\n');
    const lowDockerfile = lowered(dockerfile);
    assert.ok(lowDockerfile.split('\n').some((l) => l.length > 50_000 && l.endsWith('\\')), 'the big heredoc is cut into continuation lines');
    const dir = makeProject({ Dockerfile: lowDockerfile, 'context.txt': 'from the context\n' });
    const { id, error } = await buildKitBuild(dir);
    assert.equal(error, undefined);
    assert.ok(id);
    const files = await filesIn(id, ['/lone.txt', '/script.txt', '/multi.txt', '/app/conf/app.conf', '/bin/hi', '/dir/a.txt', '/dir/b.txt', '/dir/context.txt', '/big.txt']);
    const text = (p: string) => files.get(p)?.text;
    assert.equal(text('/lone.txt'), 'lone world\n');
    assert.equal(text('/script.txt'), 'script ran\n');
    assert.equal(text('/multi.txt'), 'first world\nsecond $NAME\n');
    assert.equal(text('/app/conf/app.conf'), 'hello world $(not run) `not run`\n');
    assert.equal(files.get('/app/conf/app.conf')?.mode, 0o644);
    assert.equal(text('/bin/hi'), '#!/bin/sh\necho hi $1\n');
    assert.equal(files.get('/bin/hi')?.mode, 0o755);
    assert.equal(text('/dir/a.txt'), 'A\n');
    assert.equal(text('/dir/b.txt'), 'B\n');
    assert.equal(text('/dir/context.txt'), 'from the context\n');
    assert.equal(text('/big.txt'), BIG);
  });

  it('a failing heredoc script fails the build with its own exit status', async () => {
    const dockerfile = `FROM ${BASE_AMD64}\nRUN true\nRUN <<EOF\n#!/bin/sh\necho failing\nexit 4\nEOF\n`;
    const { id, error } = await buildKitBuild(makeProject({ Dockerfile: lowered(dockerfile) }));
    assert.equal(id, undefined);
    assert.match(error ?? '', /exit code: 4/);
  });
});
