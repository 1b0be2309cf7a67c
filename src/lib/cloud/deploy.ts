/**
 * `skiff deploy`: a project built on this machine's engine becomes a release of a fleet.
 *
 * Order matters for what devices can see. The build comes first, so a project that does not
 * build creates no release. The release is then created `running` (seen by no device), each
 * service's image is pushed to the server's registry through the local engine, and only the last
 * call (`PATCH /releases/:commit` with every digest, status success) makes it a release devices
 * may run. Any failure or Ctrl-C after the release exists marks it failed, so nothing is left
 * half-made and visible.
 */
import type { Readable } from 'node:stream';
import { SkiffError } from '../errors/errors.js';
import type { CreateReleaseRequest, Release } from '../api/resources.js';
import type { BuildEvent, ReleaseManifest } from '../builder/release.js';
import type { ResolvedBuild } from '../builder/build-project.js';
import type { BuilderRequest } from '../builder/builder-choice.js';
import type { SecretFlag } from '../builder/secrets.js';
import type { Engine, EngineFlags } from '../docker/engine.js';
import type { CloudClient } from './client.js';

export interface DeployOptions {
  client: CloudClient;
  fleet: string;
  /** Project folder. */
  source: string;
  /** Build even when `skiff build` images are on the engine already (balena's --build). */
  build?: boolean;
  /** Leave the release a draft: successful, but not what devices track until `release finalize`. */
  draft?: boolean;
  /** Release tags (`--release-tag K V`). */
  tags?: Record<string, string>;
  notes?: string;
  semver?: string;
  engine: EngineFlags;
  projectName?: string;
  noParentCheck?: boolean;
  multiDockerignore?: boolean;
  nocache?: boolean;
  buildArgs?: Record<string, string>;
  /** `--buildkit` / `--no-buildkit` for `--build`; absent: auto. */
  builder?: BuilderRequest;
  /** `--secret` flags for `--build`. */
  secrets?: SecretFlag[];
  /** Labels put on every image built (tests clean up by them). */
  labels?: Record<string, string>;
  signal?: AbortSignal;
  onEvent?: (event: DeployEvent) => void;
}

/** What the UI is told: the build's own events, then the release and the push. */
export type DeployEvent =
  | BuildEvent
  | { kind: 'deploy'; message: string }
  | { kind: 'push-start'; service: string; image: string }
  /** Bytes of the service's layers sent so far and in all (both summed over its layers; total grows as the engine learns layer sizes). */
  | { kind: 'push-progress'; service: string; bytes: number; total: number }
  | { kind: 'push-done'; service: string; digest: string };

export interface DeployResult {
  release: Release;
  /** True when this deploy built the images; false when it used the ones `skiff build` left. */
  built: boolean;
  /** Service → the pushed reference, `<registry>/<repository>@sha256:…`. */
  images: Record<string, string>;
}

/**
 * Where a service's image goes: the server's answer names the repository, with the registry host
 * (`127.0.0.1:48080/<fleet uuid>/main`) or without it (then it is the server's own host and port).
 */
export function registryReference(serverUrl: string, repository: string): { host: string; repository: string } {
  const first = repository.split('/')[0] ?? '';
  if (repository.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    return { host: first, repository: repository.slice(first.length + 1) };
  }
  return { host: new URL(serverUrl).host, repository };
}

/** The release body: each service's compose settings as the device runs them (no `build`). */
export function compositionOf(resolved: Pick<ResolvedBuild, 'services' | 'volumes' | 'networks'>): CreateReleaseRequest['composition'] {
  const services: Record<string, Record<string, unknown>> = {};
  for (const s of resolved.services) services[s.name] = { ...s.config } as Record<string, unknown>;
  return {
    services,
    ...(Object.keys(resolved.volumes).length > 0 ? { volumes: resolved.volumes } : {}),
    ...(Object.keys(resolved.networks).length > 0 ? { networks: resolved.networks } : {}),
  };
}

/**
 * Builds (or reuses), creates the release, pushes, and ends it.
 *
 * @throws SkiffError: notLoggedIn / notFound (the fleet) / serverUnreachable before anything is
 *   built; project or buildFailed from the build (no release made); releaseFailed when a push
 *   fails (the release is marked failed); interrupted on Ctrl-C (the release is marked failed)
 */
