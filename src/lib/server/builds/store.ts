/**
 * The builds' tables (builds, build_events): every query the build routes and the runner make.
 * A build's events are dense per build (seq 1, 2, …): each append reads the last seq and inserts
 * after it in one transaction that first writes the build's row, so two writers of one build (the
 * runner, a cancel on another replica) take turns instead of racing for the same seq.
 */
import type { Kysely, Transaction } from 'kysely';
import type { Build, BuildEventEnvelope, RemoteBuildEvent } from '../../api/builds.js';
import type { BuildRow, Database } from '../db/schema.js';
import type { Principal } from '../permissions.js';
import { authorize, badInput, isoNow, notFound, parseJson, type ServiceContext } from '../services/context.js';
import { fleetOf } from '../services/fleets.js';

const NO_OPTIONS: BuildOptions = { draft: false, nocache: false, pull: false, multiDockerignore: false, builder: 'auto', notes: null, semver: null, tags: {} };

type User = Extract<Principal, { kind: 'user' }>;
type Db = Kysely<Database> | Transaction<Database>;
export type BuildOptions = Build['options'];

/** What {@link buildJson} needs besides the row: names the API shows instead of ids. */
interface BuildNames { fleetName: string; email: string; releaseCommit: string | null }

function selectBuilds(db: Db) {
  return db.selectFrom('builds')
    .innerJoin('fleets', 'fleets.id', 'builds.fleet_id')
    .innerJoin('users', 'users.id', 'builds.user_id')
    .leftJoin('releases', 'releases.id', 'builds.release_id')
    .selectAll('builds')
    .select(['fleets.name as fleetName', 'fleets.owner_id as ownerId', 'users.email as email', 'releases.commit as releaseCommit']);
}

/** The API's view of a build row. */
export function buildJson(row: BuildRow & BuildNames): Build {
  return {
    id: row.uuid,
    fleet: row.fleetName,
    status: row.status,
    source: row.source,
    gitCommit: row.git_commit,
    gitRef: row.git_ref,
    dirty: row.dirty === 1,
    createdBy: row.email,
    // PostgreSQL's bigint arrives as a string.
    contextBytes: Number(row.context_bytes),
    // Spread over the defaults: a row written before an option existed still answers every field.
    options: { ...NO_OPTIONS, ...parseJson<Partial<BuildOptions>>(row.options, {}) },
    release: row.status === 'success' ? row.releaseCommit ?? null : null,
    error: row.error,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}

function withoutNames(row: BuildRow & BuildNames & { ownerId: number }): BuildRow {
  const { fleetName: _f, email: _e, releaseCommit: _r, ownerId: _o, ...build } = row;
  return build;
}

/**
 * The caller's build by id or a unique prefix of 7+ hex digits; another user's build is not found.
 *
 * @throws SkiffError notFound (404), or usage (400) for a prefix matching several builds
 */
export async function buildOf(ctx: ServiceContext, caller: User, id: string, action: 'read' | 'write' = 'read'): Promise<{ row: BuildRow; build: Build }> {
  if (!/^[0-9a-f]{7,32}$/.test(id)) throw notFound(`build ${id}`);
  const rows = await selectBuilds(ctx.db).where('fleets.owner_id', '=', caller.userId).where('builds.uuid', 'like', `${id}%`).limit(2).execute();
  const row = rows.find((r) => r.uuid === id) ?? (rows.length === 1 ? rows[0] : undefined);
  if (!row) throw rows.length > 1 ? badInput('id', `'${id}' matches more than one build: give more of the id`) : notFound(`build ${id}`);
  authorize(caller, action, { kind: 'fleet', ownerId: row.ownerId, fleetId: row.fleet_id }, `build ${id}`);
  return { row: withoutNames(row), build: buildJson(row) };
}

/** A build by row id, as the API shows it (the runner's and the routes' re-reads). */
export async function buildById(ctx: ServiceContext, id: number): Promise<{ row: BuildRow; build: Build } | undefined> {
  const row = await selectBuilds(ctx.db).where('builds.id', '=', id).executeTakeFirst();
  return row ? { row: withoutNames(row), build: buildJson(row) } : undefined;
}

/** A fleet's builds, newest first (the newest 200). */
export async function listBuilds(ctx: ServiceContext, caller: User, fleetName: string): Promise<Build[]> {
  const fleet = await fleetOf(ctx, caller, fleetName);
  const rows = await selectBuilds(ctx.db).where('builds.fleet_id', '=', fleet.id).orderBy('builds.id', 'desc').limit(200).execute();
  return rows.map(buildJson);
}

/**
 * Appends events after the build's last seq, in one transaction (with `alsoDo`'s writes); answers
 * the last seq written (undefined when `onlyWhile` is given and the build's status is not one of
 * them: nothing written).
 */
export async function appendEvents(
  ctx: ServiceContext, buildId: number, events: readonly RemoteBuildEvent[], onlyWhile?: ReadonlyArray<BuildRow['status']>,
  alsoDo?: (tx: Transaction<Database>) => Promise<void>,
): Promise<number | undefined> {
  if (events.length === 0) return undefined;
  return ctx.db.transaction().execute(async (tx) => {
    // A write to the build's row first: PostgreSQL then holds its lock until commit, so appenders take turns.
    let lock = tx.updateTable('builds').set((eb) => ({ cancel_requested: eb.ref('cancel_requested') })).where('id', '=', buildId);
    if (onlyWhile) lock = lock.where('status', 'in', [...onlyWhile]);
    const locked = await lock.executeTakeFirst();
    if (Number(locked.numUpdatedRows) === 0) return undefined;
    const last = await tx.selectFrom('build_events').select((eb) => eb.fn.max('seq').as('seq')).where('build_id', '=', buildId).executeTakeFirst();
    let seq = Number(last?.seq ?? 0);
    const now = isoNow(ctx);
    const rows = events.map((event) => ({ build_id: buildId, seq: ++seq, event: JSON.stringify(event), created_at: now }));
    // 4 parameters a row: PostgreSQL takes at most 65,535 in one statement.
    for (let i = 0; i < rows.length; i += 1000) await tx.insertInto('build_events').values(rows.slice(i, i + 1000)).execute();
    await alsoDo?.(tx);
    return seq;
  });
}

/** A build's events with seq > `after`, in order, at most `limit`. */
export async function eventsAfter(ctx: ServiceContext, buildId: number, after: number, limit = 500): Promise<BuildEventEnvelope[]> {
  const rows = await ctx.db.selectFrom('build_events').select(['seq', 'event', 'created_at'])
    .where('build_id', '=', buildId).where('seq', '>', after).orderBy('seq').limit(limit).execute();
  return rows.map((r) => ({ seq: Number(r.seq), time: r.created_at, event: JSON.parse(r.event) as RemoteBuildEvent }));
}
