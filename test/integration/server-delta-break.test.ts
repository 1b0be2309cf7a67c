/**
 * Deltas on the server under faults a demanding user meets, with the real `skiff server`: each
 * ends with the server still up, the device told `none` with a reason it can read, and the
 * release pullable as ever.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { DeltaDescriptor, ReleaseServiceDelta } from '../../src/lib/api/deltas.js';
import type { Release } from '../../src/lib/api/resources.js';
import { api, createUser, startServer, type StartedServer } from '../support/server.js';
import { askDelta, fleetWithDevice, pushImage, release, untilAnswered, versions, type Fleet, type PushedImage } from '../support/delta-server.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';

/** A PATH of one folder linking every program of this PATH but `program` (the server still finds docker-registry). */
function pathWithout(program: string): string {
  const dir = scratchDir('skiff-path-');
  for (const folder of (process.env['PATH'] ?? '').split(':').filter((f) => f !== '')) {
    let names: string[];
    try {
      names = readdirSync(folder);
    } catch {
      continue;
    }
    for (const name of names) {
      if (name === program) continue;
      try {
        symlinkSync(path.join(folder, name), path.join(dir, name));
      } catch {
        // the first folder's program wins, as on the PATH
      }
    }
  }
  return dir;
}

/** A new user and fleet (one device) on `server`, and v1, v2, v3 of an image pushed (no release yet). */
async function pushedVersions(server: StartedServer, layerBytes = 256 * 1024): Promise<{ base: string; token: string; fleet: Fleet; images: Record<'v1' | 'v2' | 'v3', PushedImage>; ref: (image: PushedImage) => string }> {
  const base = server.url;
  const host = new URL(base).host;
  const token = (await createUser(base)).token;
  const fleet = await fleetWithDevice(base, token);
  const v = await versions(layerBytes);
  const images = { v1: await pushImage(base, token, `${fleet.uuid}/app`, v.v1), v2: await pushImage(base, token, `${fleet.uuid}/app`, v.v2), v3: await pushImage(base, token, `${fleet.uuid}/app`, v.v3) };
  return { base, token, fleet, images, ref: (image) => `${host}/${fleet.uuid}/app@${image.digest}` };
}

/**
 * Starts a server with this PATH, releases v1 then v2 of a small image, and asks v1 → v2 as the
 * device until answered: the answer (expected none) and release info's delta once it is failed.
 */
async function failedDelta(server: StartedServer, layerBytes = 256 * 1024): Promise<{ reason: string; info: ReleaseServiceDelta; key: string; src: string; dest: string }> {
  const { base, token, fleet, images, ref } = await pushedVersions(server, layerBytes);
  await release(base, token, fleet, images.v1);
  const r2 = await release(base, token, fleet, images.v2);
  const answer = await untilAnswered(base, fleet.device.key, ref(images.v1), ref(images.v2));
  assert.equal(answer.status, 'none', JSON.stringify(answer));
  const info = await waitFor(async () => {
    const got = (await api(base, 'GET', `/releases/${r2.commit}`, { token })).body as Release;
    return got.services[0]?.delta?.status === 'failed' ? got.services[0].delta : undefined;
  }, 'release info to show the failure');
  return { reason: (answer as { reason: string }).reason, info, key: fleet.device.key, src: ref(images.v1), dest: ref(images.v2) };
}

describe('skiff server deltas: xdelta3 broken on the server', function () {
  this.timeout(120_000);
  let server: StartedServer | undefined;
  afterEach(async () => {
    await server?.kill();
    server = undefined;
  });

  it('stays up when xdelta3 is not on the PATH, answers none naming xdelta3, and release info says why', async () => {
    server = await startServer({ env: { PATH: pathWithout('xdelta3') } });
    const { reason, info } = await failedDelta(server);
    assert.match(reason, /xdelta3 is not installed/);
    assert.equal(server.child.exitCode, null, `the server exited:\n${server.output()}`);
    assert.equal((await fetch(`${server.url}/ping`)).status, 200);
    assert.match(info.reason ?? '', /xdelta3 is not installed/);
  });

  it('keeps the reason of an xdelta3 failing with several lines on one line (release info is a table, the device report a line)', async () => {
    const dir = pathWithout('xdelta3');
    writeFileSync(path.join(dir, 'xdelta3'), '#!/bin/sh\necho "xdelta3: first line" >&2\necho "xdelta3: second\tline" >&2\nexit 1\n');
    chmodSync(path.join(dir, 'xdelta3'), 0o755);
    server = await startServer({ env: { PATH: dir } });
    const { reason, info } = await failedDelta(server);
    assert.match(reason, /first line xdelta3: second line/);
    assert.doesNotMatch(reason, /[\r\n\t]/);
    assert.doesNotMatch(info.reason ?? '', /[\r\n\t]/);
  });
});

describe('skiff server deltas: no space left while making one', function () {
  this.timeout(120_000);
  let server: StartedServer | undefined;
  let mounted: string | undefined;
  after(async () => {
    await server?.kill();
    if (mounted) execFileSync('umount', ['-l', mounted]);
  });

  it('stays up, answers none saying so, and leaves no partial files', async () => {
    const dataDir = scratchDir('skiff-server-');
    mounted = path.join(dataDir, 'deltas');
    mkdirSync(mounted, { recursive: true });
    // 1 MB for the delta files: the 4 MB layers being diffed do not fit.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'skiff-test-delta-full', mounted]);
    server = await startServer({ dataDir });
    const { reason, info } = await failedDelta(server, 4 * 1024 * 1024);
    assert.match(reason, /ENOSPC|no space/i);
    assert.equal(info.status, 'failed');
    assert.equal(server.child.exitCode, null, `the server exited:\n${server.output()}`);
    assert.equal((await fetch(`${server.url}/ping`)).status, 200);
    assert.deepEqual(readdirSync(mounted).filter((n) => n !== 'tmp'), [], 'no delta folder');
    assert.deepEqual(readdirSync(path.join(mounted, 'tmp')), [], 'the temporary files are gone');
  });
});

