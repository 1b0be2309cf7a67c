/**
 * Delta jobs (issue 12): the `deltas` table is the queue and the record. A pair (source image →
 * target image) is queued when a release succeeds (for each service whose image changed since the
 * fleet's previous final successful release, the one its devices ran) or when a device asks for one that is missing. Each
 * replica's {@link DeltaWorker} claims queued rows with one conditional UPDATE, makes them
 * (deltas/generate.ts) and marks them done, none or failed. Rows a dead replica left `running` go
 * back to `queued` (at start, and when a device asks); a `done` row whose files this replica lacks
 * (evicted, or made by a replica that is gone) is queued for this replica alone (`replica` set on
 * a queued row) and made again here.
 *
 * Several replicas (PostgreSQL): a done row records its maker's `--replica-url`. While the maker is
 * live, a replica without the files answers the delta ready all the same and relays the layer
 * downloads to the maker (routes/deltas.ts, header `x-skiff-relayed`, never relayed twice); when
 * the maker is gone, or the relay fails before a byte, the delta is made again here and the device
 * is told to retry (503 + Retry-After on a download).
 *
 * Downloads are counted in the server's log, one line per response to a device when it ends:
 * `[download] device <device uuid> delta <bytes sent> <path>` (see routes/deltas.ts; the registry
 * proxy logs `blob` lines the same way), which e2e tests and the bench sum up.
 */
import { randomBytes } from 'node:crypto';
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'kysely';
import type { DeltaAnswer, DeltaDescriptor, DeltaPending, DeltaQuery, ReleaseServiceDelta } from '../../api/deltas.js';
import type { DeltaRow, ReleaseRow } from '../db/schema.js';
import { isUniqueViolation } from '../db/database.js';
import type { Principal } from '../permissions.js';
import { planEviction, DEFAULT_DELTA_CACHE_BYTES, type CachedDelta } from '../deltas/cache.js';
import { cleanDeltaTemp, deltaFile, deltaFolder, deltasDir, folderBytes, generateDelta, type ImageName } from '../deltas/generate.js';
import { badInput, isoNow, notFound, type DeltaRuntime, type ServiceContext } from './context.js';
import { liveReplicas } from './tunnel-sessions.js';

type Device = Extract<Principal, { kind: 'device' }>;

/** How many deltas one replica makes at once (each runs xdelta3 on a core). */
export const DELTA_CONCURRENCY = 2;
/** A failed delta is made again when asked after this long (ms), up to {@link MAX_ATTEMPTS} attempts in all. */
const RETRY_FAILED_MS = 60_000;
const MAX_ATTEMPTS = 3;
/** Queued rows are looked for this often besides wake-ups (another replica queued them). */
const SWEEP_MS = 60_000;

/** `<host>/<repository>@sha256:…` split; the host is not checked (devices may reach the server by another name). */
export function parseImageRef(ref: string): ImageName {
  const at = ref.lastIndexOf('@');
  const slash = ref.indexOf('/');
  return { ref, repository: slash < 0 || slash > at ? '' : ref.slice(slash + 1, at), digest: ref.slice(at + 1) };
}

/** Seconds a device waits before asking again: short while a job is young, longer as it runs. */
export function retryAfterSeconds(row: Pick<DeltaRow, 'status' | 'updated_at'>, now: Date): number {
  if (row.status !== 'running') return 2;
  const seconds = (now.getTime() - Date.parse(row.updated_at)) / 1000;
  return seconds < 10 ? 2 : seconds < 60 ? 3 : 5;
}

/** The delta's layer indexes that have files. */
function fileIndexes(descriptor: DeltaDescriptor): number[] {
  return descriptor.layers.flatMap((l, i) => (l.source === 'delta' ? [i] : []));
}

function parseDescriptor(row: DeltaRow): DeltaDescriptor | undefined {
  if (row.descriptor === null) return undefined;
  try {
    return JSON.parse(row.descriptor) as DeltaDescriptor;
  } catch {
    return undefined;
  }
}