export async function deploy(options: DeployOptions): Promise<DeployResult> {
  const emit = options.onEvent ?? (() => {});
  const { client } = options;
  // The fleet first: a wrong name or a bad login fails before minutes of building.
  const fleet = await client.fleet(options.fleet);
  const [{ resolveBuild, buildProject }, { connectEngine }] = await Promise.all([import('../builder/build-project.js'), import('../docker/engine.js')]);
  const reading = {
    source: options.source,
    deviceType: fleet.deviceType,
    projectName: options.projectName,
    noParentCheck: options.noParentCheck,
    multiDockerignore: options.multiDockerignore,
    buildArgs: options.buildArgs,
  };
  const resolved = await resolveBuild(reading);
  const engine = await connectEngine(options.engine);
  let images = options.build ? undefined : await builtImages(engine, resolved);
  const built = images === undefined;
  if (images) {
    emit({ kind: 'deploy', message: `Using the images skiff build made: ${Object.values(images).join(', ')} (--build builds again)` });
  } else {
    const manifest: ReleaseManifest = await buildProject({
      ...reading, engine: options.engine, nocache: options.nocache, labels: options.labels, signal: options.signal, onEvent: options.onEvent,
      ...(options.builder ? { builder: options.builder } : {}),
      ...(options.secrets ? { secrets: options.secrets } : {}),
    });
    images = Object.fromEntries(manifest.services.map((s) => [s.service, s.image]));
  }
  throwIfAborted(options.signal);

  // The release names the commit it was built from; a tree with uncommitted changes is said, not refused.
  const { projectGitInfo } = await import('../project/git-info.js');
  const git = await projectGitInfo(options.source);
  if (git?.dirty) emit({ kind: 'warning', message: `the project has changes not committed to git: the release is stamped with commit ${git.commit.slice(0, 7)}, which does not hold them` });
  const created = await client.createRelease(fleet.name, {
    ...(git ? { gitCommit: git.commit } : {}),
    composition: compositionOf(resolved),
    ...(options.draft ? { draft: true } : {}),
    ...(options.semver ? { semver: options.semver } : {}),
    ...(options.notes ? { notes: options.notes } : {}),
    ...(options.tags && Object.keys(options.tags).length > 0 ? { tags: options.tags } : {}),
  });
  const commit = created.release.commit;
  emit({ kind: 'deploy', message: `Release ${commit} created for fleet ${fleet.name}; pushing ${Object.keys(images).length} image(s)` });
  const token = client.token;
  if (!token) throw new SkiffError('notLoggedIn', 'not logged in', { hint: 'run skiff login' });
  const tagged: string[] = [];
  try {
    const digests: Record<string, string> = {};
    const refs: Record<string, string> = {};
    // Every service's image at once: the engine and the registry overlap one push's round trips
    // (a HEAD per layer, the token, the manifest) with another's; the release still waits for all.
    const pushed = await pushEach(Object.entries(images), options.signal, async ([service, local], signal) => {
      const repository = created.repositories[service];
      if (!repository) throw new SkiffError('error', `the server named no repository for service '${service}'`);
      const target = registryReference(client.url, repository);
      const name = `${target.host}/${target.repository}`;
      await engine.docker.getImage(local).tag({ repo: name, tag: commit });
      tagged.push(`${name}:${commit}`);
      emit({ kind: 'push-start', service, image: `${name}:${commit}` });
      const digest = await pushImage(engine, `${name}:${commit}`, target.host, token, service, emit, signal);
      emit({ kind: 'push-done', service, digest });
      return { service, digest, ref: `${name}@${digest}` };
    });
    for (const p of pushed) {
      digests[p.service] = p.digest;
      refs[p.service] = p.ref;
    }
    throwIfAborted(options.signal);
    const release = await client.updateRelease(commit, { status: 'success', images: digests, ...(options.draft ? {} : { isFinal: true }) });
    return { release, built, images: refs };
  } catch (err) {
    // Ctrl-C aborted the client's signal: mark the release failed with a client that is not aborted.
    const unmarked = await client.detached().updateRelease(commit, { status: 'failed' }).then(() => undefined, (e: unknown) => e);
    if (options.signal?.aborted) throw new SkiffError('interrupted', `deploy interrupted; release ${commit} was marked failed and no device will run it`);
    // The engine words a server that died mid-push as "the registry refused": when the server
    // cannot even be told the release failed, that, not the push, is the error (exit 13).
    if (unmarked instanceof SkiffError && unmarked.code === 'serverUnreachable') {
      throw new SkiffError('serverUnreachable', `the server at ${client.url} stopped answering during the deploy; release ${commit} stays unfinished (status running) and no device will run it`, { hint: 'check that skiff server runs there, then deploy again', cause: err });
    }
    if (err instanceof SkiffError) throw err;
    throw new SkiffError('releaseFailed', `pushing release ${commit} failed: ${(err as Error).message}; the release was marked failed`, { cause: err });
  } finally {
    // The registry tags were only the engine's way to push: the user's images keep their own names.
    for (const t of tagged) await engine.docker.getImage(t).remove({ noprune: true }).catch(() => {});
  }
}

function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new SkiffError('interrupted', 'deploy interrupted before the release was created; nothing was sent');
}

/**
 * The images `skiff build` left for this project (`<project>_<service>:latest`), when every one
 * exists for the fleet's architecture; undefined means build.
 */
