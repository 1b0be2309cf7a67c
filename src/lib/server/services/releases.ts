/**
 * Releases. A release starts `running` (no device sees it); it becomes `success` (and, when final,
 * the fleet's target) in ONE transaction, and only after the registry showed every service's image
 * by digest. A release left `running` by a deploy that died is never seen by a device.
 */
import type { CreatedRelease, CreateReleaseRequest, Release, UpdateReleaseRequest } from '../../api/resources.js';
import type { ReleaseRow } from '../db/schema.js';
import { newHexId } from '../crypto.js';
import { isUniqueViolation } from '../db/database.js';
import type { Principal } from '../permissions.js';
import { authorize, badInput, conflict, notFound, parseJson, isoNow, type ServiceContext } from './context.js';
import { fleetOf, touchFleet } from './fleets.js';
import { SkiffError } from '../../errors/errors.js';
import { queueReleaseDeltas, releaseDeltas } from './deltas.js';

type User = Extract<Principal, { kind: 'user' }>;

/** `<fleet uuid>/<service>`, lower case (the registry contract's repository names). */
export function repositoryOf(fleetUuid: string, service: string): string {
  return `${fleetUuid}/${service.toLowerCase()}`;
}

async function releaseJson(ctx: ServiceContext, row: ReleaseRow, fleetName: string): Promise<Release> {
  const images = await ctx.db.selectFrom('release_images').selectAll().where('release_id', '=', row.id).orderBy('service').execute();
  const tags = await ctx.db.selectFrom('tags').select(['key', 'value']).where('release_id', '=', row.id).execute();
  const composition = parseJson<Record<string, unknown>>(row.composition, {});
  const deltas = await releaseDeltas(ctx, row);
  return {
    id: row.id, commit: row.commit, fleet: fleetName, status: row.status, isFinal: row.is_final === 1, isInvalidated: row.is_invalidated === 1,
    semver: row.semver, notes: row.notes,
    services: images.map((i) => ({ name: i.service, image: i.digest === null ? null : `${ctx.options.registryHost}/${i.repository}@${i.digest}`, size: i.size, delta: deltas.get(i.service) ?? null })),
    composition, tags: Object.fromEntries(tags.map((t) => [t.key, t.value])), gitCommit: row.git_commit, build: row.build_uuid, createdAt: row.created_at,
  };
}

/** The caller's release by commit or a unique prefix of 7+ characters, with its fleet's name; 404 otherwise. */
export async function releaseOf(ctx: ServiceContext, caller: User, commit: string, action: 'read' | 'write' = 'read'): Promise<{ release: ReleaseRow; fleetName: string; fleetId: number }> {
  if (!/^[0-9a-zA-Z]{7,64}$/.test(commit)) throw notFound(`release ${commit}`);
  const rows = await ctx.db.selectFrom('releases').innerJoin('fleets', 'fleets.id', 'releases.fleet_id')
    .selectAll('releases').select(['fleets.owner_id', 'fleets.name as fleetName'])
    .where('fleets.owner_id', '=', caller.userId).where('releases.commit', 'like', `${commit}%`).limit(2).execute();
  const row = rows.find((r) => r.commit === commit) ?? (rows.length === 1 ? rows[0] : undefined);
  if (!row) throw rows.length > 1 ? badInput('commit', `'${commit}' matches more than one release: give more of the commit`) : notFound(`release ${commit}`);
  authorize(caller, action, { kind: 'release', ownerId: row.owner_id, fleetId: row.fleet_id }, `release ${commit}`);
  const { owner_id: _o, fleetName, ...release } = row;
  return { release, fleetName, fleetId: row.fleet_id };
}

export async function getRelease(ctx: ServiceContext, caller: User, commit: string): Promise<Release> {
  const { release, fleetName } = await releaseOf(ctx, caller, commit);
  return releaseJson(ctx, release, fleetName);
}

/** A fleet's releases, newest first. */
export async function listReleases(ctx: ServiceContext, caller: User, fleetName: string): Promise<Release[]> {
  const fleet = await fleetOf(ctx, caller, fleetName);
  const rows = await ctx.db.selectFrom('releases').selectAll().where('fleet_id', '=', fleet.id).orderBy('id', 'desc').execute();
  return Promise.all(rows.map((r) => releaseJson(ctx, r, fleet.name)));
}

