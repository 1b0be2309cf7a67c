import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BuildEventEnvelope, RemoteBuildEvent } from '../../src/lib/api/builds.js';
import type { EndpointName } from '../../src/lib/api/endpoints.js';
import type { CloudClient } from '../../src/lib/cloud/client.js';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { createBuildQuery, followBuild, packProject, pushTargetKind, reattachDelayMs, uploadBuild, withShellNote, type UploadClient } from '../../src/lib/cloud/remote-build.js';
import { scratchDir } from '../support/tmp.js';

function tree(files: Record<string, string>): string {
  const dir = scratchDir('skiff-rb-');
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), text);
  }
  return dir;
}

async function unpack(dir: string, options: Parameters<typeof packProject>[1] = {}): Promise<{ out: string; size: number; streamed: number; files: number }> {
  const packed = await packProject(dir, { deviceType: 'intel-nuc', ...options });
  try {
    const out = scratchDir('skiff-rb-out-');
    const tar = await import('tar-fs');
    let streamed = 0;
    const stream = packed.stream();
    stream.on('data', (c: Buffer) => { streamed += c.length; });
    await pipeline(stream, tar.extract(out));
    return { out, size: packed.size, streamed, files: packed.files };
  } finally {
    packed.dispose();
  }
}

const COMPOSE = 'services:\n  web:\n    build: ./web\n  api:\n    build: ./api\n';