/** 404 unless `image` is an image of one of the fleet's releases. */
async function fleetImage(ctx: ServiceContext, fleetId: number, ref: string, field: 'src' | 'dest'): Promise<ImageName> {
  const image = parseImageRef(ref);
  const row = image.repository === '' ? undefined : await ctx.db.selectFrom('release_images').innerJoin('releases', 'releases.id', 'release_images.release_id')
    .select('release_images.id').where('releases.fleet_id', '=', fleetId)
    .where('release_images.repository', '=', image.repository).where('release_images.digest', '=', image.digest).limit(1).executeTakeFirst();
  if (!row) throw notFound(`${field} image ${ref}`);
  return image;
}

async function findPair(ctx: ServiceContext, src: ImageName, dest: ImageName): Promise<DeltaRow | undefined> {
  return ctx.db.selectFrom('deltas').selectAll()
    .where('src_repository', '=', src.repository).where('src_digest', '=', src.digest)
    .where('dest_repository', '=', dest.repository).where('dest_digest', '=', dest.digest).executeTakeFirst();
}

/** Queues the pair unless a row exists (any status); answers the row. */
async function queuePair(ctx: ServiceContext, fleetId: number, src: ImageName, dest: ImageName): Promise<DeltaRow> {
  const now = isoNow(ctx);
  try {
    await ctx.db.insertInto('deltas').values({
      uuid: randomBytes(16).toString('hex'), fleet_id: fleetId, src_repository: src.repository, src_digest: src.digest,
      dest_repository: dest.repository, dest_digest: dest.digest, status: 'queued', replica: null, replica_url: null, descriptor: null,
      download_bytes: null, pull_bytes: null, reason: null, attempts: 0, created_at: now, updated_at: now, used_at: null,
    }).execute();
    ctx.deltas?.wake();
  } catch (err) {
    // Two requests (or a request and a release) queued it at once: the other row stands.
    if (!isUniqueViolation(err)) throw err;
  }
  const row = await findPair(ctx, src, dest);
  if (!row) throw new Error('the delta row vanished after insert');
  return row;
}

/**
 * Puts a row back in the queue (its maker died, it failed, or its files are missing here). `here`:
 * only this replica may claim it (the files are wanted on this replica: another one making them
 * again would not help the device asking here).
 */
async function requeue(ctx: ServiceContext, row: DeltaRow, from: DeltaRow['status'], here = false): Promise<void> {
  await ctx.db.updateTable('deltas').set({ status: 'queued', replica: here ? ctx.options.replicaId : null, updated_at: isoNow(ctx) }).where('id', '=', row.id).where('status', '=', from).execute();
  ctx.deltas?.wake();
}

/** True when the replica running (or kept to make) `row` is gone (SQLite: any other replica; PostgreSQL: no event listener of it). */
async function makerIsGone(ctx: ServiceContext, row: DeltaRow): Promise<boolean> {
  if (row.replica === ctx.options.replicaId) return false;
  if (row.replica === null || ctx.dialect === 'sqlite') return true;
  return !(await liveReplicas(ctx)).includes(row.replica);
}

/**
 * True when another replica made `row` and serves its files: it is live (PostgreSQL: its event
 * listener is connected) and has a URL that is not ours.
 */
async function makerServes(ctx: ServiceContext, row: DeltaRow): Promise<boolean> {
  if (ctx.dialect !== 'postgres' || row.replica === null || row.replica === ctx.options.replicaId) return false;
  if (row.replica_url === null || row.replica_url === ctx.options.replicaUrl) return false;
  return (await liveReplicas(ctx)).includes(row.replica);
}

/**
 * `GET /api/v3/delta`: the answer for the device's pair, queuing it when missing (or when this
 * replica lacks a done delta's files). 404 for an image that is not one of the device's fleet's
 * release images; 400 when src and dest are the same image.
 */
