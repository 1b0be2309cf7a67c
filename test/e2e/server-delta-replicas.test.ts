/**
 * Deltas across replicas: two real `skiff server` replicas on one PostgreSQL database, each with
 * its own data dir and built-in registry (the images are pushed through both). Replica A makes a
 * release's delta while it runs alone; a device then asks and downloads through replica B, which
 * has no files: B answers ready at once and relays the layer download to A (exact bytes, Range,
 * counted once, by B). A request already relayed is never relayed again. Once A stops, B makes
 * the delta itself (a download answers 503 + Retry-After, the ask 504, then ready).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { DeltaDescriptor } from '../../src/lib/api/deltas.js';
import { applyDelta, askDelta, download, fleetWithDevice, pushImage, release, sha, untilAnswered, versions, type Fleet, type PushedImage } from '../support/delta-server.js';
import { dropPostgresDatabases, postgresUrl } from '../support/postgres.js';
import { createUser, startServer, type StartedServer } from '../support/server.js';
import { waitFor } from '../support/wait.js';

/** The `[download] device …` lines of a server's output for this device. */
function downloadLines(server: StartedServer, uuid: string): string[] {
  return server.output().split('\n').filter((l) => l.includes(`[download] device ${uuid} `));
}

describe('deltas across replicas (postgres)', function () {
  this.timeout(300_000);
  let a: StartedServer | undefined;
  let b: StartedServer | undefined;
  let fleet: Fleet;
  let delta: DeltaDescriptor;
  let layer: Extract<DeltaDescriptor['layers'][number], { source: 'delta' }>;
  let bases: Buffer[];
  const refs = { a: { v1: '', v2: '' }, b: { v1: '', v2: '' } };

  before(async function () {
    const database = await postgresUrl(this);
    // A alone at first: its worker is the only one to claim the release's delta.
    a = await startServer({ database });
    const token = (await createUser(a.url)).token;
    fleet = await fleetWithDevice(a.url, token);
    const v = await versions(8 * 1024 * 1024);
    const pushed: Record<'v1' | 'v2', PushedImage> = { v1: await pushImage(a.url, token, `${fleet.uuid}/app`, v.v1), v2: await pushImage(a.url, token, `${fleet.uuid}/app`, v.v2) };
    await release(a.url, token, fleet, pushed.v1);
    await release(a.url, token, fleet, pushed.v2);
    const ref = (server: StartedServer, image: PushedImage): string => `${new URL(server.url).host}/${fleet.uuid}/app@${image.digest}`;
    refs.a = { v1: ref(a, pushed.v1), v2: ref(a, pushed.v2) };
    const answer = await untilAnswered(a.url, fleet.device.key, refs.a.v1, refs.a.v2, 120_000);
    assert.equal(answer.status, 'ready', JSON.stringify(answer));
    delta = (answer as { delta: DeltaDescriptor }).delta;
    const found = delta.layers.find((l) => l.source === 'delta');
    assert.ok(found?.source === 'delta', JSON.stringify(delta.layers));
    layer = found;
    bases = layer.bases.map((d) => v.v1.find((l) => sha(l) === d) ?? Buffer.alloc(0));

    // B joins with its own (empty) data dir; the same images in its registry, for when it must make the delta itself.
    b = await startServer({ database });
    await pushImage(b.url, token, `${fleet.uuid}/app`, v.v1);
    await pushImage(b.url, token, `${fleet.uuid}/app`, v.v2);
    refs.b = { v1: ref(b, pushed.v1), v2: ref(b, pushed.v2) };
  });

  after(async function () {
    if (this.currentTest?.state === 'failed') console.error(`--- replica a ---\n${a?.output() ?? ''}\n--- replica b ---\n${b?.output() ?? ''}`);
    await a?.kill();
    await b?.kill();
    await dropPostgresDatabases();
  });

  const layerPath = (): string => `/api/v3/delta/${delta.id}/layers/${delta.layers.indexOf(layer)}`;

  it('answers ready through the replica without the files (no second make) and relays the download from the maker: exact bytes, Range, counted once', async () => {
    assert.ok(a && b);
    const index = delta.layers.indexOf(layer);
    const asked = await askDelta(b.url, fleet.device.key, refs.b.v1, refs.b.v2);
    assert.equal(asked.status, 200, `no 504: the maker is live (${JSON.stringify(asked.body)})`);
    const answer = asked.body as { status: string; delta: DeltaDescriptor };
    assert.equal(answer.status, 'ready');
    assert.equal(answer.delta.id, delta.id);
    assert.equal(answer.delta.src, refs.b.v1, 'the asked names come back');
    assert.equal(existsSync(path.join(b.dataDir, 'deltas', delta.id)), false, 'B has no files of it');
    assert.doesNotMatch(b.output(), /\[delta\] making/, 'B did not make it again');

    const file = await download(b.url, fleet.device.key, delta.id, index);
    assert.equal(file.status, 200);
    assert.equal(file.headers.get('content-length'), String(layer.bytes));
    assert.equal(file.body.length, layer.bytes);
    assert.equal(sha(file.body), layer.sha256);
    assert.equal(sha(applyDelta(file.body, bases)), layer.diffId, 'it decodes to the target layer');

    const part = await download(b.url, fleet.device.key, delta.id, index, { range: 'bytes=0-9' });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('content-range'), `bytes 0-9/${layer.bytes}`);
    assert.deepEqual(part.body, file.body.subarray(0, 10));
    const rest = await download(b.url, fleet.device.key, delta.id, index, { range: 'bytes=10-' });
    assert.equal(rest.status, 206);
    assert.equal(rest.headers.get('content-range'), `bytes 10-${layer.bytes - 1}/${layer.bytes}`);
    assert.deepEqual(Buffer.concat([part.body, rest.body]), file.body);
    const past = await download(b.url, fleet.device.key, delta.id, index, { range: `bytes=${layer.bytes}-` });
    assert.equal(past.status, 416);
    assert.equal(past.headers.get('content-range'), `bytes */${layer.bytes}`);

    // Counted by B, the replica the device talks to; A served the bytes but does not count them again.
    const expected = [layer.bytes, 10, layer.bytes - 10].map((n) => `[download] device ${fleet.device.uuid} delta ${n} ${layerPath()}`);
    await waitFor(() => expected.every((line) => downloadLines(b as StartedServer, fleet.device.uuid).some((l) => l.endsWith(line))), `B's download lines\n${b.output()}`);
    assert.equal(downloadLines(b, fleet.device.uuid).length, 3, downloadLines(b, fleet.device.uuid).join('\n'));
    assert.deepEqual(downloadLines(a, fleet.device.uuid), [], 'A does not count a relayed download');
    await waitFor(() => a?.output().includes(`[delta] served ${layer.bytes} bytes of ${layerPath()} to device ${fleet.device.uuid} through another replica (counted there)`), 'A\'s trace of the relayed download');

    // A key that is no device's is refused before anything is relayed.
    assert.equal((await download(b.url, 'not-a-device-key', delta.id, index)).status, 401);
  });

  it('never relays a request that is already relayed (404 on a replica without the files), and the maker serves one uncounted', async () => {
    assert.ok(a && b);
    const index = delta.layers.indexOf(layer);
    const relayed = await download(b.url, fleet.device.key, delta.id, index, { 'x-skiff-relayed': '1' });
    assert.equal(relayed.status, 404, relayed.body.toString());
    assert.match(relayed.body.toString(), /on this server/);
    const direct = await download(a.url, fleet.device.key, delta.id, index, { 'x-skiff-relayed': '1' });
    assert.equal(direct.status, 200);
    assert.equal(sha(direct.body), layer.sha256);
    // Still done, still A's: B neither queued it for itself nor made it.
    assert.equal((await askDelta(b.url, fleet.device.key, refs.b.v1, refs.b.v2)).status, 200);
    assert.doesNotMatch(b.output(), /\[delta\] making/);
    assert.deepEqual(downloadLines(a, fleet.device.uuid), []);
  });

  it('makes the delta itself once the maker is gone: the download answers 503 + Retry-After, the ask 504, then ready and served from its own files', async () => {
    assert.ok(a && b);
    const index = delta.layers.indexOf(layer);
    await a.kill('SIGTERM');
    const unavailable = await download(b.url, fleet.device.key, delta.id, index);
    assert.equal(unavailable.status, 503, unavailable.body.toString());
    assert.match(unavailable.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
    const pending = await askDelta(b.url, fleet.device.key, refs.b.v1, refs.b.v2);
    assert.equal(pending.status, 504, JSON.stringify(pending.body));
    assert.match(pending.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
    const answer = await untilAnswered(b.url, fleet.device.key, refs.b.v1, refs.b.v2, 120_000);
    assert.equal(answer.status, 'ready', JSON.stringify(answer));
    const remade = (answer as { delta: DeltaDescriptor }).delta;
    assert.equal(remade.id, delta.id);
    assert.match(b.output(), new RegExp(`\\[delta\\] making ${delta.id}`));
    assert.ok(existsSync(path.join(b.dataDir, 'deltas', delta.id)), 'B has the files now');
    const remadeLayer = remade.layers[index];
    assert.ok(remadeLayer?.source === 'delta');
    const file = await download(b.url, fleet.device.key, delta.id, index);
    assert.equal(file.status, 200);
    assert.equal(sha(file.body), remadeLayer.sha256);
    assert.equal(sha(applyDelta(file.body, bases)), layer.diffId);
  });
});
