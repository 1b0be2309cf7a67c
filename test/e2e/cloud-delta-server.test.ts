/**
 * Deltas as a user makes them: `skiff deploy` of a project twice (this machine's engine builds,
 * pushes to a real `skiff server`'s registry), the server makes the delta between the two
 * releases' images in the background, `skiff release info` shows it (and `--json` carries it),
 * and a device asking with its key gets a descriptor whose delta file decodes, on the engine's
 * own source layer, to exactly the new layer.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { DeltaAnswer, DeltaDescriptor } from '../../src/lib/api/deltas.js';
import type { Release } from '../../src/lib/api/resources.js';
import { runCli, type CliResult } from '../support/cli.js';
import { ADMIN, api, login, startServer, type StartedServer } from '../support/server.js';
import { BASE_AMD64, TEST_LABEL, cleanupImages, ensureBaseImages, makeProject } from '../support/engine.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';

const LABEL = `${TEST_LABEL}=cloud-delta-server`;
const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function json<T>(r: CliResult): T {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { result: T }).result;
}

describe('deltas between deployed releases (real server, engine and CLI)', function () {
  this.timeout(300_000);
  let server: StartedServer | undefined;
  let home = '';
  const cli = (args: string[]) => runCli(args, { env: { HOME: home, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined } });

  before(async () => {
    await ensureBaseImages();
    server = await startServer();
    home = scratchDir('skiff-home-');
  });
  after(async () => {
    await server?.kill('SIGTERM');
    await cleanupImages({ label: LABEL });
  });

  it('deploys v1 and v2, shows the delta in release info, and serves a device a delta that decodes to the new layer', async () => {
    assert.ok(server);
    const url = server.url;
    const pw = path.join(scratchDir('skiff-pw-'), 'pw');
    writeFileSync(pw, `${ADMIN.password}\n`);
    json(await cli(['login', url, '--email', ADMIN.email, '--password-file', pw, '--json']));
    const fleetName = `delta-${randomBytes(3).toString('hex')}`;
    json(await cli(['fleet', 'create', fleetName, '--type', 'intel-nuc', '--json']));

    const data = randomBytes(8 * 1024 * 1024);
    const dir = makeProject({
      'docker-compose.yml': 'services:\n  main:\n    build: .\n',
      Dockerfile: `FROM ${BASE_AMD64}\nLABEL ${LABEL}\nCOPY data.bin /app/data.bin\nCOPY main.sh /app/main.sh\nCMD ["sleep", "3600"]\n`,
      'main.sh': 'echo v1\n',
    }, `delta${randomBytes(3).toString('hex')}`);
    writeFileSync(path.join(dir, 'data.bin'), data);
    const v1 = json<Release>(await cli(['deploy', fleetName, '--source', dir, '--json']));
    const changed = Buffer.from(data);
    changed.write('a small change in a large file', 4 * 1024 * 1024);
    writeFileSync(path.join(dir, 'data.bin'), changed);
    writeFileSync(path.join(dir, 'main.sh'), 'echo v2\n');
    const v2 = json<Release>(await cli(['deploy', fleetName, '--source', dir, '--build', '--json']));
    assert.notEqual(v2.services[0]?.image, v1.services[0]?.image);
    assert.equal(v2.status, 'success');

    const delta = await waitFor(async () => {
      const info = json<Release>(await cli(['release', 'info', v2.commit, '--json']));
      const d = info.services[0]?.delta;
      return d && d.status !== 'queued' && d.status !== 'running' ? d : undefined;
    }, 'the release\'s delta to be made', 120_000, 250).catch((err: Error) => { throw new Error(`${err.message}\n${server?.output() ?? ''}`); });
    assert.equal(delta.status, 'done', JSON.stringify(delta));
    assert.equal(delta.from, v1.commit);
    assert.ok(delta.downloadBytes !== null && delta.pullBytes !== null && delta.downloadBytes * 50 < delta.pullBytes, JSON.stringify(delta));
    const shown = await cli(['release', 'info', v2.commit.slice(0, 7)]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /DELTA/);
    assert.match(shown.stdout, new RegExp(`from ${v1.commit.slice(0, 7)}: [0-9.]+ [KM]?B vs [0-9.]+ MB pull \\(\\d+×\\)`));
    const first = await cli(['release', 'info', v1.commit.slice(0, 7)]);
    assert.match(first.stdout, /main\s+\S+\s+\S+ \S+\s+-\s*$/m, 'the first release has no delta');

    // A device of the fleet asks for its pair with its own key.
    const token = await login(url, ADMIN.email, ADMIN.password);
    const pk = await api(url, 'POST', `/fleets/${fleetName}/provisioning-keys`, { token, body: {} });
    const device = { uuid: randomBytes(16).toString('hex'), key: randomBytes(24).toString('hex') };
    assert.equal((await api(url, 'POST', '/device/register', { token: (pk.body as { key: string }).key, body: { uuid: device.uuid, device_type: 'intel-nuc', api_key: device.key } })).status, 201);
    const src = v1.services[0]?.image ?? '';
    const dest = v2.services[0]?.image ?? '';
    const res = await api(url, 'GET', `/api/v3/delta?src=${encodeURIComponent(src)}&dest=${encodeURIComponent(dest)}`, { token: device.key });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const answer = res.body as DeltaAnswer;
    assert.equal(answer.status, 'ready');
    const d = (answer as { delta: DeltaDescriptor }).delta;
    const kinds = d.layers.map((l) => l.source);
    assert.equal(kinds[0], 'present', 'the base image\'s layer is already on the device');
    const index = d.layers.findIndex((l) => l.source === 'delta' && l.size > data.length);
    const layer = d.layers[index];
    assert.ok(layer?.source === 'delta', `no delta for the data layer: ${kinds.join(', ')}`);
    console.log(`      ${kinds.join(', ')}: ${d.downloadBytes} B vs a pull of ${d.pullBytes} B (${(d.pullBytes / Math.max(1, d.downloadBytes)).toFixed(0)}×)`);

    // The source layer as the registry holds it (the device reads it from its engine instead).
    const repository = src.slice(src.indexOf('/') + 1, src.indexOf('@'));
    const scope = `repository:${repository}:pull`;
    const tokenRes = await fetch(`${url}/auth/v1/token?service=${encodeURIComponent(new URL(url).host)}&scope=${encodeURIComponent(scope)}`, { headers: { authorization: `Basic ${Buffer.from(`d_${device.uuid}:${device.key}`).toString('base64')}` } });
    const auth = { authorization: `Bearer ${((await tokenRes.json()) as { token: string }).token}` };
    const manifest = await (await fetch(`${url}/v2/${repository}/manifests/${src.slice(src.indexOf('@') + 1)}`, { headers: { ...auth, accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' } })).json() as { config: { digest: string }; layers: Array<{ digest: string }> };
    const config = await (await fetch(`${url}/v2/${repository}/blobs/${manifest.config.digest}`, { headers: auth })).json() as { rootfs: { diff_ids: string[] } };
    const bases: Buffer[] = [];
    for (const base of layer.bases) {
      const i = config.rootfs.diff_ids.indexOf(base);
      const blob = Buffer.from(await (await fetch(`${url}/v2/${repository}/blobs/${manifest.layers[i]?.digest ?? ''}`, { headers: auth })).arrayBuffer());
      bases.push(zlib.gunzipSync(blob));
    }
    const file = Buffer.from(await (await fetch(`${url}/api/v3/delta/${d.id}/layers/${index}`, { headers: { authorization: `Bearer ${device.key}` } })).arrayBuffer());
    assert.equal(sha(file), layer.sha256);
    const work = scratchDir('skiff-delta-e2e-');
    writeFileSync(path.join(work, 'source'), Buffer.concat(bases));
    writeFileSync(path.join(work, 'patch'), zlib.brotliDecompressSync(file));
    const target = execFileSync('xdelta3', ['-d', '-c', '-s', path.join(work, 'source'), path.join(work, 'patch')], { maxBuffer: 64 * 1024 * 1024 });
    assert.equal(sha(target), layer.diffId);
    await waitFor(() => server?.output().includes(`[download] device ${device.uuid} delta ${file.length} /api/v3/delta/${d.id}/layers/${index}`), 'the delta download counted');
    await waitFor(() => server?.output().includes(`[download] device ${device.uuid} blob `), 'the blob downloads counted');
  });
});