export async function askDelta(ctx: ServiceContext, device: Device, query: DeltaQuery): Promise<{ pending: DeltaPending } | { answer: DeltaAnswer }> {
  if (query.src === query.dest || parseImageRef(query.src).digest === parseImageRef(query.dest).digest) throw badInput('dest', 'dest is the same image as src: there is nothing to download');
  const src = await fleetImage(ctx, device.fleetId, query.src, 'src');
  const dest = await fleetImage(ctx, device.fleetId, query.dest, 'dest');
  let row = await findPair(ctx, src, dest) ?? await queuePair(ctx, device.fleetId, src, dest);
  if ((row.status === 'running' || (row.status === 'queued' && row.replica !== null)) && await makerIsGone(ctx, row)) {
    await requeue(ctx, row, row.status);
    row = await findPair(ctx, src, dest) ?? row;
  }
  if (row.status === 'done') {
    const descriptor = parseDescriptor(row);
    // Files here, or on the live replica that made them (its downloads are relayed there).
    if (descriptor && (await folderBytes(ctx.options.dataDir, row.uuid, fileIndexes(descriptor)) !== undefined || await makerServes(ctx, row))) {
      await ctx.db.updateTable('deltas').set({ used_at: isoNow(ctx) }).where('id', '=', row.id).execute();
      // The asked names, not the stored ones: the device matches the answer to its question.
      return { answer: { status: 'ready', delta: { ...descriptor, src: query.src, dest: query.dest } } };
    }
    await requeue(ctx, row, 'done', true);
    return { pending: { status: 'pending', retryAfter: 2 } };
  }
  if (row.status === 'none') return { answer: { status: 'none', reason: row.reason ?? 'no delta helps' } };
  if (row.status === 'failed' && row.attempts < MAX_ATTEMPTS && ctx.clock().getTime() - Date.parse(row.updated_at) > RETRY_FAILED_MS) {
    // A fault may have passed (the registry restarting): tried again, a few times at most.
    await requeue(ctx, row, 'failed');
    return { pending: { status: 'pending', retryAfter: 2 } };
  }
  if (row.status === 'failed') return { answer: { status: 'none', reason: `making the delta failed: ${row.reason ?? 'unknown error'}` } };
  return { pending: { status: 'pending', retryAfter: retryAfterSeconds(row, ctx.clock()) } };
}

/**
 * Where a delta layer's download comes from: a file here (`bytes` long), the replica that made
 * it (relay the request to `replicaUrl`), or nowhere yet (`retry`: it is being made again;
 * answer 503 with `retryAfter` seconds).
 */
export type DeltaLayerSource =
  | { kind: 'file'; file: string; bytes: number }
  | { kind: 'maker'; replicaUrl: string }
  | { kind: 'retry'; retryAfter: number };

/**
 * Where the device gets layer `index` of delta `id`. 404 for an unknown id, another fleet's delta
 * or a layer without a file; and, for a request another replica relayed here (`relayed`), for
 * files this replica does not have (never relayed twice). Otherwise files missing here come from
 * their live maker, or the delta is queued to be made here (`retry`).
 */
export async function deltaLayerFile(ctx: ServiceContext, device: Device, id: string, index: number, relayed = false): Promise<DeltaLayerSource> {
  const row = await ctx.db.selectFrom('deltas').selectAll().where('uuid', '=', id).executeTakeFirst();
  // A delta being made again (it has a descriptor from when it was done) is worth waiting for.
  const remaking = (row?.status === 'queued' || row?.status === 'running') && row.descriptor !== null;
  if (!row || row.fleet_id !== device.fleetId || (row.status !== 'done' && !remaking)) throw notFound(`delta ${id}`);
  const layer = parseDescriptor(row)?.layers[index];
  if (layer?.source !== 'delta') throw notFound(`layer ${index} of delta ${id}`);
  const bytes = await folderBytes(ctx.options.dataDir, id, [index]);
  if (bytes !== undefined) return { kind: 'file', file: deltaFile(ctx.options.dataDir, id, index), bytes };
  if (relayed) throw notFound(`layer ${index} of delta ${id} on this server`);
  if (remaking) return { kind: 'retry', retryAfter: retryAfterSeconds(row, ctx.clock()) };
  if (row.replica_url !== null && await makerServes(ctx, row)) return { kind: 'maker', replicaUrl: row.replica_url };
  return { kind: 'retry', retryAfter: await remakeHere(ctx, id) };
}

/**
 * Queues done delta `id` to be made again on this replica (its files are not here and its maker
 * does not serve them: gone, or a relay to it failed); answers the seconds the device should wait.
 */
