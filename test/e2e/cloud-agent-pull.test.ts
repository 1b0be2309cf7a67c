/**
 * The cloud agent's image path against real parts: a real registry (CNCF distribution, Debian's
 * docker-registry, on loopback) and this machine's engine pulling through the agent's loopback
 * pull proxy, then tagging with the stable local name. (The server's token endpoint is exercised by
 * cloud-agent.test.ts with the real server; this registry runs without auth, so no token is asked.)
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { createCloudClient } from '../../src/lib/agent/cloud/client.js';
import { ensureImages } from '../../src/lib/agent/cloud/images.js';
import { startPullProxy, type PullProxy } from '../../src/lib/agent/cloud/pull-proxy.js';
import { convertTargetV3 } from '../../src/lib/agent/cloud/target.js';
import { connectLiteEngine, type EngineClient } from '../../src/lib/docker/engine-lite.js';
import { freePort } from '../support/agent.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, TEST_LABEL } from '../support/engine.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';

const LABEL_VALUE = 'cloud-agent-pull';
const FLEET = 'f1eef1eef1eef1eef1eef1eef1eef1ee';
const UUID = 'abcdef0123456789abcdef0123456789';

/** Builds a tiny image from the busybox base with one file of its own, pushes it, and returns its digest. */
async function buildAndPush(registry: string, service: string, content: string): Promise<string> {
  const dir = scratchDir('skiff-cloud-img-');
  writeFileSync(path.join(dir, 'file.txt'), content);
  writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE_AMD64}\nCOPY file.txt /file.txt\nCMD ["sleep", "1000"]\n`);
  const tar = await import('tar-fs');
  const tag = `${registry}/${FLEET}/${service}:t`;
  const build = await docker.buildImage(tar.pack(dir) as unknown as NodeJS.ReadableStream, { t: tag, labels: { [TEST_LABEL]: LABEL_VALUE } });
  await new Promise<void>((resolve, reject) => docker.modem.followProgress(build, (err: Error | null) => (err ? reject(err) : resolve())));
  const out = execFileSync('/usr/bin/docker', ['push', tag], { encoding: 'utf8' });
  const digest = /digest: (sha256:[0-9a-f]{64})/.exec(out)?.[1];
  assert.ok(digest, `the push gave a digest: ${out}`);
  await docker.getImage(tag).remove({ force: true }); // the device must pull it
  return digest;
}

describe('agent cloud: pulling through the loopback proxy (real registry, real engine)', function () {
  let registry: ChildProcess | undefined;
  let registryHost = '';
  let proxy: PullProxy | undefined;
  let engine: EngineClient;

  before(async () => {
    await ensureBaseImages();
    const port = await freePort();
    registryHost = `127.0.0.1:${port}`;
    const dir = scratchDir('skiff-registry-');
    writeFileSync(path.join(dir, 'config.yml'), `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: ${registryHost}\n`);
    registry = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: 'ignore' });
    await waitFor(() => fetch(`http://${registryHost}/v2/`).then((r) => r.ok).catch(() => false), 'the registry to answer', 15_000);
    engine = (await connectLiteEngine({})).docker;
  });

  after(async () => {
    await proxy?.close();
    registry?.kill();
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('pulls a target\'s images by digest through the proxy, tags them with their stable names, and reports progress', async () => {
    const digestA = await buildAndPush(registryHost, 'web', `a ${Date.now()}`);
    const digestB = await buildAndPush(registryHost, 'worker', `b ${Date.now()}`);
    const body = {
      [UUID]: {
        name: 'd', config: {}, apps: {
          [FLEET]: { id: 1, name: 'f', class: 'fleet', releases: { c1: { id: 1, volumes: {}, networks: {}, services: {
            web: { id: 1, image_id: 1, image: `${registryHost}/${FLEET}/web@${digestA}`, environment: {}, labels: {}, composition: {} },
            worker: { id: 2, image_id: 2, image: `${registryHost}/${FLEET}/worker@${digestB}`, environment: {}, labels: {}, composition: {} },
          } } } },
        },
      },
    };
    const target = convertTargetV3(body, UUID, 'd');
    proxy = await startPullProxy(`http://${registryHost}`, createCloudClient(`http://${registryHost}`, UUID, 'k'.repeat(32)), (line) => assert.fail(line));
    const progress: Record<string, number[]> = {};
    await ensureImages(engine, target.images, { serverHosts: [registryHost], proxyHost: proxy.host, onProgress: (img, p) => (progress[img.repository] ??= []).push(p) });
    for (const image of target.images) {
      const inspect = await engine.getImage(image.local).inspect();
      assert.ok(inspect.RepoTags.includes(image.local), `${image.local} is tagged`);
      assert.equal(progress[image.repository]?.at(-1), 100);
      assert.equal(progress[image.repository]?.[0], 0);
    }
    // A second time: already there, nothing pulled.
    await ensureImages(engine, target.images, { serverHosts: [registryHost], proxyHost: undefined });
  });

  it('the proxy only pulls: a push is refused', async () => {
    proxy ??= await startPullProxy(`http://${registryHost}`, createCloudClient(`http://${registryHost}`, UUID, 'k'.repeat(32)), () => {});
    const res = await fetch(`http://${proxy.host}/v2/${FLEET}/web/blobs/uploads/`, { method: 'POST' });
    assert.equal(res.status, 405);
    const ping = await fetch(`http://${proxy.host}/v2/`);
    assert.equal(ping.status, 200);
  });
});
