/**
 * Test support for the server side of deltas: images pushed through a server's own registry,
 * fleets with a registered device, releases made `success`, and the device's delta requests
 * (ask, wait out the 504s, download a layer file, decode it with `xdelta3 -d`).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { DeltaAnswer, DeltaPending } from '../../src/lib/api/deltas.js';
import type { Release } from '../../src/lib/api/resources.js';
import { api } from './server.js';
import { scratchDir } from './tmp.js';
import { waitFor } from './wait.js';

export const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A tar (uncompressed) of these files, deterministic (fixed times and owners). */
export async function tarOf(files: Record<string, Buffer>): Promise<Buffer> {
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

/** An image pushed by {@link pushImage}: its manifest digest, config digest and layer tars (uncompressed). */
export interface PushedImage {
  digest: string;
  configDigest: string;
  layers: Buffer[];
}

/** Pushes an image of these layer tars (gzipped) to `repository` through the server's `/v2/` with the user's token. */
export async function pushImage(base: string, token: string, repository: string, layers: Buffer[]): Promise<PushedImage> {
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

/** A fleet and one device registered in it (its uuid and key). */
export interface Fleet { name: string; uuid: string; device: { uuid: string; key: string } }

/** Makes a fleet and registers one device in it with a provisioning key. */
export async function fleetWithDevice(base: string, token: string): Promise<Fleet> {
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
export async function release(base: string, token: string, fleet: Fleet, image: PushedImage): Promise<Release> {
  const made = await api(base, 'POST', `/fleets/${fleet.name}/releases`, { token, body: { composition: { services: { app: {} } } } });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const commit = (made.body as { release: Release }).release.commit;
  const done = await api(base, 'PATCH', `/releases/${commit}`, { token, body: { status: 'success', images: { app: image.digest } } });
  assert.equal(done.status, 200, JSON.stringify(done.body));
  return done.body as Release;
}

/** `GET /api/v3/delta` with the device's key. */
export function askDelta(base: string, key: string, src: string, dest: string): ReturnType<typeof api> {
  return api(base, 'GET', `/api/v3/delta?src=${encodeURIComponent(src)}&dest=${encodeURIComponent(dest)}`, { token: key });
}

/** Asks until the answer is not pending (each 504 must carry Retry-After); answers the 200 body. */
export async function untilAnswered(base: string, key: string, src: string, dest: string, timeoutMs = 60_000): Promise<DeltaAnswer> {
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

/** `GET /api/v3/delta/:id/layers/:index` with the device's key. */
export async function download(base: string, key: string, id: string, index: number, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; headers: Headers }> {
  const res = await fetch(`${base}/api/v3/delta/${id}/layers/${index}`, { headers: { authorization: `Bearer ${key}`, ...headers } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), headers: res.headers };
}

/** Decodes a downloaded delta layer file on the source layers (as the device does), with xdelta3 -d. */
export function applyDelta(file: Buffer, bases: Buffer[]): Buffer {
  const dir = scratchDir('skiff-delta-apply-');
  writeFileSync(path.join(dir, 'source'), Buffer.concat(bases));
  writeFileSync(path.join(dir, 'patch.vcdiff'), zlib.brotliDecompressSync(file));
  return execFileSync('xdelta3', ['-d', '-c', '-s', path.join(dir, 'source'), path.join(dir, 'patch.vcdiff')], { maxBuffer: 256 * 1024 * 1024 });
}

/** v1/v2/v3 of an image: an unchanged base layer, an app layer of `size` random bytes changed a little in each version, and (v2, v3) a new unrelated layer. */
export async function versions(size: number): Promise<{ base: Buffer; v1: Buffer[]; v2: Buffer[]; v3: Buffer[] }> {
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