/** Starts a release (status `running`): answers where each service's image goes. 409 for a commit that exists. */
export async function createRelease(ctx: ServiceContext, caller: User, fleetName: string, request: CreateReleaseRequest, buildUuid: string | null = null): Promise<CreatedRelease> {
  const fleet = await fleetOf(ctx, caller, fleetName, 'write');
  const commit = request.commit ?? newHexId();
  const services = Object.keys(request.composition.services);
  const lower = new Set(services.map((s) => s.toLowerCase()));
  if (lower.size !== services.length) throw badInput('composition.services', 'two services differ only in case: their repositories would be the same');
  try {
    const row = await ctx.db.transaction().execute(async (tx) => {
      const release = await tx.insertInto('releases').values({
        fleet_id: fleet.id, commit, status: 'running', is_final: request.draft ? 0 : 1, is_invalidated: 0,
        semver: request.semver ?? null, notes: request.notes ?? null, composition: JSON.stringify(request.composition), created_at: isoNow(ctx),
        git_commit: request.gitCommit ?? null, build_uuid: buildUuid,
      }).returningAll().executeTakeFirstOrThrow();
      await tx.insertInto('release_images').values(services.map((service) => ({ release_id: release.id, service, repository: repositoryOf(fleet.uuid, service), digest: null, size: null }))).execute();
      const tags = Object.entries(request.tags ?? {});
      if (tags.length > 0) await tx.insertInto('tags').values(tags.map(([key, value]) => ({ fleet_id: null, device_id: null, release_id: release.id, key, value }))).execute();
      return release;
    });
    return {
      release: await releaseJson(ctx, row, fleet.name),
      repositories: Object.fromEntries(services.map((s) => [s, `${ctx.options.registryHost}/${repositoryOf(fleet.uuid, s)}`])),
    };
  } catch (err) {
    if (isUniqueViolation(err)) throw conflict(`a release with commit ${commit} exists`);
    throw err;
  }
}

/**
 * Ends, finalizes, invalidates or annotates a release. `status: 'success'` needs every service's
 * digest, and each must be in the registry (checked before the transaction that makes the release
 * visible). A release that ended cannot start again.
 */
export async function updateRelease(ctx: ServiceContext, caller: User, commit: string, request: UpdateReleaseRequest): Promise<Release> {
  const { release, fleetName, fleetId } = await releaseOf(ctx, caller, commit, 'write');
  const images = await ctx.db.selectFrom('release_images').selectAll().where('release_id', '=', release.id).execute();
  const checked = new Map<string, { digest: string; size: number }>();
  if (request.status !== undefined && release.status !== 'running') {
    throw conflict(`release ${release.commit} has ended (${release.status}); make a new release`);
  }
  if (request.images !== undefined && request.status !== 'success') throw badInput('images', 'images are given with status success');
  if (request.status === 'success') {
    for (const image of images) {
      const digest = request.images?.[image.service];
      if (digest === undefined) throw badInput(`images.${image.service}`, `no image digest for service '${image.service}'`);
      if (!ctx.registry) throw new SkiffError('serverUnreachable', 'this server runs without a registry: a release cannot be completed');
      const manifest = await ctx.registry.manifest(image.repository, digest);
      if (!manifest) throw badInput(`images.${image.service}`, `${image.repository}@${digest} is not in the registry: push it first`);
      checked.set(image.service, { digest: manifest.digest, size: manifest.size });
    }
    for (const name of Object.keys(request.images ?? {})) {
      if (!images.some((i) => i.service === name)) throw badInput(`images.${name}`, `the release has no service '${name}'`);
    }
  }
  if (request.isFinal && (request.status ?? release.status) === 'failed') throw badInput('isFinal', 'a failed release cannot be final');
  const row = await ctx.db.transaction().execute(async (tx) => {
    // Re-read under the transaction: two completions racing must not both apply.
    const current = await tx.selectFrom('releases').selectAll().where('id', '=', release.id).executeTakeFirstOrThrow();
    if (request.status !== undefined && current.status !== 'running') throw conflict(`release ${release.commit} has ended (${current.status})`);
    for (const [service, m] of checked) {
      await tx.updateTable('release_images').set({ digest: m.digest, size: m.size }).where('release_id', '=', release.id).where('service', '=', service).execute();
    }
    const changes: { status?: 'success' | 'failed'; is_final?: number; is_invalidated?: number; semver?: string; notes?: string } = {};
    if (request.status !== undefined) changes.status = request.status;
    if (request.isFinal) changes.is_final = 1;
    if (request.isInvalidated !== undefined) changes.is_invalidated = request.isInvalidated ? 1 : 0;
    if (request.semver !== undefined) changes.semver = request.semver;
    if (request.notes !== undefined) changes.notes = request.notes;
    if (Object.keys(changes).length > 0) await tx.updateTable('releases').set(changes).where('id', '=', release.id).execute();
    // Status, finality and validity decide what devices track: new ETags for the whole fleet.
    const retarget = changes.status !== undefined || changes.is_final !== undefined || changes.is_invalidated !== undefined;
    if (retarget) await touchFleet(tx, fleetId);
    return { row: await tx.selectFrom('releases').selectAll().where('id', '=', release.id).executeTakeFirstOrThrow(), retarget };
  });
  if (row.retarget) await ctx.events.publish({ topic: 'target', fleetId });
  if (request.status === 'success') {
    // The release is visible whatever happens here: a delta not queued now is queued when a device asks.
    await queueReleaseDeltas(ctx, fleetId, release.id).catch((err: Error) => ctx.log(`[delta] cannot queue the deltas of release ${release.commit}: ${err.message}`));
  }
  return releaseJson(ctx, row.row, fleetName);
}