export async function remakeHere(ctx: ServiceContext, id: string): Promise<number> {
  const row = await ctx.db.selectFrom('deltas').selectAll().where('uuid', '=', id).executeTakeFirst();
  if (row?.status === 'done') await requeue(ctx, row, 'done', true);
  return 2;
}

/**
 * The fleet's last release before `releaseId` that its devices tracked (successful, final, not
 * invalidated: what fleets.latestRelease picks), with its images by service. A draft is skipped:
 * no device runs it, so a delta from it would be made for nobody.
 */
async function previousRelease(ctx: ServiceContext, fleetId: number, releaseId: number): Promise<{ commit: string; images: Map<string, ImageName> } | undefined> {
  const prev = await ctx.db.selectFrom('releases').select(['id', 'commit']).where('fleet_id', '=', fleetId).where('status', '=', 'success')
    .where('is_final', '=', 1).where('is_invalidated', '=', 0).where('id', '<', releaseId).orderBy('id', 'desc').limit(1).executeTakeFirst();
  if (!prev) return undefined;
  const rows = await ctx.db.selectFrom('release_images').select(['service', 'repository', 'digest']).where('release_id', '=', prev.id).execute();
  const images = new Map<string, ImageName>();
  for (const r of rows) if (r.digest !== null) images.set(r.service, { ref: `${ctx.options.registryHost}/${r.repository}@${r.digest}`, repository: r.repository, digest: r.digest });
  return { commit: prev.commit, images };
}

/** The pairs (previous release's image → this release's) of services whose image changed. */
async function releasePairs(ctx: ServiceContext, fleetId: number, releaseId: number): Promise<{ from: string; pairs: Map<string, { src: ImageName; dest: ImageName }> } | undefined> {
  const prev = await previousRelease(ctx, fleetId, releaseId);
  if (!prev) return undefined;
  const rows = await ctx.db.selectFrom('release_images').select(['service', 'repository', 'digest']).where('release_id', '=', releaseId).execute();
  const pairs = new Map<string, { src: ImageName; dest: ImageName }>();
  for (const r of rows) {
    const src = prev.images.get(r.service);
    if (!src || r.digest === null || src.digest === r.digest) continue;
    pairs.set(r.service, { src, dest: { ref: `${ctx.options.registryHost}/${r.repository}@${r.digest}`, repository: r.repository, digest: r.digest } });
  }
  return { from: prev.commit, pairs };
}

/** Queues the deltas from the fleet's previous successful release to release `releaseId` (after it became `success`). */
export async function queueReleaseDeltas(ctx: ServiceContext, fleetId: number, releaseId: number): Promise<void> {
  const found = await releasePairs(ctx, fleetId, releaseId);
  for (const { src, dest } of found?.pairs.values() ?? []) await queuePair(ctx, fleetId, src, dest);
}

/** Per service of a release: its delta from the fleet's previous successful release (null: none to make, or not queued). */
export async function releaseDeltas(ctx: ServiceContext, release: ReleaseRow): Promise<Map<string, ReleaseServiceDelta>> {
  const out = new Map<string, ReleaseServiceDelta>();
  if (release.status !== 'success') return out;
  const found = await releasePairs(ctx, release.fleet_id, release.id);
  for (const [service, { src, dest }] of found?.pairs ?? []) {
    const row = await findPair(ctx, src, dest);
    if (!row) continue;
    const done = row.status === 'done';
    out.set(service, {
      from: found?.from ?? '', status: row.status,
      downloadBytes: done ? Number(row.download_bytes) : null, pullBytes: done ? Number(row.pull_bytes) : null,
      reason: row.status === 'none' || row.status === 'failed' ? row.reason : null,
    });
  }
  return out;
}

/**
 * Rows a dead replica left `running` go back to `queued`: on SQLite all of them (one replica, and
 * this one just started); on PostgreSQL those of replicas without a live event listener.
 */