describe('skiff server deltas: many asks of one pair at once', function () {
  this.timeout(120_000);
  let server: StartedServer | undefined;
  after(async () => {
    await server?.kill();
  });

  it('queues and makes it once, and every ask gets pending then the same delta', async () => {
    server = await startServer();
    const { base, token, fleet, images, ref } = await pushedVersions(server);
    await release(base, token, fleet, images.v1);
    await release(base, token, fleet, images.v3);
    // v1 → v2 is no release pair (v3 → v2 is): nothing queued it before the 30 asks.
    await release(base, token, fleet, images.v2);
    const src = ref(images.v1);
    const dest = ref(images.v2);
    const first = await Promise.all(Array.from({ length: 30 }, () => askDelta(base, fleet.device.key, src, dest)));
    for (const r of first) assert.ok(r.status === 504 || r.status === 200, `${r.status} ${JSON.stringify(r.body)}`);
    const answers = await Promise.all(Array.from({ length: 10 }, () => untilAnswered(base, fleet.device.key, src, dest)));
    const ids = new Set(answers.map((a) => (a as { delta: DeltaDescriptor }).delta.id));
    assert.equal(ids.size, 1, JSON.stringify(answers));
    const [id] = [...ids];
    const made = server.output().split('\n').filter((l) => l.includes(`[delta] making ${id ?? ''}`));
    assert.equal(made.length, 1, made.join('\n'));
  });
});

describe('skiff server deltas: a draft between two final releases', function () {
  this.timeout(120_000);
  let server: StartedServer | undefined;
  after(async () => {
    await server?.kill();
  });

  it('makes the next final release\'s delta from the last final one (what devices run), not from the draft', async () => {
    server = await startServer();
    const { base, token, fleet, images, ref } = await pushedVersions(server);
    const r1 = await release(base, token, fleet, images.v1);
    // A draft (skiff deploy --draft) that is never finalized: no device gets it.
    const made = await api(base, 'POST', `/fleets/${fleet.name}/releases`, { token, body: { composition: { services: { app: {} } }, draft: true } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const draft = (made.body as { release: Release }).release.commit;
    assert.equal((await api(base, 'PATCH', `/releases/${draft}`, { token, body: { status: 'success', images: { app: images.v2.digest } } })).status, 200);
    const r3 = await release(base, token, fleet, images.v3);
    const info = await waitFor(async () => {
      const got = (await api(base, 'GET', `/releases/${r3.commit}`, { token })).body as Release;
      return got.services[0]?.delta?.status === 'done' ? got.services[0].delta : undefined;
    }, 'release info to show the delta made');
    assert.equal(info.from, r1.commit, 'the delta is from the last final release');
    // Made in the background: the device's first ask finds it ready.
    const first = await askDelta(base, fleet.device.key, ref(images.v1), ref(images.v3));
    assert.equal(first.status, 200, JSON.stringify(first.body));
  });
});

describe('skiff server deltas: xdelta3 installed after a delta failed for good', function () {
  this.timeout(120_000);
  let server: StartedServer | undefined;
  after(async () => {
    await server?.kill();
  });

  it('makes it once the server restarts with xdelta3 and a device asks again', async () => {
    server = await startServer({ env: { PATH: pathWithout('xdelta3') } });
    const { dataDir } = server;
    const { reason, key, src, dest } = await failedDelta(server);
    assert.match(reason, /xdelta3 is not installed/);
    await server.kill();
    // As after its last allowed attempt, an hour ago (attempts are a minute apart: not waited for here).
    const { default: Sqlite } = await import('better-sqlite3');
    const db = new Sqlite(path.join(dataDir, 'skiff.db'));
    db.prepare("UPDATE deltas SET attempts = 3, updated_at = ? WHERE status = 'failed'").run(new Date(Date.now() - 3_600_000).toISOString());
    db.close();
    // The admin installed xdelta3 (the PATH has it again) and restarted the server, as the reason said.
    server = await startServer({ dataDir });
    const answer = await untilAnswered(server.url, key, src, dest);
    assert.equal(answer.status, 'ready', JSON.stringify(answer));
  });
});

describe('skiff server deltas: a cache of many deltas', function () {
  this.timeout(120_000);
  let server: StartedServer | undefined;
  after(async () => {
    await server?.kill();
  });

  it('still evicts with more delta folders than SQLite takes parameters in one statement', async () => {
    server = await startServer({ args: ['--delta-cache-size', '1'] });
    // 33,000 folders of deltas the database does not know (say, left by another server): each is one
    // parameter of the eviction's lookup, past SQLite's 32,766.
    const dir = path.join(server.dataDir, 'deltas');
    for (let i = 0; i < 33_000; i++) mkdirSync(path.join(dir, i.toString(16).padStart(32, '0')), { recursive: true });
    const { base, token, fleet, images, ref } = await pushedVersions(server);
    await release(base, token, fleet, images.v1);
    await release(base, token, fleet, images.v2);
    const answer = await untilAnswered(base, fleet.device.key, ref(images.v1), ref(images.v2));
    assert.equal(answer.status, 'ready', JSON.stringify(answer));
    await waitFor(() => readdirSync(dir).length <= 2 || undefined, 'the eviction of the 33,000 folders', 60_000);
    assert.doesNotMatch(server.output(), /failed/);
  });
});