describe('packProject: the project as a cloud build reads it', () => {
  it('never packs .git (the root one or nested ones) and honours .dockerignore', async () => {
    const dir = tree({
      'docker-compose.yml': COMPOSE,
      '.dockerignore': '**/*.log\n**/node_modules\n',
      'web/Dockerfile': 'FROM local/busybox:amd64\n',
      'web/index.html': 'hi',
      'web/debug.log': 'x',
      'web/node_modules/m/index.js': 'x',
      'api/Dockerfile': 'FROM local/busybox:amd64\n',
      'api/.git/HEAD': 'ref',
      '.git/HEAD': 'ref: refs/heads/main',
      '.git/objects/ab/cdef': 'x',
    });
    const { out } = await unpack(dir);
    assert.ok(existsSync(path.join(out, 'docker-compose.yml')));
    assert.equal(readFileSync(path.join(out, 'web/index.html'), 'utf8'), 'hi');
    assert.ok(existsSync(path.join(out, 'web/Dockerfile')));
    assert.ok(!existsSync(path.join(out, '.git')), 'root .git');
    assert.ok(!existsSync(path.join(out, 'api/.git')), 'nested .git');
    assert.ok(!existsSync(path.join(out, 'web/debug.log')));
    assert.ok(!existsSync(path.join(out, 'web/node_modules')));
  });

  it('keeps what the server needs to read the project even when .dockerignore lists it', async () => {
    const dir = tree({
      'docker-compose.yml': COMPOSE,
      '.dockerignore': 'docker-compose.yml\nbalena.yml\n.env\n**/Dockerfile*\n.dockerignore\n*.md\n',
      'balena.yml': 'build-variables:\n  global:\n    - A=1\n',
      '.env': 'X=1\n',
      'README.md': 'drop me',
      'web/Dockerfile': 'FROM local/busybox:amd64\n',
      'web/Dockerfile.template': 'FROM local/busybox:%%BALENA_ARCH%%\n',
      'api/Dockerfile': 'FROM local/busybox:amd64\n',
    });
    const { out } = await unpack(dir);
    for (const f of ['docker-compose.yml', 'balena.yml', '.env', 'web/Dockerfile', 'web/Dockerfile.template', 'api/Dockerfile', '.dockerignore']) {
      assert.ok(existsSync(path.join(out, f)), f);
    }
    assert.ok(!existsSync(path.join(out, 'README.md')));
  });

  it('reports the exact size of the tar it streams, and a negation inside an excluded folder still works', async () => {
    const dir = tree({
      Dockerfile: 'FROM local/busybox:amd64\n',
      '.dockerignore': 'assets\n!assets/keep.bin\n',
      'assets/drop.bin': 'x'.repeat(100_000),
      'assets/keep.bin': 'k'.repeat(3000),
      'big.bin': 'b'.repeat(200_000),
    });
    const { out, size, streamed, files } = await unpack(dir);
    assert.equal(streamed, size);
    assert.ok(size > 203_000 && size < 210_000, `size ${size}`);
    assert.ok(existsSync(path.join(out, 'assets/keep.bin')));
    assert.ok(!existsSync(path.join(out, 'assets/drop.bin')));
    assert.equal(files, 4);
  });

  it('with multiDockerignore, each service is filtered by the .dockerignore of its own context', async () => {
    const dir = tree({
      'docker-compose.yml': COMPOSE,
      '.dockerignore': '**/*.tmp\n',
      'web/.dockerignore': 'secret.txt\n',
      'web/Dockerfile': 'FROM local/busybox:amd64\n',
      'web/secret.txt': 's',
      'web/a.tmp': 'kept: only the web rules apply here',
      'api/Dockerfile': 'FROM local/busybox:amd64\n',
      'api/b.tmp': 'x',
    });
    const { out } = await unpack(dir, { multiDockerignore: true });
    assert.ok(!existsSync(path.join(out, 'web/secret.txt')));
    assert.ok(existsSync(path.join(out, 'web/a.tmp')));
    assert.ok(existsSync(path.join(out, 'api/b.tmp')), 'api has no .dockerignore of its own: none applies');
    const plain = await unpack(dir);
    assert.ok(existsSync(path.join(plain.out, 'web/secret.txt')));
    assert.ok(!existsSync(path.join(plain.out, 'web/a.tmp')));
  });

  it('runs the project checks first: a missing Dockerfile, build secrets, a context outside the folder', async () => {
    const missing = tree({ 'docker-compose.yml': 'services:\n  web:\n    build: ./web\n', 'web/app.js': 'x' });
    await assert.rejects(packProject(missing, { deviceType: 'intel-nuc' }), (e: SkiffError) => e.code === 'project');
    const secrets = tree({ Dockerfile: 'FROM local/busybox:amd64\n', 'balena.yml': 'build-secrets:\n  global:\n    - source: a\n      dest: b\n' });
    await assert.rejects(packProject(secrets, { deviceType: 'intel-nuc' }), (e: SkiffError) => e.code === 'project' && e.where === 'balena.yml:3' && /build secret file \.balena\/secrets\/a does not exist/.test(e.message));
    const outer = tree({ 'proj/docker-compose.yml': 'services:\n  web:\n    build: ../web\n', 'web/Dockerfile': 'FROM local/busybox:amd64\n' });
    await assert.rejects(packProject(path.join(outer, 'proj'), { deviceType: 'intel-nuc' }), (e: SkiffError) => e.code === 'project' && /outside the project folder/.test(e.message));
  });

  it('leaves no temporary file behind', async () => {
    const dir = tree({ Dockerfile: 'FROM local/busybox:amd64\n' });
    const tmp = scratchDir('skiff-rb-tmp-');
    const packed = await packProject(dir, { deviceType: 'intel-nuc', tmpDir: tmp });
    assert.ok(statSync(tmp).isDirectory());
    packed.dispose();
    const { readdirSync } = await import('node:fs');
    assert.deepEqual(readdirSync(tmp), []);
  });
});