async function builtImages(engine: Engine, resolved: ResolvedBuild): Promise<Record<string, string> | undefined> {
  const arch = resolved.platform.split('/')[1];
  const out: Record<string, string> = {};
  for (const s of resolved.services) {
    if (!s.image) return undefined;
    const info = await engine.docker.getImage(s.image).inspect().catch(() => undefined);
    if (!info || (s.source === 'build' && arch && info.Architecture !== arch)) return undefined;
    out[s.name] = s.image;
  }
  return out;
}

/**
 * Runs `task` for every item at once (the services' pushes). When one fails the others are
 * aborted through the signal they are given, and the first failure is thrown only after every task
 * has ended, so no push still runs when the caller removes its tags or marks the release failed.
 * Results are in the items' order.
 *
 * @throws the first task's error; SkiffError('interrupted') when `signal` was aborted before a task failed on its own
 */
export async function pushEach<T, R>(items: readonly T[], signal: AbortSignal | undefined, task: (item: T, signal: AbortSignal) => Promise<R>): Promise<R[]> {
  const controller = new AbortController();
  const onAbort = (): void => controller.abort();
  if (signal?.aborted) controller.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  const failures: unknown[] = [];
  try {
    const settled = await Promise.allSettled(items.map(async (item) => {
      try {
        return await task(item, controller.signal);
      } catch (err) {
        // The first failure is the cause; the others' errors are only their abort.
        if (!controller.signal.aborted || failures.length === 0) failures.push(err);
        controller.abort();
        throw err;
      }
    }));
    if (failures.length > 0) throw failures[0];
    return settled.map((r) => (r as PromiseFulfilledResult<R>).value);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

interface PushMessage {
  status?: string;
  id?: string;
  error?: string;
  errorDetail?: { message?: string };
  progressDetail?: { current?: number; total?: number };
  aux?: { Tag?: string; Digest?: string; Size?: number };
}

/**
 * One image through the engine, with the user's token (a session token or API key: the registry's
 * token endpoint takes it as the basic-auth password); returns the manifest digest the registry
 * gave. Also the server's cloud builds' push (server/builds/run-build.ts).
 *
 * @throws SkiffError('releaseFailed') when the registry refuses or the engine names no digest
 */
export async function pushImage(engine: Engine, reference: string, host: string, token: string, service: string, emit: (e: DeployEvent) => void, signal?: AbortSignal): Promise<string> {
  const [name, tag] = [reference.slice(0, reference.lastIndexOf(':')), reference.slice(reference.lastIndexOf(':') + 1)];
  // Any user name goes with a token as the password (the server's registry token endpoint).
  const authconfig = { username: 'skiff', password: token, serveraddress: host };
  const stream = (await engine.docker.getImage(name).push({ tag, authconfig, ...(signal ? { abortSignal: signal } : {}) })) as Readable;
  const layers = new Map<string, { current: number; total: number }>();
  let digest: string | undefined;
  await new Promise<void>((resolve, reject) => {
    engine.docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve()), (m: PushMessage) => {
      if (m.error) {
        reject(new SkiffError('releaseFailed', `service '${service}': the registry refused the push: ${m.errorDetail?.message ?? m.error}`, { hint: 'check that you may push to this fleet and the server runs its registry' }));
        return;
      }
      if (m.aux?.Digest) digest = m.aux.Digest;
      if (m.id && m.progressDetail?.total) layers.set(m.id, { current: m.progressDetail.current ?? 0, total: m.progressDetail.total });
      else if (m.id && (m.status === 'Pushed' || m.status === 'Layer already exists')) {
        const l = layers.get(m.id);
        if (l) l.current = l.total;
      }
      let bytes = 0;
      let total = 0;
      for (const l of layers.values()) {
        bytes += l.current;
        total += l.total;
      }
      if (total > 0) emit({ kind: 'push-progress', service, bytes, total });
    });
  });
  if (!digest || !/^sha256:[0-9a-f]{64}$/.test(digest)) throw new SkiffError('releaseFailed', `service '${service}': the engine reported no digest for ${reference}`);
  return digest;
}


/**
 * balena's `--release-tag key1 value1 key2 "" …`: pairs of a key and a value (empty allowed).
 *
 * @throws SkiffError('usage') for an odd count or an empty key
 */
export function parseReleaseTags(values: string[] | undefined): Record<string, string> {
  const list = values ?? [];
  if (list.length % 2 !== 0) {
    throw new SkiffError('usage', `--release-tag takes pairs of a key and a value; '${list[list.length - 1] ?? ''}' has no value`, { hint: 'e.g. --release-tag version 1.2 qa "" (an empty value is fine)' });
  }
  const tags: Record<string, string> = {};
  for (let i = 0; i + 1 < list.length; i += 2) {
    const [key, value] = [list[i] ?? '', list[i + 1] ?? ''];
    if (key.trim() === '' || /\s/.test(key)) throw new SkiffError('usage', `--release-tag key '${key}' must be non-empty and have no spaces`);
    tags[key] = value;
  }
  return tags;
}
