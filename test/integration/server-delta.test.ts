/**
 * The server side of deltas with real parts: the real `skiff server` (SQLite, and PostgreSQL for
 * the dead-replica requeue), images pushed through its own registry, devices registered with a
 * provisioning key asking with their keys, and the delta files checked by decoding them with
 * `xdelta3 -d` on the source layers: the result must hash to the target layer's diffID.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { DeltaAnswer, DeltaDescriptor, DeltaPending } from '../../src/lib/api/deltas.js';
import type { Release } from '../../src/lib/api/resources.js';
import { api, createUser, startServer, type StartedServer } from '../support/server.js';
import { dropPostgresDatabases, postgresUrl } from '../support/postgres.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A tar (uncompressed) of these files, deterministic (fixed times and owners). */
async function tarOf(files: Record<string, Buffer>): Promise<Buffer> {
  const { pack } = await import('tar-stream');
  const p = pack();
  const chunks: Buffer[] = [];
  p.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((resolve) => p.on('end', resolve));
  for (const [name, body] of Object.entries(files)) {
    await new Promise<void>((resolve, reject) => p.entry({ name, size: body.length, mtime: new Date(0), mode: 0o644, uid: 0, gid: 0 }, body, (err) => (err ? reject(err) : resolve())));
  }
  p.finalize();
  await ended;
  return Buffer.concat(chunks);
}

interface PushedImage {
  digest: string;
  configDigest: string;
  layers: Buffer[];
}