describe('compose variables on a cloud build', () => {
  it('reads the compose file with the project\'s .env only, and says so when the shell has the variable', async () => {
    const dir = tree({ 'docker-compose.yml': 'services:\n  web:\n    build: .\n    environment:\n      A: ${FROM_ENV_FILE}\n      B: ${ONLY_IN_SHELL}\n', '.env': 'FROM_ENV_FILE=1\n', Dockerfile: 'FROM local/busybox:amd64\n' });
    const packed = await packProject(dir, { deviceType: 'intel-nuc' });
    packed.dispose();
    const web = packed.resolved.services.find((s) => s.name === 'web');
    assert.deepEqual((web?.config as { environment?: unknown }).environment, { A: '1', B: '' });
    const warning = packed.resolved.warnings.find((w) => w.includes('ONLY_IN_SHELL'));
    assert.ok(warning);
    assert.match(withShellNote(warning, { ONLY_IN_SHELL: 'x' }), /set in this shell, but the server builds with the project's \.env only/);
    assert.equal(withShellNote(warning, {}), warning);
  });
});

describe("push's argument: a device address or a fleet (balena's rule)", () => {
  const cases: Array<[string, 'device' | 'fleet']> = [
    ['192.168.1.23', 'device'],
    ['127.0.0.1:48484', 'device'],
    ['10.0.0.1:2375', 'device'],
    ['::1', 'device'],
    ['fe80::1', 'device'],
    ['[::1]:48484', 'device'],
    ['mydevice.local', 'device'],
    ['mydevice.local:48484', 'device'],
    ['a1b2c3d.local', 'device'],
    ['MyDevice.LOCAL', 'device'],
    ['myfleet', 'fleet'],
    ['my-fleet_2', 'fleet'],
    ['localhost', 'fleet'],
    ['kiosks.example.com', 'fleet'],
    ['local', 'fleet'],
    ['.local', 'fleet'],
    ['1.2.3', 'fleet'],
    ['999.1.1.1', 'fleet'],
    ['[myfleet]', 'fleet'],
    ['fleet:1', 'fleet'],
  ];
  for (const [arg, kind] of cases) it(`${arg} → ${kind}`, () => assert.equal(pushTargetKind(arg), kind));
});

describe('the upload', () => {
  it('puts the options in the query string as the route reads them', () => {
    assert.deepEqual(createBuildQuery({}), {});
    assert.deepEqual(createBuildQuery({
      draft: true, nocache: false, pull: true, notes: 'n', tags: { a: '1', b: '' }, gitCommit: 'f'.repeat(40), dirty: true, source: 'push', multiDockerignore: true,
    }), { draft: 'true', pull: 'true', notes: 'n', tag: ['a=1', 'b='], gitCommit: 'f'.repeat(40), dirty: 'true', source: 'push', multiDockerignore: 'true' });
  });

  it('streams the tar with its length and type, reports progress, and returns the build', async () => {
    const body = Buffer.alloc(300_000, 7);
    let received = 0;
    let headers: Record<string, string> = {};
    let query: Record<string, unknown> = {};
    const client: UploadClient = {
      url: 'http://server',
      async upload<T>(name: EndpointName, options: Parameters<CloudClient['upload']>[1]): Promise<T> {
        assert.equal(name, 'createBuild');
        headers = options.headers ?? {};
        query = options.query ?? {};
        for await (const chunk of options.body) received += (chunk as Buffer).length;
        return { id: 'b'.repeat(32), status: 'queued' } as T;
      },
    };
    const progress: number[] = [];
    const build = await uploadBuild(client, 'kiosks', { stream: Readable.from([body.subarray(0, 100_000), body.subarray(100_000)]), size: body.length }, {
      draft: true, headers: { 'x-skiff-git-hook': 'secret' }, onProgress: (bytes, total) => { progress.push(bytes); assert.equal(total, body.length); },
    });
    assert.equal(headers['x-skiff-git-hook'], 'secret');
    assert.equal(build.id, 'b'.repeat(32));
    assert.equal(received, body.length);
    assert.equal(headers['content-type'], 'application/x-tar');
    assert.equal(headers['content-length'], String(body.length));
    assert.equal(query.draft, 'true');
    assert.equal(progress.at(-1), body.length);
  });

  it('Ctrl-C before the last byte aborts the upload: interrupted, nothing created', async () => {
    const client: UploadClient = {
      url: 'http://server',
      upload: <T>(_name: EndpointName, options: Parameters<CloudClient['upload']>[1]) => new Promise<T>((_resolve, reject) => {
        options.body.resume();
        options.signal?.addEventListener('abort', () => reject(new Error('aborted')));
      }),
    };
    const controller = new AbortController();
    const endless = new Readable({ read() { setTimeout(() => this.push(Buffer.alloc(1024)), 1); } });
    const uploading = uploadBuild(client, 'f', { stream: endless, size: 1e9 }, { signal: controller.signal, onProgress: (bytes) => { if (bytes > 10_000) controller.abort(); } });
    await assert.rejects(uploading, (e: SkiffError) => e.code === 'interrupted' && /created no build/.test(e.message));
    assert.ok(endless.destroyed, 'the tar stream is closed');
  });

  it('Ctrl-C after the last byte waits briefly for the answer (the build to cancel), then says a build may exist', async () => {
    const controller = new AbortController();
    const client: UploadClient = {
      url: 'http://server',
      upload: <T>(_name: EndpointName, options: Parameters<CloudClient['upload']>[1]) => new Promise<T>((_resolve, reject) => {
        options.body.on('end', () => controller.abort());
        options.body.resume();
        options.signal?.addEventListener('abort', () => reject(new Error('aborted')));
      }),
    };
    await assert.rejects(uploadBuild(client, 'f', { stream: Readable.from([Buffer.alloc(10)]), size: 10 }, { signal: controller.signal, stallMs: 300 }),
      (e: SkiffError) => e.code === 'interrupted' && /a build may exist/.test(e.message));
  });

  it('fails naming the stall when the server takes nothing', async () => {
    const client: UploadClient = {
      url: 'http://server',
      upload: <T>(_name: EndpointName, options: Parameters<CloudClient['upload']>[1]) => new Promise<T>((_resolve, reject) => {
        options.body.resume();
        options.signal?.addEventListener('abort', () => reject(new Error('aborted')));
      }),
    };
    const never = new Readable({ read() {} });
    await assert.rejects(uploadBuild(client, 'f', { stream: never, size: 10 }, { stallMs: 50 }), (e: SkiffError) => e.code === 'serverUnreachable' && /stalled/.test(e.message));
  });
});

// --- following: a scripted server, one answer per attempt

type Script = (after: number) => { events: number[]; then: 'end' | 'drop' | 'hang'; done?: boolean } | SkiffError;

function envelope(seq: number, done: boolean): BuildEventEnvelope {
  const event: RemoteBuildEvent = done ? { kind: 'done', status: 'success', release: 'r'.repeat(32), error: null } : { kind: 'log', service: 'web', line: `line ${seq}` };
  return { seq, time: new Date(0).toISOString(), event };
}

function scripted(script: Script): { client: Pick<CloudClient, 'stream'>; afters: number[] } {
  const afters: number[] = [];
  const client: Pick<CloudClient, 'stream'> = {
    async stream(name, options = {}) {
      assert.equal(name, 'buildEvents');
      const after = Number(options.query?.after);
      afters.push(after);
      const step = script(after);
      if (step instanceof SkiffError) throw step;
      const encoder = new TextEncoder();
      const chunks = [': stream\n\n', ...step.events.map((seq, i) => {
        const last = step.done === true && i === step.events.length - 1;
        return `id: ${seq}\ndata: ${JSON.stringify(envelope(seq, last))}\n\n`;
      })];
      // Half an event before the connection dies: the half must not count.
      if (step.then === 'drop') chunks.push('id: 99\ndata: {"seq":');
      let next = 0;
      // Pulled one chunk at a time, so the failure comes only after the reader took every chunk, as from a socket.
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          options.signal?.addEventListener('abort', () => controller.error(new DOMException('aborted', 'AbortError')));
        },
        pull(controller) {
          const chunk = chunks[next++];
          if (chunk !== undefined) controller.enqueue(encoder.encode(chunk));
          else if (step.then === 'end') controller.close();
          else if (step.then === 'drop') controller.error(new TypeError('terminated', { cause: new Error('other side closed') }));
          else return new Promise<void>(() => {});
          return undefined;
        },
      }, { highWaterMark: 0 });
      return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
    },
  };
  return { client, afters };
}