export async function requeueAbandoned(ctx: ServiceContext): Promise<number> {
  // Running rows, and queued ones kept for a replica (see requeue), of replicas that are gone.
  let q = ctx.db.updateTable('deltas').set({ status: 'queued', replica: null, updated_at: isoNow(ctx) }).where('status', 'in', ['running', 'queued']).where('replica', 'is not', null);
  if (ctx.dialect === 'postgres') {
    const live = await liveReplicas(ctx);
    q = q.where('replica', 'not in', [...live, ctx.options.replicaId]);
  } else {
    q = q.where('replica', '!=', ctx.options.replicaId);
  }
  return Number((await q.executeTakeFirst()).numUpdatedRows);
}

/** Claims the oldest queued row for this replica (one conditional UPDATE: two replicas never get the same one). */
async function claim(ctx: ServiceContext): Promise<DeltaRow | undefined> {
  const oldest = ctx.db.selectFrom('deltas').select('id').where('status', '=', 'queued')
    .where((eb) => eb.or([eb('replica', 'is', null), eb('replica', '=', ctx.options.replicaId)])).orderBy('id').limit(1);
  return ctx.db.updateTable('deltas').set({ status: 'running', replica: ctx.options.replicaId, attempts: sql<number>`attempts + 1`, updated_at: isoNow(ctx) })
    .where('id', 'in', oldest).where('status', '=', 'queued').returningAll().executeTakeFirst();
}

/** Bytes of the files in a folder (one level: a delta's folder has no subfolders). */
async function dirBytes(folder: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(folder).catch(() => [] as string[])) total += (await stat(path.join(folder, name)).catch(() => ({ size: 0 }))).size;
  return total;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;
}

/** Makes queued deltas on this replica, {@link DELTA_CONCURRENCY} at a time, and keeps its files under the cache bound. */
export class DeltaWorker implements DeltaRuntime {
  readonly downloads = new Map<string, number>();
  private readonly running = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private pumping = false;
  private again = false;
  private stopped = false;
  private sweep: NodeJS.Timeout | undefined;

  constructor(private readonly ctx: ServiceContext, private readonly concurrency = DELTA_CONCURRENCY) {}

  /** Removes what a killed run left, gives failed deltas their attempts back, requeues abandoned rows, and starts claiming. */
  async start(): Promise<void> {
    await cleanDeltaTemp(this.ctx.options.dataDir);
    // A restart is when an admin has fixed what failed them (xdelta3 installed, as the reason
    // said): failed deltas get their attempts back, else those that used all of theirs never
    // retry. Each is made again when a device next asks (askDelta), not all now.
    await this.ctx.db.updateTable('deltas').set({ attempts: 0 }).where('status', '=', 'failed').where('attempts', '>', 0).execute();
    const requeued = await requeueAbandoned(this.ctx);
    if (requeued > 0) this.ctx.log(`[delta] ${requeued} delta job(s) of a stopped server queued again`);
    this.sweep = setInterval(() => {
      void requeueAbandoned(this.ctx).then(() => this.wake(), (err: Error) => this.ctx.log(`[delta] sweep: ${err.message}`));
    }, SWEEP_MS);
    this.sweep.unref();
    this.wake();
  }

