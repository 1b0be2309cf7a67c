/**
 * Test support for a real Docker engine: base images made locally (no registry here), a label on
 * everything a test creates, and clean-up by that label.
 */
import { existsSync, mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync, copyFileSync, symlinkSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import Docker from 'dockerode';
import { scratchDir } from './tmp.js';

export const TEST_LABEL = 'io.skiff.test';
export const CACHE = process.env.SKIFF_TEST_CACHE ?? '/var/cache/skiff-test';
export const BASE_AMD64 = 'skiff-test/busybox:amd64';
export const BASE_ARM64 = 'skiff-test/busybox:arm64';

export const docker = new Docker();

const APPLETS = ['sh', 'ls', 'cat', 'echo', 'sleep', 'httpd', 'uname', 'mkdir', 'test', '[', 'wc', 'printf', 'env', 'true', 'false', 'grep', 'rm', 'cp', 'touch', 'id', 'find', 'sort', 'chmod'];

async function buildBase(tag: string, busybox: string, platform: string): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-base-'));
  try {
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'bin'), { recursive: true });
    mkdirSync(path.join(root, 'tmp'));
    copyFileSync(busybox, path.join(root, 'bin', 'busybox'));
    for (const a of APPLETS) symlinkSync('busybox', path.join(root, 'bin', a));
    execFileSync('tar', ['-C', root, '-cf', path.join(dir, 'rootfs.tar'), '.']);
    writeFileSync(path.join(dir, 'Dockerfile'), 'FROM scratch\nADD rootfs.tar /\nENV PATH=/bin\nCMD ["sh"]\n');
    rmSync(root, { recursive: true });
    const tar = await import('tar-fs');
    const stream = await docker.buildImage(tar.pack(dir) as unknown as NodeJS.ReadableStream, { t: tag, platform, labels: { [TEST_LABEL]: 'base' } });
    await new Promise<void>((resolve, reject) =>
      docker.modem.followProgress(stream, (err: Error | null, out: Array<{ error?: string }>) => {
        const failed = out.find((o) => o.error);
        if (err || failed) reject(err ?? new Error(failed?.error));
        else resolve();
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function hasImage(tag: string): Promise<boolean> {
  try {
    await docker.getImage(tag).inspect();
    return true;
  } catch {
    return false;
  }
}

/** amd64 (and, when the arm64 busybox is cached by scripts/setup-host.sh, arm64) busybox images. */
export async function ensureBaseImages(): Promise<{ arm64: boolean }> {
  if (!(await hasImage(BASE_AMD64))) await buildBase(BASE_AMD64, '/bin/busybox', 'linux/amd64');
  const armBusybox = path.join(CACHE, 'arm64/bin/busybox');
  if (!(await hasImage(BASE_ARM64))) {
    if (!existsSync(armBusybox)) return { arm64: false };
    await buildBase(BASE_ARM64, armBusybox, 'linux/arm64');
  }
  return { arm64: true };
}

/** Runs a command in a fresh container of `image` and returns its output (the container is removed). */
export async function runInImage(image: string, cmd: string[], platform?: string): Promise<string> {
  const args = ['run', '--rm', '--label', `${TEST_LABEL}=run`, ...(platform ? ['--platform', platform] : []), image, ...cmd];
  return execFileSync('/usr/bin/docker', args, { encoding: 'utf8' });
}

/** Removes the images and containers a test labelled `io.skiff.test=<value>` (or with a project label). */
export async function cleanupImages(filter: { label: string }): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [filter.label] } });
  await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
  const images = await docker.listImages({ filters: { label: [filter.label] } });
  for (const img of images) {
    for (const t of img.RepoTags ?? []) await docker.getImage(t).remove({ force: true }).catch(() => {});
    await docker.getImage(img.Id).remove({ force: true }).catch(() => {});
  }
}

/** A temp project folder from a map of relative path → contents. */
export function makeProject(files: Record<string, string>, name?: string): string {
  const parent = scratchDir('skiff-proj-');
  const dir = name ? path.join(parent, name) : parent;
  mkdirSync(dir, { recursive: true });
  for (const [rel, text] of Object.entries(files)) {
    const file = path.join(dir, rel);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, text);
  }
  return dir;
}

export function readJson<T>(file: string): T {
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}

/**
 * Builds `context` (classic builder) as `repository:tag`, pushes it to the registry `repository`
 * names with `auth` (a skiff server's: the user's email and session token), and removes the local
 * copy, so a device can only get the image from the server. The manifest digest and the image ID.
 * @throws Error when the push fails or gives no digest
 */
export async function buildAndPush(context: string, repository: string, tag: string, auth: { username: string; password: string }): Promise<{ digest: string; imageId: string }> {
  const name = `${repository}:${tag}`;
  execFileSync('/usr/bin/docker', ['build', '-q', '-t', name, context], { env: { ...process.env, DOCKER_BUILDKIT: '0' } });
  const imageId = (await docker.getImage(name).inspect()).Id;
  const push = await docker.getImage(name).push({ tag, authconfig: { ...auth, serveraddress: repository.split('/')[0] ?? '' } });
  type Line = { aux?: { Digest?: string }; error?: string };
  const lines = await new Promise<Line[]>((resolve, reject) => docker.modem.followProgress(push, (err: Error | null, o: Line[]) => (err ? reject(err) : resolve(o))));
  const failed = lines.find((l) => l.error);
  if (failed) throw new Error(`push failed: ${failed.error}`);
  const digest = lines.find((l) => l.aux?.Digest)?.aux?.Digest;
  if (!digest) throw new Error(`the push of ${name} gave no digest`);
  await docker.getImage(name).remove({ force: true });
  return { digest, imageId };
}