describe('followBuild: re-attaching without repeats or gaps', () => {
  it('re-attaches after a dropped connection from the last seq seen; a repeat is dropped', async () => {
    const { client, afters } = scripted((after) => (after === 0 ? { events: [1, 2, 3], then: 'drop' } : { events: [3, 4, 5, 6], then: 'end', done: true }));
    const seen: number[] = [];
    const reattached: string[] = [];
    const done = await followBuild(client, 'a'.repeat(32), { onEvent: (e) => seen.push(e.seq), onReattach: (_n, why) => reattached.push(why), retryDelayMs: () => 0 });
    assert.equal(done.status, 'success');
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(afters, [0, 3]);
    assert.deepEqual(reattached, ['other side closed']);
  });

  it('re-attaches when the stream ends before done, and when it goes silent', async () => {
    let calls = 0;
    const { client, afters } = scripted(() => {
      calls++;
      if (calls === 1) return { events: [1], then: 'end' };
      if (calls === 2) return { events: [2], then: 'hang' };
      return { events: [3], then: 'end', done: true };
    });
    const reasons: string[] = [];
    const seen: number[] = [];
    await followBuild(client, 'a'.repeat(32), { onEvent: (e) => seen.push(e.seq), onReattach: (_n, why) => reasons.push(why), retryDelayMs: () => 0, idleMs: 100 });
    assert.deepEqual(seen, [1, 2, 3]);
    assert.deepEqual(afters, [0, 1, 2]);
    assert.match(reasons[0] ?? '', /ended the stream/);
    assert.match(reasons[1] ?? '', /no data/);
  });

  it('starts after a given seq', async () => {
    const { client, afters } = scripted((after) => ({ events: [after + 1], then: 'end', done: true }));
    const seen: number[] = [];
    await followBuild(client, 'a'.repeat(32), { after: 41, onEvent: (e) => seen.push(e.seq) });
    assert.deepEqual(afters, [41]);
    assert.deepEqual(seen, [42]);
  });

  it('gives up after the bounded attempts, naming skiff build-logs --follow', async () => {
    const { client, afters } = scripted(() => new SkiffError('serverUnreachable', 'the server refused the connection'));
    await assert.rejects(followBuild(client, 'c'.repeat(32), { maxAttempts: 3, retryDelayMs: () => 0 }), (e: SkiffError) => {
      assert.equal(e.code, 'serverUnreachable');
      assert.match(e.hint ?? '', new RegExp(`skiff build-logs ${'c'.repeat(32)} --follow`));
      return true;
    });
    assert.equal(afters.length, 4);
  });

  it('an event resets the count: a long build on a flaky line never gives up', async () => {
    let n = 0;
    const { client } = scripted((after) => (++n < 8 ? { events: [after + 1], then: 'drop' } : { events: [after + 1], then: 'end', done: true }));
    const seen: number[] = [];
    await followBuild(client, 'a'.repeat(32), { maxAttempts: 2, retryDelayMs: () => 0, onEvent: (e) => seen.push(e.seq) });
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('stops at once for a build that is not found (or not ours) and on the caller\'s abort', async () => {
    const { client, afters } = scripted(() => new SkiffError('notFound', 'build not found'));
    await assert.rejects(followBuild(client, 'd'.repeat(32), { retryDelayMs: () => 0 }), (e: SkiffError) => e.code === 'notFound');
    assert.equal(afters.length, 1);
    const hang = scripted(() => ({ events: [1], then: 'hang' }));
    const controller = new AbortController();
    const following = followBuild(hang.client, 'e'.repeat(32), { signal: controller.signal, onEvent: () => controller.abort() });
    await assert.rejects(following, (e: SkiffError) => e.code === 'interrupted');
  });

  it('backs off with jitter, bounded', () => {
    assert.equal(reattachDelayMs(1, () => 1), 500);
    assert.equal(reattachDelayMs(1, () => 0), 250);
    assert.equal(reattachDelayMs(3, () => 1), 2000);
    assert.equal(reattachDelayMs(20, () => 1), 8000);
  });
});