/** Pushes an image of these layer tars (gzipped) to `repository` through the server's `/v2/` with the user's token. */
async function pushImage(base: string, token: string, repository: string, layers: Buffer[]): Promise<PushedImage> {
  const scope = `repository:${repository}:pull,push`;
  const tokenRes = await fetch(`${base}/auth/v1/token?service=${encodeURIComponent(new URL(base).host)}&scope=${encodeURIComponent(scope)}`, { headers: { authorization: `Basic ${Buffer.from(`_token:${token}`).toString('base64')}` } });
  const auth = { authorization: `Bearer ${((await tokenRes.json()) as { token: string }).token}` };
  const upload = async (blob: Buffer): Promise<string> => {
    const digest = sha(blob);
    const start = await fetch(`${base}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: auth });
    assert.equal(start.status, 202);
    const put = new URL(start.headers.get('location') ?? '', base);
    put.searchParams.set('digest', digest);
    const done = await fetch(put, { method: 'PUT', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: new Uint8Array(blob) });
    assert.equal(done.status, 201, await done.text());
    return digest;
  };
  const blobs = layers.map((l) => zlib.gzipSync(l, { level: 1 }));
  const descriptors = [];
  for (const blob of blobs) descriptors.push({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: blob.length, digest: await upload(blob) });
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: layers.map(sha) } }));
  const configDigest = await upload(config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: configDigest }, layers: descriptors,
  }));
  const res = await fetch(`${base}/v2/${repository}/manifests/${sha(manifest)}`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/vnd.docker.distribution.manifest.v2+json' }, body: new Uint8Array(manifest) });
  assert.equal(res.status, 201, await res.text());
  return { digest: sha(manifest), configDigest, layers };
}

interface Fleet { name: string; uuid: string; device: { uuid: string; key: string } }

async function fleetWithDevice(base: string, token: string): Promise<Fleet> {
  const name = `f${randomBytes(4).toString('hex')}`;
  const fleet = await api(base, 'POST', '/fleets', { token, body: { name, deviceType: 'intel-nuc' } });
  assert.equal(fleet.status, 201, JSON.stringify(fleet.body));
  const pk = await api(base, 'POST', `/fleets/${name}/provisioning-keys`, { token, body: {} });
  const device = { uuid: randomBytes(16).toString('hex'), key: randomBytes(24).toString('hex') };
  const reg = await api(base, 'POST', '/device/register', { token: (pk.body as { key: string }).key, body: { uuid: device.uuid, device_type: 'intel-nuc', api_key: device.key } });
  assert.equal(reg.status, 201, JSON.stringify(reg.body));
  return { name, uuid: (fleet.body as { uuid: string }).uuid, device };
}

/** A release of one service `app` with this image, made `success`. */
async function release(base: string, token: string, fleet: Fleet, image: PushedImage): Promise<Release> {
  const made = await api(base, 'POST', `/fleets/${fleet.name}/releases`, { token, body: { composition: { services: { app: {} } } } });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const commit = (made.body as { release: Release }).release.commit;
  const done = await api(base, 'PATCH', `/releases/${commit}`, { token, body: { status: 'success', images: { app: image.digest } } });
  assert.equal(done.status, 200, JSON.stringify(done.body));
  return done.body as Release;
}

function askDelta(base: string, key: string, src: string, dest: string) {
  return api(base, 'GET', `/api/v3/delta?src=${encodeURIComponent(src)}&dest=${encodeURIComponent(dest)}`, { token: key });
}

/** Asks until the answer is not pending (each 504 must carry Retry-After); answers the 200 body. */
async function untilAnswered(base: string, key: string, src: string, dest: string, timeoutMs = 60_000): Promise<DeltaAnswer> {
  return waitFor(async () => {
    const res = await askDelta(base, key, src, dest);
    if (res.status === 504) {
      assert.match(res.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
      assert.equal((res.body as DeltaPending).status, 'pending');
      return undefined;
    }
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body as DeltaAnswer;
  }, `the delta ${src} → ${dest}`, timeoutMs, 100);
}

async function download(base: string, key: string, id: string, index: number, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; headers: Headers }> {
  const res = await fetch(`${base}/api/v3/delta/${id}/layers/${index}`, { headers: { authorization: `Bearer ${key}`, ...headers } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), headers: res.headers };
}

/** Decodes a downloaded delta layer file on the source layers (as the device does), with xdelta3 -d. */
function applyDelta(file: Buffer, bases: Buffer[]): Buffer {
  const dir = scratchDir('skiff-delta-apply-');
  writeFileSync(path.join(dir, 'source'), Buffer.concat(bases));
  writeFileSync(path.join(dir, 'patch.vcdiff'), zlib.brotliDecompressSync(file));
  return execFileSync('xdelta3', ['-d', '-c', '-s', path.join(dir, 'source'), path.join(dir, 'patch.vcdiff')], { maxBuffer: 256 * 1024 * 1024 });
}

/** v1/v2/v3 of an image: an unchanged base layer, an app layer of `size` random bytes changed a little in each version, and (v2, v3) a new unrelated layer. */
async function versions(size: number): Promise<{ base: Buffer; v1: Buffer[]; v2: Buffer[]; v3: Buffer[] }> {
  const base = await tarOf({ 'bin/tool': randomBytes(20_000), 'etc/config': Buffer.from('a=1\n') });
  const data = randomBytes(size);
  const edit = (at: number, text: string): Buffer => {
    const copy = Buffer.from(data);
    copy.write(text, at);
    return copy;
  };
  const app1 = await tarOf({ 'app/data.bin': data, 'app/main.js': Buffer.from('console.log("v1");\n') });
  const app2 = await tarOf({ 'app/data.bin': edit(Math.floor(size / 2), 'version two was here'), 'app/main.js': Buffer.from('console.log("v2");\n') });
  const app3 = await tarOf({ 'app/data.bin': edit(Math.floor(size / 3), 'version three'), 'app/main.js': Buffer.from('console.log("v3");\n') });
  const extra = (): Promise<Buffer> => tarOf({ 'opt/new.bin': randomBytes(3000) });
  return { base, v1: [base, app1], v2: [base, app2, await extra()], v3: [base, app3, await extra()] };
}

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
    assert.equal((await download(base, fleet.device.key, idA, 1)).status, 404, 'an evicted file is not found');
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