  wake(): void {
    if (!this.stopped) void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.again = false;
        while (!this.stopped && this.running.size < this.concurrency) {
          const row = await claim(this.ctx);
          if (!row) break;
          const job: Promise<void> = this.run(row).finally(() => {
            this.running.delete(job);
            this.wake();
          });
          this.running.add(job);
        }
      } while (this.again && !this.stopped);
    } catch (err) {
      this.ctx.log(`[delta] cannot claim a job: ${(err as Error).message}`);
    } finally {
      this.pumping = false;
    }
  }

  private async run(row: DeltaRow): Promise<void> {
    const { ctx } = this;
    const src = { ref: `${ctx.options.registryHost}/${row.src_repository}@${row.src_digest}`, repository: row.src_repository, digest: row.src_digest };
    const dest = { ref: `${ctx.options.registryHost}/${row.dest_repository}@${row.dest_digest}`, repository: row.dest_repository, digest: row.dest_digest };
    const mine = ctx.db.updateTable('deltas').where('id', '=', row.id).where('status', '=', 'running').where('replica', '=', ctx.options.replicaId);
    try {
      if (!ctx.registry) throw new Error('this server runs without a registry');
      ctx.log(`[delta] making ${row.uuid}: ${row.src_repository}@${row.src_digest.slice(7, 19)} → ${row.dest_repository}@${row.dest_digest.slice(7, 19)}`);
      const { outcome, ms } = await generateDelta({ id: row.uuid, src, dest, dataDir: ctx.options.dataDir, registry: ctx.registry, signal: this.abort.signal });
      if (outcome.kind === 'ready') {
        const d = outcome.descriptor;
        // The URL other replicas relay downloads to; a single server (SQLite) relays nothing.
        const replicaUrl = ctx.dialect === 'postgres' ? ctx.options.replicaUrl ?? null : null;
        await mine.set({ status: 'done', replica_url: replicaUrl, descriptor: JSON.stringify(d), download_bytes: d.downloadBytes, pull_bytes: d.pullBytes, reason: null, updated_at: isoNow(ctx) }).execute();
        ctx.log(`[delta] ${row.uuid} ready in ${(ms / 1000).toFixed(1)} s: ${megabytes(d.downloadBytes)} vs ${megabytes(d.pullBytes)} pull (${d.layers.map((l) => l.source).join(', ')})`);
        await this.evict(row.uuid);
      } else {
        await mine.set({ status: 'none', descriptor: null, reason: outcome.reason, updated_at: isoNow(ctx) }).execute();
        ctx.log(`[delta] ${row.uuid}: none (${outcome.reason}) after ${(ms / 1000).toFixed(1)} s`);
      }
    } catch (err) {
      if (this.stopped) {
        // Stopping, not failing: the next start (or another replica) makes it.
        await mine.set({ status: 'queued', replica: null, updated_at: isoNow(ctx) }).execute().catch(() => undefined);
        return;
      }
      // One line: it is shown in release info's table and the device's report (xdelta3's stderr has several).
      const reason = (err as Error).message.replace(/\s+/g, ' ').trim().slice(0, 500);
      ctx.log(`[delta] ${row.uuid} failed: ${reason}`);
      await mine.set({ status: 'failed', reason, updated_at: isoNow(ctx) }).execute().catch((e: Error) => ctx.log(`[delta] ${row.uuid}: ${e.message}`));
    }
  }

  /** Removes the oldest-used delta folders until this replica's files fit the bound; `made` (just made) and those being downloaded stay. */
  async evict(made: string): Promise<void> {
    const { ctx } = this;
    const bound = ctx.options.deltaCacheBytes ?? DEFAULT_DELTA_CACHE_BYTES;
    const names = (await readdir(deltasDir(ctx.options.dataDir)).catch(() => [] as string[])).filter((n) => /^[0-9a-f]{32}$/.test(n));
    if (names.length === 0) return;
    // In chunks: SQLite refuses a statement with more than 32,766 parameters.
    const byId = new Map<string, { used_at: string | null; updated_at: string }>();
    for (let i = 0; i < names.length; i += 1000) {
      const rows = await ctx.db.selectFrom('deltas').select(['uuid', 'used_at', 'updated_at']).where('uuid', 'in', names.slice(i, i + 1000)).execute();
      for (const r of rows) byId.set(r.uuid, r);
    }
    const cached: CachedDelta[] = [];
    for (const id of names) {
      const row = byId.get(id);
      cached.push({ id, bytes: await dirBytes(deltaFolder(ctx.options.dataDir, id)), usedAt: row ? Date.parse(row.used_at ?? row.updated_at) : 0 });
    }
    const keep = new Set([made, ...[...this.downloads].filter(([, n]) => n > 0).map(([id]) => id)]);
    for (const id of planEviction(cached, bound, keep)) {
      await rm(deltaFolder(ctx.options.dataDir, id), { recursive: true, force: true });
      ctx.log(`[delta] evicted ${id} (cache bound ${megabytes(bound)})`);
    }
  }

  /** Stops claiming, aborts the deltas being made (their rows go back to `queued`) and waits for them. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.sweep) clearInterval(this.sweep);
    this.abort.abort(new Error('the server is stopping'));
    await Promise.allSettled([...this.running]);
  }
}
