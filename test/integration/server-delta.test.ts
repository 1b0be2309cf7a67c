/**
 * The server side of deltas with real parts: the real `skiff server` (SQLite, and PostgreSQL for
 * the dead-replica requeue), images pushed through its own registry, devices registered with a
 * provisioning key asking with their keys, and the delta files checked by decoding them with
 * `xdelta3 -d` on the source layers: the result must hash to the target layer's diffID.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { DeltaDescriptor } from '../../src/lib/api/deltas.js';
import type { Release } from '../../src/lib/api/resources.js';
import { api, createUser, startServer, type StartedServer } from '../support/server.js';
import { applyDelta, askDelta, download, fleetWithDevice, pushImage, release, sha, tarOf, untilAnswered, versions, type Fleet, type PushedImage } from '../support/delta-server.js';
import { dropPostgresDatabases, postgresUrl } from '../support/postgres.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';


describe('skiff server deltas (SQLite)', function () {
  this.timeout(180_000);
  let server: StartedServer;
  let base: string;
  let token: string;
  let fleet: Fleet;
  let other: Fleet;
  let host: string;
  const images: Record<'v1' | 'v2' | 'v3', PushedImage> = {} as Record<'v1' | 'v2' | 'v3', PushedImage>;
  const refs = {} as Record<'v1' | 'v2' | 'v3', string>;
  const commits = {} as Record<'v1' | 'v2' | 'v3', string>;

  before(async () => {
    server = await startServer();
    base = server.url;
    host = new URL(base).host;
    token = (await createUser(base)).token;
    fleet = await fleetWithDevice(base, token);
    other = await fleetWithDevice(base, token);
    const v = await versions(4 * 1024 * 1024);
    for (const name of ['v1', 'v2', 'v3'] as const) {
      images[name] = await pushImage(base, token, `${fleet.uuid}/app`, v[name]);
      refs[name] = `${host}/${fleet.uuid}/app@${images[name].digest}`;
      commits[name] = (await release(base, token, fleet, images[name])).commit;
    }
  });
  after(async () => {
    await server?.kill();
  });

  it('makes the delta of each new release in the background, and release info shows its figures', async () => {
    // v1 → v2 and v2 → v3 were queued as the releases succeeded: the device finds them made.
    const answer = await untilAnswered(base, fleet.device.key, refs.v2, refs.v3);
    assert.equal(answer.status, 'ready');
    const info = await waitFor(async () => {
      const r = await api(base, 'GET', `/releases/${commits.v3}`, { token });
      const delta = (r.body as Release).services[0]?.delta;
      return delta?.status === 'done' ? delta : undefined;
    }, 'release info to show the delta');
    assert.equal(info.from, commits.v2);
    assert.ok(info.downloadBytes !== null && info.pullBytes !== null && info.downloadBytes * 20 < info.pullBytes, JSON.stringify(info));
    const first = await api(base, 'GET', `/releases/${commits.v1}`, { token });
    assert.equal((first.body as Release).services[0]?.delta, null, 'the first release has no delta');
  });

  it('answers pending (504 + Retry-After) for a pair it has not made, then ready with present, delta and pull layers', async () => {
    const started = Date.now();
    const first = await askDelta(base, fleet.device.key, refs.v1, refs.v3);
    assert.equal(first.status, 504, JSON.stringify(first.body));
    const retry = Number(first.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 5);
    assert.deepEqual(first.body, { status: 'pending', retryAfter: retry });
    const answer = await untilAnswered(base, fleet.device.key, refs.v1, refs.v3);
    console.log(`      v1 → v3 made in ${Date.now() - started} ms`);
    assert.equal(answer.status, 'ready');
    const d = (answer as { delta: DeltaDescriptor }).delta;
    assert.equal(d.src, refs.v1);
    assert.equal(d.dest, refs.v3);
    assert.equal(d.imageId, images.v3.configDigest);
    assert.deepEqual(d.layers.map((l) => l.source), ['present', 'delta', 'pull']);
    assert.deepEqual(d.layers.map((l) => l.diffId), images.v3.layers.map(sha));
    const delta = d.layers[1];
    assert.ok(delta?.source === 'delta');
    assert.deepEqual(delta.bases, [sha(images.v1.layers[1] as Buffer)], 'the app layer is encoded against the old app layer alone');
    assert.deepEqual(delta.baseSizes, [(images.v1.layers[1] as Buffer).length], 'the device finds its bases in its export by their sizes');
    const pull = d.layers[2];
    assert.ok(pull?.source === 'pull');
    assert.equal(pull.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
    assert.equal(d.downloadBytes, delta.bytes + pull.bytes);
    assert.ok(d.pullBytes > 4 * 1024 * 1024, 'a pull downloads the whole app layer');
    console.log(`      delta ${delta.bytes} B + pull ${pull.bytes} B vs a pull of ${d.pullBytes} B (${(d.pullBytes / d.downloadBytes).toFixed(0)}×)`);
    assert.ok(d.downloadBytes * 50 < d.pullBytes, `${d.downloadBytes} is not a small fraction of ${d.pullBytes}`);

    // The file decodes on the source layer to exactly the target layer.
    const file = await download(base, fleet.device.key, d.id, 1);
    assert.equal(file.status, 200);
    assert.equal(file.body.length, delta.bytes);
    assert.equal(sha(file.body), delta.sha256);
    assert.equal(sha(applyDelta(file.body, [images.v1.layers[1] as Buffer])), delta.diffId);
    await waitFor(() => server.output().includes(`[download] device ${fleet.device.uuid} delta ${delta.bytes} /api/v3/delta/${d.id}/layers/1`), 'the download line in the server log');

    // Range: a part, the rest, and past the end.
    const part = await download(base, fleet.device.key, d.id, 1, { range: 'bytes=0-9' });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('content-range'), `bytes 0-9/${delta.bytes}`);
    assert.deepEqual(part.body, file.body.subarray(0, 10));
    const rest = await download(base, fleet.device.key, d.id, 1, { range: 'bytes=10-' });
    assert.equal(rest.status, 206);
    assert.deepEqual(Buffer.concat([part.body, rest.body]), file.body);
    await waitFor(() => server.output().includes(`[download] device ${fleet.device.uuid} delta ${delta.bytes - 10} /api/v3/delta/${d.id}/layers/1`), 'the resumed download counted at its own bytes');
    const past = await download(base, fleet.device.key, d.id, 1, { range: `bytes=${delta.bytes}-` });
    assert.equal(past.status, 416);
    assert.equal(past.headers.get('content-range'), `bytes */${delta.bytes}`);

    // Layers without a file are not found.
    assert.equal((await download(base, fleet.device.key, d.id, 0)).status, 404, 'a present layer has no file');
    assert.equal((await download(base, fleet.device.key, d.id, 2)).status, 404, 'a pulled layer has no file');
    assert.equal((await download(base, fleet.device.key, d.id, 9)).status, 404, 'no such layer');
  });

  it('refuses another fleet\'s device (404), unknown ids (404) and images of another fleet (404)', async () => {
    const answer = await untilAnswered(base, fleet.device.key, refs.v1, refs.v2);
    assert.equal(answer.status, 'ready');
    const id = (answer as { delta: DeltaDescriptor }).delta.id;
    const asked = await askDelta(base, other.device.key, refs.v1, refs.v2);
    assert.equal(asked.status, 404, JSON.stringify(asked.body));
    assert.equal((await download(base, other.device.key, id, 1)).status, 404);
    assert.equal((await download(base, fleet.device.key, 'ab'.repeat(16), 1)).status, 404);
    // An image of its own fleet as src, another fleet's (real) repository as dest.
    const foreign = await pushImage(base, token, `${other.uuid}/app`, [await tarOf({ x: randomBytes(100) })]);
    const res = await askDelta(base, fleet.device.key, refs.v1, `${host}/${other.uuid}/app@${foreign.digest}`);
    assert.equal(res.status, 404, JSON.stringify(res.body));
    // A digest of its own fleet's repository that no release names.
    const stray = await pushImage(base, token, `${fleet.uuid}/app`, [await tarOf({ y: randomBytes(100) })]);
    assert.equal((await askDelta(base, fleet.device.key, refs.v1, `${host}/${fleet.uuid}/app@${stray.digest}`)).status, 404);
    assert.equal((await askDelta(base, 'not-a-device-key', refs.v1, refs.v2)).status, 401);
  });

  it('answers 400 naming the field for a bad query', async () => {
    const cases: Array<[string, string]> = [
      [`dest=${encodeURIComponent(refs.v2)}`, 'src'],
      [`src=${encodeURIComponent(refs.v1)}`, 'dest'],
      [`src=${encodeURIComponent(refs.v1)}&dest=${encodeURIComponent(`${host}/${fleet.uuid}/app@sha256:abc`)}`, 'dest'],
      [`src=${encodeURIComponent(`${host}/${fleet.uuid}/app:latest`)}&dest=${encodeURIComponent(refs.v2)}`, 'src'],
      [`src=${encodeURIComponent(refs.v1)}&dest=${encodeURIComponent(refs.v1)}`, 'dest'],
      [`src=${encodeURIComponent(refs.v1)}&dest=${encodeURIComponent(refs.v2)}&extra=1`, 'extra'],
    ];
    for (const [query, field] of cases) {
      const res = await api(base, 'GET', `/api/v3/delta?${query}`, { token: fleet.device.key });
      assert.equal(res.status, 400, `${query}: ${JSON.stringify(res.body)}`);
      assert.equal((res.body as { field?: string }).field, field, `${query}: ${JSON.stringify(res.body)}`);
    }
  });

  it('answers none with the reason when nothing is in common', async () => {
    const unrelated = await pushImage(base, token, `${fleet.uuid}/app`, [await tarOf({ 'other/file': randomBytes(50_000) })]);
    const r = await release(base, token, fleet, unrelated);
    const answer = await untilAnswered(base, fleet.device.key, refs.v1, `${host}/${fleet.uuid}/app@${unrelated.digest}`);
    assert.deepEqual(answer, { status: 'none', reason: 'nothing in common with the running release' });
    const info = await waitFor(async () => {
      const got = (await api(base, 'GET', `/releases/${r.commit}`, { token })).body as Release;
      return got.services[0]?.delta?.status === 'none' ? got.services[0].delta : undefined;
    }, 'release info to show none');
    assert.equal(info.reason, 'nothing in common with the running release');
  });

  it('counts a device\'s blob downloads through the registry proxy', async () => {
    const scope = `repository:${fleet.uuid}/app:pull`;
    const tokenRes = await fetch(`${base}/auth/v1/token?service=${encodeURIComponent(host)}&scope=${encodeURIComponent(scope)}`, { headers: { authorization: `Basic ${Buffer.from(`d_${fleet.device.uuid}:${fleet.device.key}`).toString('base64')}` } });
    const registryToken = ((await tokenRes.json()) as { token: string }).token;
    const blob = zlib.gzipSync(images.v1.layers[0] as Buffer, { level: 1 });
    const blobPath = `/v2/${fleet.uuid}/app/blobs/${sha(blob)}`;
    const res = await fetch(`${base}${blobPath}`, { headers: { authorization: `Bearer ${registryToken}` } });
    assert.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(body.length, blob.length);
    await waitFor(() => server.output().includes(`[download] device ${fleet.device.uuid} blob ${blob.length} ${blobPath}`), 'the blob download line');
  });
});

describe('skiff server deltas: cache bound', function () {
  this.timeout(180_000);
  let server: StartedServer | undefined;
  after(async () => {
    await server?.kill();
  });

  it('evicts the oldest-used delta past --delta-cache-size, and makes it again when asked', async () => {
    server = await startServer({ args: ['--delta-cache-size', '1'] });
    const base = server.url;
    const host = new URL(base).host;
    const token = (await createUser(base)).token;
    const fleet = await fleetWithDevice(base, token);
    const v = await versions(512 * 1024);
    const pushed = { v1: await pushImage(base, token, `${fleet.uuid}/app`, v.v1), v2: await pushImage(base, token, `${fleet.uuid}/app`, v.v2), v3: await pushImage(base, token, `${fleet.uuid}/app`, v.v3) };
    // Draft-free releases, one at a time, so the worker makes v1 → v2 before v2 → v3.
    await release(base, token, fleet, pushed.v1);
    await release(base, token, fleet, pushed.v2);
    const ref = (i: PushedImage): string => `${host}/${fleet.uuid}/app@${i.digest}`;
    const a = await untilAnswered(base, fleet.device.key, ref(pushed.v1), ref(pushed.v2));
    assert.equal(a.status, 'ready');
    const idA = (a as { delta: DeltaDescriptor }).delta.id;
    await release(base, token, fleet, pushed.v3);
    const b = await untilAnswered(base, fleet.device.key, ref(pushed.v2), ref(pushed.v3));
    assert.equal(b.status, 'ready');
    const idB = (b as { delta: DeltaDescriptor }).delta.id;
    await waitFor(() => server?.output().includes(`[delta] evicted ${idA}`), 'the older delta evicted');
    const dir = path.join(server.dataDir, 'deltas');
    assert.deepEqual(readdirSync(dir).filter((n) => n !== 'tmp'), [idB], 'only the newest delta is kept');
    // Its download: 503 + Retry-After, made again here (the agent retries the download after it).
    const evicted = await download(base, fleet.device.key, idA, 1);
    assert.equal(evicted.status, 503, 'an evicted file is made again');
    assert.match(evicted.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
    // Asked again: pending while it is made again here, then ready with the same id.
    const again = await askDelta(base, fleet.device.key, ref(pushed.v1), ref(pushed.v2));
    assert.equal(again.status, 504, JSON.stringify(again.body));
    const remade = await untilAnswered(base, fleet.device.key, ref(pushed.v1), ref(pushed.v2));
    assert.equal((remade as { delta: DeltaDescriptor }).delta.id, idA);
    assert.equal((await download(base, fleet.device.key, idA, 1)).status, 200);
  });

  it('refuses a --delta-cache-size that is not a size', async () => {
    const { runCli } = await import('../support/cli.js');
    const r = await runCli(['server', '--data-dir', scratchDir('skiff-server-'), '--port', '0', '--delta-cache-size', 'lots']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--delta-cache-size 'lots' is not a size/);
  });
});

for (const dialect of ['sqlite', 'postgres'] as const) {
  describe(`skiff server deltas: killed while making one (${dialect})`, function () {
    this.timeout(240_000);
    let server: StartedServer | undefined;
    after(async () => {
      await server?.kill('SIGKILL');
      if (dialect === 'postgres') await dropPostgresDatabases();
    });

    it('queues it again at restart, removes the partial files, and the next request gets it', async function () {
      const database = dialect === 'postgres' ? await postgresUrl(this) : undefined;
      server = await startServer(database ? { database } : {});
      const { dataDir, port } = server;
      const base = server.url;
      const host = new URL(base).host;
      const token = (await createUser(base)).token;
      const fleet = await fleetWithDevice(base, token);
      // Large enough that making it takes a while (download, gunzip, xdelta3 -9).
      const v = await versions(48 * 1024 * 1024);
      const v1 = await pushImage(base, token, `${fleet.uuid}/app`, v.v1);
      const v2 = await pushImage(base, token, `${fleet.uuid}/app`, v.v2);
      await release(base, token, fleet, v1);
      await release(base, token, fleet, v2);
      const ref = (i: PushedImage): string => `${host}/${fleet.uuid}/app@${i.digest}`;
      await waitFor(() => /\[delta\] making [0-9a-f]{32}/.test(server?.output() ?? ''), 'the delta being made', 60_000, 20);
      await waitFor(() => existsSync(path.join(dataDir, 'deltas', 'tmp')) && readdirSync(path.join(dataDir, 'deltas', 'tmp')).length > 0, 'its temp files', 60_000, 20);
      assert.equal(await server.kill('SIGKILL'), null);
      const pending = await askDeltaWhileDown(base);
      assert.equal(pending, undefined, 'the server is down');
      server = await startServer({ dataDir, port, ...(database ? { database } : {}) });
      await waitFor(() => server?.output().includes('delta job(s) of a stopped server queued again'), 'the job requeued at start');
      const answer = await untilAnswered(base, fleet.device.key, ref(v1), ref(v2), 120_000);
      assert.equal(answer.status, 'ready');
      const d = (answer as { delta: DeltaDescriptor }).delta;
      const layer = d.layers[1];
      assert.ok(layer?.source === 'delta');
      const file = await download(base, fleet.device.key, d.id, 1);
      assert.equal(sha(applyDelta(file.body, [v.v1[1] as Buffer])), layer.diffId);
      assert.deepEqual(readdirSync(path.join(dataDir, 'deltas', 'tmp')), [], 'no temp files left');
    });
  });
}

/** Undefined when nothing answers (the server is down). */
async function askDeltaWhileDown(base: string): Promise<number | undefined> {
  return fetch(`${base}/ping`).then((r) => r.status, () => undefined);
}
