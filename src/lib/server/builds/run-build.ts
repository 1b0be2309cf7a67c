/**
 * One cloud build, from the uploaded tar to a release: extract, build every service with the same
 * code as `skiff build` on the fleet's architecture's builder engine, create the release, push each
 * image through that engine to the server's registry, and complete the release. The release
 * becoming `success` is the point of no return: a cancel before it leaves no release (a release
 * already created is marked failed), a cancel after it changes nothing.
 */
import { createReadStream, existsSync, realpathSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { CreateReleaseRequest, Release } from '../../api/resources.js';
import type { BuildEvent } from '../../builder/release.js';
import { SkiffError } from '../../errors/errors.js';
import type { EngineFlags } from '../../docker/engine.js';
import type { ProjectSpec } from '../../project/types.js';
import type { BuildRow, FleetRow } from '../db/schema.js';
import type { Principal } from '../permissions.js';
import { hashKey, newKey } from '../crypto.js';
import type { ServiceContext } from '../services/context.js';
import type { BuildEventLog } from './event-log.js';
import type { BuildOptions } from './store.js';

type User = Extract<Principal, { kind: 'user' }>;

/** `<data dir>/builds/<uuid>`: the upload (`context.tar`) and, while it builds, the project (`src`). */
export function buildDir(ctx: ServiceContext, uuid: string): string {
  return path.join(ctx.options.dataDir, 'builds', uuid);
}

export function contextTar(ctx: ServiceContext, uuid: string): string {
  return path.join(buildDir(ctx, uuid), 'context.tar');
}

/**
 * The labels on every image a build makes, to find a fleet's images later: the fleet's uuid only.
 * Not the build's own uuid: a label that changes at every push gives every service a new image,
 * so a new digest, and every device would pull and restart every service, changed or not.
 */
export function buildLabels(fleetUuid: string): Record<string, string> {
  return { 'io.skiff.fleet': fleetUuid };
}

/** Images of a fleet's builds are named `skiff-build-<fleet uuid>_<service>:latest`: the engine's layer cache then serves the next push. */
export function buildProjectName(fleetUuid: string): string {
  return `skiff-build-${fleetUuid}`;
}

/**
 * `--builder-engine` URL (or none: the local engine) as the flags the engine code takes.
 *
 * @throws SkiffError('usage') for a scheme the engine client cannot use (ssh, https without certificates)
 */
export function engineFlagsOf(url: string | undefined): EngineFlags {
  if (url === undefined) return { docker: '/var/run/docker.sock' };
  const parsed = new URL(url);
  if (parsed.protocol === 'unix:') return { docker: parsed.pathname };
  if (parsed.protocol === 'tcp:' || parsed.protocol === 'http:') return { dockerHost: parsed.hostname, dockerPort: Number(parsed.port || 2375) };
  throw new SkiffError('usage', `builder engine ${url}: only unix:// and tcp:// engines can be used for now`);
}

export interface BuildJob {
  row: BuildRow;
  fleet: FleetRow;
  user: User;
  /** Aborted on cancel or when the server stops. */
  signal: AbortSignal;
  log: BuildEventLog;
  /** Re-reads the cancel flag (a cancel on another replica may not have reached this one's bus). */
  cancelRequested(): Promise<boolean>;
}

export interface BuildSuccess {
  release: Release;
  releaseId: number;
}

/**
 * Runs the build; resolves with the release, or throws (a SkiffError for what the user can fix;
 * 'interrupted' when aborted or cancelled before the point of no return).
 */
export async function runBuild(ctx: ServiceContext, job: BuildJob): Promise<BuildSuccess> {
  const { row, fleet, log, signal } = job;
  const options = JSON.parse(row.options) as BuildOptions;
  const dir = buildDir(ctx, row.uuid);
  const src = path.join(dir, 'src');
  // The live view's snapshots are the client's business: the stored log has the same as lines.
  const emit = (event: BuildEvent): void => {
    if (event.kind !== 'progress') log.push(event);
  };
  try {
    await extractContext(contextTar(ctx, row.uuid), src);
    const [{ loadProject }, { resolveTarget }, { connectEngine }, { buildRelease }] = await Promise.all([
      import('../../project/project.js'), import('../../device-types/device-types.js'), import('../../docker/engine.js'), import('../../builder/release.js'),
    ]);
    // The server's own environment is nobody's compose variables: only the project's .env applies.
    const project = await loadProject(src, { projectName: buildProjectName(fleet.uuid), noParentCheck: true, environment: {} });
    refuseOutsidePaths(project);
    const target = resolveTarget({ deviceType: fleet.device_type });
    const engineUrl = ctx.options.builderEngines[target.arch];
    const engine = await connectEngine(engineFlagsOf(engineUrl), {});
    log.push({ kind: 'started', engine: engine.address });
    throwIfAborted(signal);
    const previous = await currentImages(engine.docker, project);
    const manifest = await buildRelease({
      project, target, engine,
      nocache: options.nocache, pull: options.pull,
      // Builds stored before -G existed have no such option: false, as they were built.
      multiDockerignore: options.multiDockerignore === true,
      // Builds stored before the builder option existed build as today's auto does.
      builder: options.builder ?? 'auto',
      // The server's own environment is not the project's (no DOCKER_BUILDKIT from it).
      environment: {},
      // Registering qemu's handlers touches this machine's kernel: only for an engine on it.
      emulated: engine.local,
      labels: buildLabels(fleet.uuid),
      appName: fleet.name,
      signal,
      onEvent: emit,
    });
    // The previous push's images lost their tag to this build's: drop them (shared layers stay).
    for (const service of manifest.services) {
      const old = previous.get(service.image);
      if (old && old !== service.imageId) await engine.docker.getImage(old).remove().catch(() => undefined);
    }
    await throwIfCancelled(job);

    const { createRelease, updateRelease } = await import('../services/releases.js');
    const request: CreateReleaseRequest = {
      composition: compositionOf(project),
      ...(options.draft ? { draft: true } : {}),
      ...(options.semver !== null ? { semver: options.semver } : {}),
      ...(options.notes !== null ? { notes: options.notes } : {}),
      ...(Object.keys(options.tags).length > 0 ? { tags: options.tags } : {}),
      ...(row.git_commit !== null ? { gitCommit: row.git_commit } : {}),
    };
    const created = await createRelease(ctx, job.user, fleet.name, request, row.uuid);
    const commit = created.release.commit;
    log.push({ kind: 'info', message: `Release ${commit} created for fleet ${fleet.name}; pushing ${manifest.services.length} image(s)` });
    let success: Release | undefined;
    try {
      const digests = await pushAll(ctx, job, engine, created.repositories, manifest.services.map((s) => ({ service: s.service, image: s.image })), commit);
      await throwIfCancelled(job);
      // The point of no return: from here on the release stands.
      success = await updateRelease(ctx, job.user, commit, { status: 'success', images: digests, ...(options.draft ? {} : { isFinal: true }) });
      return { release: success, releaseId: success.id };
    } finally {
      if (!success) await updateRelease(ctx, job.user, commit, { status: 'failed' }).catch(() => undefined);
    }
  } finally {
    await rm(src, { recursive: true, force: true });
  }
}

/** Extracts the upload into `dest` (emptied first). tar-fs refuses links that lead outside it; nothing is chowned to the tar's ids. */
async function extractContext(tarFile: string, dest: string): Promise<void> {
  if (!existsSync(tarFile)) throw new SkiffError('error', 'the uploaded project is gone from the server (its data folder was cleaned?); push again');
  await rm(dest, { recursive: true, force: true });
  await mkdir(dest, { recursive: true });
  const tar = await import('tar-fs');
  const allowed = new Set(['file', 'directory', 'symlink', 'link', 'contiguous-file']);
  try {
    // `chown` is tar-fs's (as root it would give files the tar's uids); its types leave it out.
    const options: import('tar-fs').ExtractOptions & { chown: boolean } = {
      chown: false,
      ignore: (_name, header) => header !== undefined && !allowed.has(header.type ?? 'file'),
    };
    await pipeline(createReadStream(tarFile), tar.extract(dest, options));
  } catch (err) {
    throw new SkiffError('project', `the uploaded project is not a valid tar: ${(err as Error).message}`, { hint: 'push the project folder with skiff push' });
  }
}

/** A build context or Dockerfile outside the uploaded folder would read the server's own files. */
function refuseOutsidePaths(project: ProjectSpec): void {
  const root = realpathSync(project.dir);
  const inside = (p: string): boolean => {
    const real = existsSync(p) ? realpathSync(p) : path.resolve(p);
    const rel = path.relative(root, real);
    return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
  };
  for (const service of project.services) {
    if (!service.build) continue;
    if (!inside(service.build.context)) {
      throw new SkiffError('project', `service '${service.name}': the build context '${service.build.contextRel}' is outside the project; a cloud build has only the pushed folder`, { hint: 'move the service into the project folder' });
    }
    if (service.build.dockerfile !== undefined && !inside(path.resolve(service.build.context, service.build.dockerfile))) {
      throw new SkiffError('project', `service '${service.name}': the Dockerfile '${service.build.dockerfile}' is outside the project`);
    }
  }
}

/** The release body: each service's compose settings as the device runs them. */
function compositionOf(project: ProjectSpec): CreateReleaseRequest['composition'] {
  return {
    services: Object.fromEntries(project.services.map((s) => [s.name, { ...s.config } as Record<string, unknown>])),
    ...(Object.keys(project.volumes).length > 0 ? { volumes: project.volumes } : {}),
    ...(Object.keys(project.networks).length > 0 ? { networks: project.networks } : {}),
  };
}

/** Image ids the project's tags name now (before this build moves them). */
async function currentImages(docker: import('../../docker/engine.js').Engine['docker'], project: ProjectSpec): Promise<Map<string, string>> {
  const { imageName } = await import('../../builder/release.js');
  const out = new Map<string, string>();
  for (const s of project.services) {
    if (!s.build) continue;
    const name = imageName(project.name, s.name);
    const id = await docker.getImage(name).inspect().then((i) => i.Id, () => undefined);
    if (id) out.set(name, id);
  }
  return out;
}

/**
 * Pushes each image under `<registry>/<fleet uuid>/<service>:<commit>` with a session minted for the
 * build's user for as long as the push takes (the engine does the registry's token dance with it).
 */
async function pushAll(
  ctx: ServiceContext, job: BuildJob, engine: import('../../docker/engine.js').Engine,
  repositories: Record<string, string>, images: Array<{ service: string; image: string }>, commit: string,
): Promise<Record<string, string>> {
  const { pushEach, pushImage, registryReference } = await import('../../cloud/deploy.js');
  const token = newKey('session');
  const now = ctx.clock();
  const session = await ctx.db.insertInto('sessions').values({
    user_id: job.user.userId, token_hash: hashKey(token), created_at: now.toISOString(),
    // Long enough for a large push; deleted as soon as it ends.
    expires_at: new Date(now.getTime() + 2 * 3_600_000).toISOString(),
  }).returning('id').executeTakeFirstOrThrow();
  const tagged: string[] = [];
  try {
    const digests: Record<string, string> = {};
    // Every service at once (see pushEach): the registry and the engine overlap their round trips.
    const pushed = await pushEach(images, job.signal, async ({ service, image }, signal) => {
      const repository = repositories[service];
      if (!repository) throw new SkiffError('error', `the release has no repository for service '${service}'`);
      const target = registryReference(ctx.options.publicUrl, repository);
      const name = `${target.host}/${target.repository}`;
      await engine.docker.getImage(image).tag({ repo: name, tag: commit });
      tagged.push(`${name}:${commit}`);
      job.log.push({ kind: 'push-start', service, image: `${name}:${commit}` });
      // The engine reports progress many times a second per layer: a few stored events a second are plenty.
      let said = 0;
      const digest = await pushImage(engine, `${name}:${commit}`, target.host, token, service, (e) => {
        if (e.kind !== 'push-progress' || (Date.now() - said < 250 && e.bytes < e.total)) return;
        said = Date.now();
        job.log.push(e);
      }, signal);
      job.log.push({ kind: 'push-done', service, digest });
      return { service, digest };
    });
    for (const p of pushed) digests[p.service] = p.digest;
    return digests;
  } finally {
    await ctx.db.deleteFrom('sessions').where('id', '=', session.id).execute().catch(() => undefined);
    // The registry tags were only the engine's way to push.
    for (const t of tagged) await engine.docker.getImage(t).remove({ noprune: true }).catch(() => undefined);
  }
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw new SkiffError('interrupted', 'build cancelled');
}

async function throwIfCancelled(job: BuildJob): Promise<void> {
  throwIfAborted(job.signal);
  if (await job.cancelRequested()) throw new SkiffError('interrupted', 'build cancelled');
}
